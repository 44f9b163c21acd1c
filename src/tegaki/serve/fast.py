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

import asyncio
import re

from tegaki.serve.answers import JSONAnswer
from tegaki.serve.requests import IMAGE_TYPES, JSON_LIMIT, ApiError, Payload, body_stalled, parse_json
from tegaki.serve.routes import predict_answer

PATH = "/api/predict"
_IMAGE_TYPES = frozenset(t.encode() for t in IMAGE_TYPES)
MAX_PART_HEAD = 4096  # bytes of a part's header (a browser sends about 100)
TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an HTTP header or parameter name (RFC 9110)
_TOKEN = re.compile(TOKEN)
_CTYPE_PARAM = re.compile(rb'\s*;\s*(' + TOKEN + rb')=(?:"([^"\\\r\n]*)"|(' + TOKEN + rb'))\s*')
_BOUNDARY_CHARS = re.compile(rb"[0-9A-Za-z'()+_,./:=?-]{1,70}")
_PARAM = re.compile(rb';\s*([A-Za-z]+)="([^"\\\r\n]*)"\s*')


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
        if kind == "json":
            limit = min(limit, JSON_LIMIT)  # the route's own cap for JSON
        if query is None or kind is None or (declared is not None and declared > limit):
            return await self.app(scope, receive, send)
        try:
            messages, body = await _read_body(receive, limit, self.state.limits.body_seconds)
        except ApiError as e:  # the body stalled
            return await JSONAnswer(e.body(), status_code=e.status)(scope, receive, send)
        if body is None or (kind == "form" and (body := one_file(body, boundary)) is None):
            # FastAPI reads it: the messages taken so far first, then the rest
            return await self.app(scope, _replay(messages, receive), send)
        del messages  # one copy of the upload from here on
        try:
            payload = parse_json(body) if kind == "json" else Payload(image=body)
            del body
            status, answer = 200, await predict_answer(self.state, payload, **query)
        except ApiError as e:
            status, answer = e.status, e.body()
        self.answered += 1
        await JSONAnswer(answer, status_code=status)(scope, receive, send)  # as the route and its errors answer


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
    """(kind: "image" / "json" / "form" / None for FastAPI, the multipart boundary, Content-Length).
    None for a request with two Content-Type or Content-Length headers (which one counts is for the
    route to say, and for anything in front of the server to agree with)."""
    ctype, declared, seen = None, None, 0
    for k, v in headers:
        if k == b"content-type":
            ctype, seen = v, seen + 1
        elif k == b"content-length":
            if declared is not None or not (v.isdigit() and len(v) < 16):
                return None, None, None
            declared = int(v)
    if seen != 1:
        return None, None, declared
    mime, _, params = ctype.partition(b";")
    mime = mime.strip().lower()
    if mime in _IMAGE_TYPES:
        return "image", None, declared
    if mime == b"application/json":
        return "json", None, declared
    if mime == b"multipart/form-data":
        boundary = _boundary(params)
        if boundary is not None:
            return "form", boundary, declared
    return None, None, declared


def _boundary(params: bytes) -> bytes | None:
    """The boundary of a multipart Content-Type's parameters (after its first ';'): exactly one
    boundary among parameters that all read cleanly, else None."""
    matches = _scan(_CTYPE_PARAM, params)
    if matches is None:
        return None
    found = [m.group(2) if m.group(2) is not None else m.group(3) for m in matches
             if m.group(1).lower() == b"boundary"]
    return found[0] if len(found) == 1 and _BOUNDARY_CHARS.fullmatch(found[0]) else None


def _scan(pattern: re.Pattern, params: bytes) -> list[re.Match] | None:
    """A header's parameters (what follows its first ';'), each matched by `pattern` from its own
    ';': the matches laid end to end over all of them; None if anything else is between or after."""
    text, found, pos = b";" + params, [], 0
    while pos < len(text):
        m = pattern.match(text, pos)
        if m is None:
            return None
        found.append(m)
        pos = m.end()
    return found


async def _read_body(receive, limit: int, seconds: float) -> tuple[list[dict], bytes | None]:
    """(the messages received, the whole body), the body None when it is larger than limit or the
    client went away (FastAPI answers those); ApiError 408 when it takes longer than `seconds`."""
    messages, size = [], 0
    end = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            async with asyncio.timeout_at(end):
                m = await receive()
        except TimeoutError:
            raise body_stalled("POST", PATH, size, seconds) from None
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


def one_file(body: bytes, boundary: bytes) -> bytes | None:
    """The file in a multipart body that holds exactly one part, a file (a Content-Disposition
    with a filename, as a browser's FormData sends it); None for any other body."""
    dash = b"--" + boundary
    if not body.startswith(dash + b"\r\n"):
        return None
    head_end = body.find(b"\r\n\r\n", len(dash) + 2, len(dash) + 2 + MAX_PART_HEAD)
    if head_end < 0:  # no end of the part's header, or a header longer than any browser sends
        return None
    end = body.find(b"\r\n" + dash, head_end + 4)
    if end < 0 or body[end + 2 + len(dash):] not in (b"--", b"--\r\n"):
        return None
    disposition = None
    for line in body[len(dash) + 2: head_end].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            return None
        if name.lower() == b"content-disposition":
            if disposition is not None:
                return None
            disposition = value.strip()
    if disposition is None:
        return None
    kind, _, rest = disposition.partition(b";")
    if kind.strip().lower() != b"form-data":
        return None
    matches = _scan(_PARAM, rest)
    if matches is None:
        return None
    params = {m.group(1): m.group(2) for m in matches}
    if b"name" not in params or b"filename" not in params:
        return None
    return body[head_end + 4: end]
