"""POST /api/predict without FastAPI's routing, dependency solving and multipart parser: the hot path.

    app.add_middleware(FastPredict, state=app.state)      # what create_app does (innermost)

A drawing's request costs the server about 1.5 ms of CPU, and on this path FastAPI's own work
(matching the route, solving three dependencies, validating the query, python-multipart, the
exception middleware) was half a millisecond of it. This ASGI middleware answers the common
requests itself, with the very same code for everything that matters (routes.predict_answer):

- the query holds nothing but `steps` (true/false/1/0), `top` (1..100), `features` (0..8) and
  parameters the route ignores (the page's `seq`);
- the body is complete within the upload limit, and it is a raw image (image/png ... or
  application/octet-stream), JSON pixels, or multipart/form-data holding exactly one part, a file.

Anything else (a second form field, an odd query value, a body over the limit, a client gone
mid-body, an unsupported type) goes on to FastAPI unchanged, with the body read so far replayed:
its answers, and so every error message, stay those of the route in serve/routes.py. An ApiError
raised on this path is answered as FastAPI's handler answers it ({"detail": ...}, its status).
"""

from __future__ import annotations

import re

from tegaki.serve.answers import json_bytes
from tegaki.serve.requests import IMAGE_TYPES, ApiError, Payload, parse_json
from tegaki.serve.routes import predict_answer

PATH = "/api/predict"
_IMAGE_TYPES = frozenset(t.encode() for t in IMAGE_TYPES)
_BOUNDARY = re.compile(rb';\s*boundary=(?:"([0-9A-Za-z\'()+_,./:=?-]{1,70})"|([0-9A-Za-z\'()+_,./:=?-]{1,70}))\s*(?:;|$)',
                       re.IGNORECASE)
_PARAM = re.compile(rb';\s*([A-Za-z]+)="([^"\\\r\n]*)"\s*')
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPredict:
    """ASGI middleware: answers the common POST /api/predict requests itself (see the module docstring)."""

    def __init__(self, app, state):
        self.app, self.state = app, state
        self.answered = 0  # requests answered here (the others went on to FastAPI)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        query = parse_query(scope["query_string"])
        kind, boundary, declared = _content(scope["headers"])
        limit = self.state.limits.max_upload
        if query is None or kind is None or (declared is not None and declared > limit):
            return await self.app(scope, receive, send)
        messages, body = await _read_body(receive, limit)
        payload = None if body is None else _payload(kind, boundary, body)
        if payload is None:  # FastAPI reads it: the messages taken so far first, then the rest
            return await self.app(scope, _replay(messages, receive), send)
        try:
            status, answer = 200, await predict_answer(self.state, payload(), **query)
        except ApiError as e:
            status, answer = e.status, e.body()
        self.answered += 1
        raw = json_bytes(answer)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(raw)).encode()), *_JSON_HEADERS]})
        await send({"type": "http.response.body", "body": raw})


def parse_query(qs: bytes) -> dict | None:
    """The route's query parameters {steps, top, features}, or None when FastAPI should read them
    (a value it would refuse or convert differently, a repeated or percent-encoded name)."""
    out = {"steps": False, "top": 3, "features": 0}
    seen = set()
    for part in qs.split(b"&") if qs else ():
        name, _, value = part.partition(b"=")
        if name in seen or b"%" in name or b"+" in name:
            return None
        seen.add(name)
        if name == b"steps":
            if value not in (b"true", b"false", b"1", b"0"):
                return None
            out["steps"] = value in (b"true", b"1")
        elif name in (b"top", b"features"):
            lo, hi = (1, 100) if name == b"top" else (0, 8)
            if not (value.isdigit() and len(value) <= 3 and lo <= int(value) <= hi):
                return None
            out[name.decode()] = int(value)
    return out


def _content(headers) -> tuple[str | None, bytes | None, int | None]:
    """(kind: "image" / "json" / "form" / None for FastAPI, the multipart boundary, Content-Length)."""
    ctype, declared = b"", None
    for k, v in headers:
        if k == b"content-type":
            ctype = v
        elif k == b"content-length":
            declared = int(v) if v.isdigit() and len(v) < 16 else None
    mime = ctype.split(b";", 1)[0].strip().lower()
    if mime in _IMAGE_TYPES:
        return "image", None, declared
    if mime == b"application/json":
        return "json", None, declared
    if mime == b"multipart/form-data":
        m = _BOUNDARY.search(ctype)
        if m:
            return "form", m.group(1) or m.group(2), declared
    return None, None, declared


async def _read_body(receive, limit: int) -> tuple[list[dict], bytes | None]:
    """(the messages received, the whole body), the body None when it is larger than limit or the
    client went away (FastAPI answers those)."""
    messages, size = [], 0
    while True:
        m = await receive()
        messages.append(m)
        if m["type"] != "http.request":
            return messages, None
        size += len(m.get("body", b""))
        if size > limit:
            return messages, None
        if not m.get("more_body", False):
            break
    body = messages[0].get("body", b"") if len(messages) == 1 else b"".join(m.get("body", b"") for m in messages)
    return messages, body


def _replay(messages: list[dict], receive):
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()
    return replayed


def _payload(kind: str, boundary: bytes | None, body: bytes):
    """A function making the request's Payload (parse_json raises ApiError, so it runs in the
    handler's try), or None when FastAPI should read the body."""
    if kind == "image":
        return lambda: Payload(image=body)
    if kind == "json":
        return lambda: parse_json(body)
    data = one_file(body, boundary)
    return None if data is None else lambda: Payload(image=data)


def one_file(body: bytes, boundary: bytes) -> bytes | None:
    """The file in a multipart body that holds exactly one part, a file (a Content-Disposition
    with a filename, as a browser's FormData sends it); None for any other body."""
    dash = b"--" + boundary
    if not body.startswith(dash + b"\r\n"):
        return None
    head_end = body.find(b"\r\n\r\n", len(dash) + 2)
    if head_end < 0:
        return None
    end = body.find(b"\r\n" + dash, head_end + 4)
    if end < 0 or body[end + 2 + len(dash):] not in (b"--", b"--\r\n"):
        return None
    disposition = None
    for line in body[len(dash) + 2: head_end].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or name.strip() != name or not name:
            return None
        if name.lower() == b"content-disposition":
            if disposition is not None:
                return None
            disposition = value.strip()
    if disposition is None or disposition.split(b";", 1)[0].strip().lower() != b"form-data":
        return None
    rest = disposition.split(b";", 1)[1] if b";" in disposition else b""
    params = dict(_PARAM.findall(b";" + rest))
    if _PARAM.sub(b"", b";" + rest).strip() or b"name" not in params or b"filename" not in params:
        return None
    return body[head_end + 4: end]
