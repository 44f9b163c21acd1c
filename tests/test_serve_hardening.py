"""The server under hostile or careless input: other sites and host names, class names that are
paths, decompression bombs in parallel, deep or huge JSON, clients that go away, and the work a
request costs (decodes, forward passes). Each test makes its own small reproducing input.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import start  # tests/servers.py
from sketches import DIGITS, drawing, huge_png  # tests/sketches.py

from tegaki.predict import Predictor, bundled_model_path
from tegaki.serve import requests as serve_requests
from tegaki.serve.app import SameOrigin, create_app, serving
from tegaki.serve.routes import folder_names


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if bundled_model_path() is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    return Predictor.load(None)


def png_file(digit: int = 7) -> dict:
    return {"file": ("d.png", drawing(DIGITS[digit]), "image/png")}


def one_line(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and 0 < len(detail) < 300, detail
    return detail


# other sites, other host names --------------------------------------------------------------------
def test_other_sites_and_host_names_are_refused(predictor, tmp_path):
    drawings = tmp_path / "drawings"
    with serving(create_app(predictor, drawings=drawings)) as url, httpx.Client(base_url=url) as c:
        port = int(url.rsplit(":", 1)[1])
        r = c.post("/api/save", params={"label": 7}, files=png_file(), headers={"Origin": "http://evil.example"})
        assert "another site" in one_line(r, 403)
        assert not drawings.exists() or not any(drawings.rglob("*"))  # nothing written
        assert "not this server's name" in one_line(c.get("/api/model", headers={"Host": "evil.example"}), 403)
        assert c.get("/api/health", headers={"Host": f"evil.example:{port}"}).status_code == 403
        assert c.get("/api/health", headers={"Origin": "null"}).status_code == 403
        assert c.get("/api/health", headers={"Origin": f"http://evil.example:{port}"}).status_code == 403
        # the server's own names, and its own page's origin, are fine
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        assert c.get("/api/health", headers={"Host": "localhost:1"}).status_code == 403  # another port
        r = c.post("/api/save", params={"label": 7}, files=png_file(), headers={"Origin": url})
        assert r.status_code == 200 and Path(r.json()["saved"]).is_file()


def test_allow_hosts_for_a_proxy(predictor):
    app = create_app(predictor, allow_hosts=["digits.example.org", "other.example:8443"])
    with serving(app) as url, httpx.Client(base_url=url) as c:
        ok = {"Host": "digits.example.org", "Origin": "https://digits.example.org"}
        assert c.post("/api/predict", files=png_file(), headers=ok).json()["label"] == 7
        assert c.get("/api/health", headers={"Host": "digits.example.org:8080"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "other.example:8443"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "other.example:8444"}).status_code == 403
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 403
    with serving(create_app(predictor, allow_hosts=["*"])) as url:
        assert httpx.get(url + "/api/health", headers={"Host": "anything.example"}).status_code == 200


def test_testclient_host_is_allowed_only_when_asked(predictor):
    import warnings

    with warnings.catch_warnings():  # starlette's note on its own use of httpx
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    with TestClient(create_app(predictor)) as c:  # it sends Host: testserver
        assert c.get("/api/health").status_code == 403
    with TestClient(create_app(predictor, allow_hosts=["testserver"])) as c:
        assert c.get("/api/health").json()["status"] == "ok"


def test_same_origin_rules_without_a_server():
    guard = SameOrigin(None, allow_hosts=("proxy.example",))
    server = ("127.0.0.1", 8000)
    scope = {"scheme": "http", "server": server}
    assert guard.refusal(scope, "127.0.0.1:8000", "http://localhost:8000") is None
    assert guard.refusal(scope, "127.0.0.1:8000", None) is None
    assert guard.refusal(scope, "proxy.example", "https://proxy.example") is None
    for host, origin in (("127.0.0.1:8001", None), ("evil.example:8000", None), ("", None),
                         ("127.0.0.1:8000", "http://evil.example"), ("127.0.0.1:8000", "file://"),
                         ("127.0.0.1:8000@evil.example", None), ("127.0.0.1:99999999", None)):
        assert guard.refusal(scope, host, origin) is not None, (host, origin)
    # bound to every address: any IP address of this machine on its port, still no names
    wide = {"scheme": "http", "server": ("0.0.0.0", 8000)}
    assert guard.refusal(wide, "192.168.1.20:8000", None) is None
    assert guard.refusal(wide, "rebind.evil.example:8000", None) is not None


def test_serve_command_allow_host_option():
    from tegaki.cli import build_parser
    from tegaki.commands.serve import allowed_hosts

    args = build_parser().parse_args(["serve", "--allow-host", "a.example", "--allow-host", "b.example:81"])
    assert allowed_hosts(args) == ["a.example", "b.example:81"]
    args = build_parser().parse_args(["serve", "--host", "myhost.lan", "--port", "8123"])
    assert allowed_hosts(args) == ["myhost.lan:8123"]  # the name it was told to listen on is its own
    assert allowed_hosts(build_parser().parse_args(["serve", "--host", "0.0.0.0"])) == []


# class names as folder names ------------------------------------------------------------------------
HOSTILE = ["../../x", "/tmp/abs", "..", "", ".", "a\x00b", "7", "7", "CON", "x" * 300]


def test_folder_names_are_safe_and_unique():
    names = folder_names(HOSTILE)
    assert names == ["class_00", "class_01", "class_02", "class_03", "class_04", "class_05", "7", "class_07",
                     "CON", "class_09"]
    assert folder_names([str(i) for i in range(10)]) == [str(i) for i in range(10)]  # MNIST's stay as they are
    assert folder_names(["class_01", "a/b", "A", "a"]) == ["class_01", "class_01_2", "A", "class_03"]
    for cls in (HOSTILE, ["class_01", "a/b", "A", "a"]):
        got = folder_names(cls)
        assert len({n.lower() for n in got}) == len(got)
        assert all(n and n not in (".", "..") and "/" not in n and "\x00" not in n and len(n) <= 64 for n in got)


def test_saving_with_hostile_class_names_stays_in_the_folder(predictor, tmp_path):
    run = replace(predictor.run, meta={**predictor.run.meta, "classes": HOSTILE})
    root = tmp_path / "drawings"
    outside_before = sorted(p for p in tmp_path.rglob("*") if root not in p.parents and p != root)
    with serving(create_app(run, drawings=root)) as url, httpx.Client(base_url=url) as c:
        for label in range(len(HOSTILE)):
            r = c.post("/api/save", params={"label": label}, files=png_file())
            assert r.status_code == 200, (label, r.text)
            assert r.json()["name"] == HOSTILE[label]
            saved = Path(r.json()["saved"]).resolve()
            assert saved.is_file() and saved.is_relative_to(root.resolve()), saved
    written = sorted(root.rglob("*.png"))
    assert len(written) == len(HOSTILE)
    assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))
    assert len({p.parent for p in written}) == len(HOSTILE)  # one folder per class
    assert sorted(p for p in tmp_path.rglob("*") if root not in p.parents and p != root) == outside_before
    assert not Path("/tmp/abs").exists() or not any(Path("/tmp/abs").glob("*.png"))


# deep and huge JSON ------------------------------------------------------------------------------------
def test_deep_or_huge_json_is_a_4xx(predictor):
    with serving(create_app(predictor)) as url, httpx.Client(base_url=url) as c:
        json_type = {"content-type": "application/json"}
        deep = b'{"pixels": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        assert "nested" in one_line(c.post("/api/predict", content=deep, headers=json_type), 400)
        deep_obj = b'{"pixels": [' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"]}"
        assert c.post("/api/predict", content=deep_obj, headers=json_type).status_code == 400
        not_too_deep = b'{"pixels": ' + b"[" * 50 + b"]" * 50 + b"}"
        assert "not a number" in one_line(c.post("/api/predict", content=not_too_deep, headers=json_type), 422)
        huge = b'{"pixels": [' + b"9" * 5000 + b"]}"
        assert "digits" in one_line(c.post("/api/predict", content=huge, headers=json_type), 400)
        big = b'{"pixels": [' + b"9" * 4000 + b"]}"  # parses, then is far out of range
        one_line(c.post("/api/predict", content=big, headers=json_type), 422)
        r = c.post("/api/predict", params={"top": "9" * 5000}, files=png_file())
        one_line(r, 422)


# the work one request costs -------------------------------------------------------------------------
class Counting:
    """An engine wrapper that counts forward passes (logits and activations calls)."""

    def __init__(self, engine):
        self.engine, self.passes = engine, 0

    def logits(self, x, *a, **kw):
        self.passes += 1
        return self.engine.logits(x, *a, **kw)

    def activations(self, x, *a, **kw):
        self.passes += 1
        return self.engine.activations(x, *a, **kw)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_features_come_from_the_same_single_forward_pass(monkeypatch):
    p = Predictor.load(None)
    ref = Predictor.load(None)
    counting = Counting(p.engine)
    p.engine = counting
    decodes = []
    real = serve_requests.load_image
    monkeypatch.setattr(serve_requests, "load_image", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    data = drawing(DIGITS[0])
    with serving(create_app(p, drawings=None)) as url, httpx.Client(base_url=url) as c:
        counting.passes = 0
        body = c.post("/api/predict", params={"features": 2, "steps": "true"},
                      files={"file": ("d.png", data, "image/png")}).json()
        assert counting.passes == 1 and len(decodes) == 1
        plain = c.post("/api/predict", files={"file": ("d.png", data, "image/png")}).json()
        assert counting.passes == 2 and "features" not in plain
        maps = c.post("/api/features", files={"file": ("d.png", data, "image/png")}).json()
        assert counting.passes == 3  # one forward pass for /api/features too
    assert body["label"] == plain["label"] == 0
    assert np.allclose(body["probabilities"], plain["probabilities"], atol=1e-6)
    assert np.allclose(body["probabilities"], ref.predict_image(data).probabilities, atol=1e-6)
    assert body["features"]["layers"] == maps["layers"] and len(maps["layers"]) == 2
    assert [s["name"] for s in body["steps"]][-1] == "centred"


def test_saving_decodes_the_upload_once(predictor, tmp_path, monkeypatch):
    decodes = []
    real = serve_requests.load_image
    monkeypatch.setattr(serve_requests, "load_image", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    with serving(create_app(predictor, drawings=tmp_path)) as url:
        r = httpx.post(url + "/api/save", params={"label": 4}, files=png_file(4))
    assert r.status_code == 200 and len(decodes) == 1
    from PIL import Image

    saved = np.asarray(Image.open(r.json()["saved"]))
    grey = real(drawing(DIGITS[4]))  # what was decoded, as it was written
    assert saved.shape == grey.shape and np.abs(saved.astype(int) - np.round(grey * 255)).max() <= 1


# a real server in its own process: memory and clients that go away -------------------------------------
@pytest.fixture(scope="module")
def process_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc, url = start(["--no-save"], log)
    try:
        yield url, proc, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_many_bombs_at_once_keep_memory_bounded(process_server):
    """64 small 1-bit 5000x5000 PNGs (25 M pixels each) and 16 at 4000x4000 (16 M, under the limit,
    so they are decoded) at the same time: peak RSS stays under 1 GB, every answer is a 4xx."""
    url, proc, _ = process_server
    before = vm_kb(proc.pid, "VmHWM")
    bomb, under = huge_png(5000, 5000), huge_png(4000, 4000)
    assert len(bomb) < 10_000

    async def flood():
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
            jobs = [c.post("/api/predict", files={"file": ("b.png", data, "image/png")})
                    for data in [bomb] * 64 + [under] * 16]
            return await asyncio.gather(*jobs)

    answers = asyncio.run(flood())
    peak = vm_kb(proc.pid, "VmHWM")
    print(f"server peak RSS: {before / 1024:.0f} MB before, {peak / 1024:.0f} MB after 80 requests at once")
    statuses = [r.status_code for r in answers]
    assert all(s == 200 or 400 <= s < 500 for s in statuses), statuses
    assert statuses[:64] == [413] * 64 and all(s == 422 for s in statuses[64:])  # refused; decoded, no digit
    assert peak < 1024 * 1024, f"peak RSS {peak / 1024:.0f} MB"


def test_a_client_that_goes_away_mid_body_is_one_log_line(process_server):
    url, proc, log = process_server
    port = int(url.rsplit(":", 1)[1])
    start = len(log.read_text())
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: image/png\r\n"
              b"Content-Length: 100000\r\n\r\n" % port + b"\x89PNG" + bytes(996))
    time.sleep(0.5)
    s.close()
    assert httpx.get(url + "/api/health").status_code == 200  # still serving
    t0 = time.monotonic()
    while "went away" not in log.read_text()[start:] and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    new = log.read_text()[start:]
    assert "Traceback" not in new, new
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 1 and "the client went away after 1000 bytes" in lines[0], new


def test_skinny_images_are_refused_from_their_header(process_server):
    """Images of few pixels but an extreme shape (24 x 699,050: 16 M pixels, under the limit) once cost gigabytes
    in preprocessing, whose blocks were padded to squares. Now each is a 422 before decoding, at once."""
    url, proc, _ = process_server
    uploads = [huge_png(24, 699_050), huge_png(32, 524_288), huge_png(699_050, 24), huge_png(16_777_216, 1)]
    before = vm_kb(proc.pid, "VmHWM")
    with httpx.Client(base_url=url, timeout=60) as c:
        for data in uploads:
            t0 = time.monotonic()
            r = c.post("/api/predict", files={"file": ("s.png", data, "image/png")})
            assert "more than 50 times longer one way than the other" in one_line(r, 422)
            assert time.monotonic() - t0 < 5
    assert vm_kb(proc.pid, "VmHWM") - before < 200 * 1024  # no preprocessing memory to speak of


def test_a_body_that_stalls_is_answered_408_and_let_go(predictor):
    """A client that sends part of its body and stops would hold it for ever; after the body deadline it gets
    one line of 408, and the server goes on serving."""
    from tegaki.serve.limits import Limits

    with serving(create_app(predictor, limits=Limits(body_seconds=1.0))) as url:
        port = int(url.rsplit(":", 1)[1])
        for path in (b"/api/predict", b"/api/features"):  # the fast path's reader, and the routes' one
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            t0 = time.monotonic()
            s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000\r\n\r\n" % (path, port) + b"\x89PNG" + bytes(996))
            answer = s.recv(4096).decode("latin-1")
            waited = time.monotonic() - t0
            s.close()
            assert answer.startswith("HTTP/1.1 408"), (path, answer[:200])
            assert "did not arrive within 1 s; send it again" in answer and 0.9 < waited < 5
        assert httpx.get(url + "/api/health").status_code == 200


def _held(port: int, first: bytes) -> tuple[str, float]:
    """Open a connection, send `first` (maybe nothing), wait: what came back before it closed, and when."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    t0 = time.monotonic()
    if first:
        s.sendall(first)
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    s.close()
    return answer.decode("latin-1"), time.monotonic() - t0


def test_headers_that_never_end_are_let_go(predictor):
    """Slowloris: a connection that sends nothing, or headers that never end, would hold a socket for ever.
    After the header deadline the first is closed without a word and the second gets a 408; a kept-alive
    connection's next request has its own deadline; a request sent in time is untouched."""
    with serving(create_app(predictor), header_seconds=1.0) as url:
        port = int(url.rsplit(":", 1)[1])
        answer, waited = _held(port, b"")
        assert answer == "" and 0.9 < waited < 5
        answer, waited = _held(port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port)
        assert answer.startswith("HTTP/1.1 408") and "headers did not arrive in time" in answer and 0.9 < waited < 5
        s = socket.create_connection(("127.0.0.1", port), timeout=30)  # kept alive: an answer, then slow headers
        time.sleep(0.7)
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")  # headers in time: answered
        time.sleep(0.7)  # 1.4 s since the connection opened, 0.7 s since the answer
        t0 = time.monotonic()
        s.sendall(b"GET /api/health HTTP/1.1\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 1.0  # clock from the answer
        s.close()
        answer, _ = _held(port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port)
        assert answer.startswith("HTTP/1.1 200")


def test_requests_the_parser_cannot_read_get_one_line_of_json(predictor):
    """A malformed Content-Length or request line is refused by the HTTP parser, before the app: still one line
    of JSON (uvicorn's own answer is plain text), and the server goes on."""
    with serving(create_app(predictor)) as url:
        port = int(url.rsplit(":", 1)[1])
        for bad in (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET / HTTP/1.1 extra\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # last: TLS
            answer, _ = _held(port, bad)
            head, _, body = answer.partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 400") and "content-type: application/json" in head.lower(), answer
            assert json.loads(body)["detail"].startswith("malformed HTTP request") and "\n" not in body
        assert httpx.get(url + "/api/health").status_code == 200


def test_tegaki_serve_has_the_header_deadline(process_server):
    """The real `tegaki serve` runs the protocol with the deadline (10 s), not uvicorn's bare one."""
    from tegaki.serve.limits import HEADER_SECONDS

    url, _, _ = process_server
    answer, waited = _held(int(url.rsplit(":", 1)[1]), b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith("HTTP/1.1 408") and HEADER_SECONDS - 0.5 < waited < HEADER_SECONDS + 5
