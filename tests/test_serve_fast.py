"""The hot path of POST /api/predict (serve/fast.py) against the FastAPI route it stands in for: two
real servers, one with the fast path and one without, must give the same answer (status and JSON)
to every request, good or bad; the fast path must really answer the common ones; its multipart
reader must agree with python-multipart (Starlette's parser) or step aside."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from sketches import DIGITS, drawing
from tegaki.predict import Predictor
from tegaki.serve.app import create_app, serving
from tegaki.serve.fast import FastPredict, one_file, parse_query

B = "tegakiFastTest0123"


def form(parts: list[tuple[str, str | None, bytes]], boundary: str = B, end: bytes = b"--\r\n") -> bytes:
    """A multipart body: parts of (field name, file name or None, content)."""
    out = b""
    for name, filename, content in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        kind = "Content-Type: image/png\r\n" if filename is not None else ""
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n{kind}\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}".encode() + end


def fast_path(app) -> FastPredict:
    """The app's FastPredict instance (its middleware stack is built by the first request)."""
    node = app.middleware_stack
    while not isinstance(node, FastPredict):
        node = node.app
    return node


@pytest.fixture(scope="module")
def servers():
    """(fast URL, route-only URL, the fast app): the same predictor behind both."""
    p = Predictor.load(None)
    fast, slow = create_app(p), create_app(p)
    slow.user_middleware = [m for m in slow.user_middleware if m.cls is not FastPredict]
    with serving(fast) as fast_url, serving(slow) as slow_url:
        yield fast_url, slow_url, fast


PNG = drawing(DIGITS[4], size=140)
TWO = drawing(DIGITS[7], size=140)
BLANK = (lambda b: (Image.new("RGB", (60, 60), "white").save(b, "PNG"), b.getvalue())[1])(io.BytesIO())
PIXELS = json.dumps({"pixels": (np.asarray(Image.open(io.BytesIO(PNG)).convert("L").resize((28, 28))) < 128)
                     .astype(int).__mul__(255).tolist()}).encode()
MULTI = f"multipart/form-data; boundary={B}"

CASES = [  # (query, content type, body, served by the fast path?)
    ("", MULTI, form([("file", "d.png", PNG)]), True),
    ("?steps=true&features=2&seq=17", MULTI, form([("file", "d.png", TWO)]), True),
    ("?top=10&steps=0", "image/png", PNG, True),
    ("", "application/octet-stream", TWO, True),
    ("", "application/json", PIXELS, True),
    ("?top=2", f'multipart/form-data; boundary="{B}"', form([("upload", "x.png", PNG)], end=b"--"), True),
    # errors answered on the fast path (ApiError from the shared code)
    ("", MULTI, form([("file", "blank.png", BLANK)]), True),
    ("", "image/png", b"", True),
    ("", "image/png", b"not an image at all", True),
    ("", "application/json", b'{"pixels": [1, 2, 3]}', True),
    ("", "application/json", b'{"pixels": [[1, 2', True),
    # left to FastAPI: its validation and its parser answer
    ("?top=0", MULTI, form([("file", "d.png", PNG)]), False),
    ("?steps=maybe", MULTI, form([("file", "d.png", PNG)]), False),
    ("?features=99", "image/png", PNG, False),
    ("?top=3&top=4", "image/png", PNG, False),
    ("?st%65ps=true", "image/png", PNG, False),
    ("", MULTI, form([("file", "d.png", PNG), ("steps", None, b"true")]), False),
    ("", MULTI, form([("file", None, b"just a field")]), False),
    ("", MULTI, b"--" + B.encode() + b"\r\nbroken", False),
    ("", "multipart/form-data", form([("file", "d.png", PNG)]), False),
    ("", "text/plain", PNG, False),
    ("", "", PNG, False),
    # what a proxy in front might read otherwise, and bodies that would cost the loop: left to FastAPI
    ("", "application/json", b'{"pixels": [' + b"0, " * 700_000 + b'0]}', False),  # over the JSON cap
    ("", [("Content-Type", "text/plain"), ("Content-Type", MULTI)], form([("file", "d.png", PNG)]), False),
    ("", [("Content-Type", "image/png"), ("Content-Type", "image/png")], PNG, False),
    ("", f"multipart/form-data; boundary=other; boundary={B}", form([("file", "d.png", PNG)]), False),
    ("", f'multipart/form-data; a="; boundary={B};"; boundary=other', form([("file", "d.png", PNG)]), False),
    ("", f"multipart/form-data; boundary={B};", form([("file", "d.png", PNG)]), False),
    ("", MULTI, form([("file", "d.png", PNG)]).replace(b"Content-Type: image/png", b"X Y: z"), False),
    ("", MULTI, form([("file", "d.png", PNG)]).replace(b"Content-Type: image/png", b"a: b\r\n" * 2000), False),
]


@pytest.mark.parametrize("query, ctype, body, fast", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_the_fast_path_answers_as_the_route_does(servers, query, ctype, body, fast):
    fast_url, slow_url, app = servers
    headers = ctype if isinstance(ctype, list) else [("Content-Type", ctype)] if ctype else []
    before = fast_path(app).answered if app.middleware_stack else 0
    a = httpx.post(fast_url + "/api/predict" + query, content=body, headers=headers, timeout=30)
    b = httpx.post(slow_url + "/api/predict" + query, content=body, headers=headers, timeout=30)
    assert a.status_code == b.status_code and a.status_code < 500, (a.text, b.text)
    assert a.json() == b.json()
    assert a.headers["content-type"] == "application/json" and "x-process-time" in a.headers
    assert fast_path(app).answered - before == int(fast)


def test_too_large_and_a_client_gone_are_left_to_the_route(servers):
    fast_url, slow_url, app = servers
    big = b"\x89PNG" + bytes(9 * 1024 * 1024)
    for url in (fast_url, slow_url):
        r = httpx.post(url + "/api/predict", content=big, headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 413 and "KB" in r.json()["detail"]

    def chunks():  # no Content-Length: the body streams past the limit
        for _ in range(10):
            yield bytes(1024 * 1024)
    for url in (fast_url, slow_url):
        r = httpx.post(url + "/api/predict", content=chunks(), headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 413


def test_other_routes_and_methods_pass_through(servers):
    fast_url, _, app = servers
    assert httpx.get(fast_url + "/api/predict").status_code == 405
    assert httpx.get(fast_url + "/api/health").json()["status"] == "ok"
    r = httpx.post(fast_url + "/api/predict", content=PNG,
                   headers={"Content-Type": "image/png", "Origin": "http://evil.example"})
    assert r.status_code == 403  # the Host and Origin checks come first


@pytest.mark.parametrize("qs, expected", [
    (b"", {"steps": False, "top": 3, "features": 0}),
    (b"steps=true&features=2&seq=9", {"steps": True, "top": 3, "features": 2}),
    (b"top=100&steps=0", {"steps": False, "top": 100, "features": 0}),
    (b"top=003", {"steps": False, "top": 3, "features": 0}),
    (b"top=101", None), (b"top=-1", None), (b"features=9", None), (b"steps=TRUE", None), (b"steps", None),
    (b"top=1&top=2", None), (b"t%6Fp=5", None), (b"top=1e1", None), (b"top=" + b"9" * 50, None),
])
def test_the_query_is_read_or_left_to_fastapi(qs, expected):
    assert parse_query(qs) == expected


def parsed_by_starlette(body: bytes, ctype: str) -> bytes | None:
    """The first file python-multipart finds in body (what the route reads), or None on an error."""
    async def stream():
        yield body

    async def run():
        try:
            form_data = await MultiPartParser(Headers({"content-type": ctype}), stream(), max_files=1,
                                              max_fields=8).parse()
        except Exception:  # noqa: BLE001  the route answers 400 for it; the fast path must step aside
            return None
        files = [v for _, v in form_data.multi_items() if not isinstance(v, str)]
        return await files[0].read() if files else None
    return asyncio.run(run())


def test_the_multipart_reader_agrees_with_python_multipart():
    rng = np.random.default_rng(0)
    content = [PNG, b"", b"--" + B.encode() + b"x", b"\r\n--" + B.encode() + b"--\r\n" + b"tail",
               bytes(rng.integers(0, 256, 3000, dtype=np.uint8))]
    bodies = []
    for c in content:
        bodies += [form([("file", "d.png", c)]), form([("file", "d.png", c)], end=b"--"),
                   form([("f", "", c)]), form([("file", "d.png", c), ("steps", None, b"1")]),
                   form([("file", None, c)]), form([("file", "d.png", c)], end=b"")]
    bodies.append(form([("file", "d.png", PNG)]).replace(b"Content-Disposition", b"content-disposition"))
    bodies.append(form([("file", "d.png", PNG)]).replace(b'name="file"', b'name="file"; size="3"'))
    bodies.append(form([("file", "d.png", PNG)]).replace(b"form-data;", b"attachment;"))
    taken = 0
    for body in bodies:
        mine = one_file(body, B.encode())
        if mine is not None:
            taken += 1
            assert mine == parsed_by_starlette(body, MULTI), body[:120]
    # read here: one file with or without the final CRLF or a file name, the header in lower case, an
    # extra parameter (4 contents x 3 + 2); the content holding its own closing boundary is left alone
    assert taken == 14


def test_a_disposition_with_anything_between_its_parameters_is_left_to_the_route():
    body = form([("file", "d.png", PNG)])
    assert one_file(body, B.encode()) == PNG
    assert one_file(body.replace(b'"; filename', b'";filename'), B.encode()) == PNG  # no space needed
    for junk in (b'"file" x; filename', b'"file";; filename', b'"file"; filename=d.png; x', b'file; filename'):
        changed = body.replace(b'"file"; filename', junk, 1)
        assert changed != body
        assert one_file(changed, B.encode()) is None, junk
