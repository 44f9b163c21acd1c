"""The HTTP API and the drawing page: one FastAPI application.

    app = create_app(run_or_path, mnist=(images_path, labels_path), drawings=Path("..."))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what `tegaki serve` does

Routes (serve/routes.py; reading requests: serve/requests.py; the answers: serve/answers.py)
  GET  /                 the drawing page (static/index.html, plain HTML, CSS and JavaScript)
  POST /api/predict      an image (multipart upload, or a raw image/png, image/jpeg ... body) or
                         JSON {"pixels": 28x28 or 784 numbers, 0..255 or 0..1}
                         -> {label, confidence, probabilities, top, input (the 28x28 the network
                         saw), info, steps (with ?steps=true), features (with ?features=N: the
                         first N conv layers' maps, from the same forward pass)}
  POST /api/features     the same inputs -> the feature maps of the first conv layers, as PNG mosaics
  GET  /api/random       a random MNIST test digit with its true label and the prediction
  POST /api/save?label=N the drawing, written as a PNG to <drawings>/<folder of class N>/ (a folder
                         dataset; class names that are not safe folder names become class_NN)
  GET  /api/model        what the model is: layers, metrics, data, command
  GET  /api/health       liveness
  GET  /docs, /openapi.json   the API's documentation (Swagger UI's files served from a Python
                         package, serve/docs.py: it works offline)

Everything the app needs comes in as arguments: the CLI reads options and the environment.
The model is built once, in the lifespan hook, with the batcher (serve/batch.py) that lets
requests arriving together share a network call. /api/predict is async: a small upload is decoded
on the event loop, a photo in the pool of decoding threads, and the network runs on the loop too,
in one call for the requests whose images are ready in the same turn; the common requests skip
FastAPI's routing and multipart parser (serve/fast.py), the others take the route. The other handlers that compute
are plain `def` (FastAPI runs them in its thread pool). `tegaki serve --workers N` runs N
processes, each building its app with `app_from_env` (serve/workers.py). Every bad request gets a
4xx answer {"detail": "one line saying what was wrong and what to do"}: 403 for a request from
another site or for another host name (below), 413 for a body or an image that is too large (an
image's pixel count is read from its header, so a decompression bomb is refused before anything
is decoded), 415 for an unsupported content type, 400 for malformed JSON or multipart, 422 for a
wrong shape, NaN, an unreadable image or no digit.
Every answer carries X-Process-Time (milliseconds spent in the server) and Server-Timing.

Cross-site requests and DNS rebinding: a request whose Host is not this server's own
(127.0.0.1, localhost or [::1] on the port it listens on, or the address it is bound to; any IP
address when bound to all of them) is refused, and so is one whose Origin header names another
site. Behind a proxy, name the public host with `allow_hosts` (`tegaki serve --allow-host HOST`;
HOST alone allows any port, HOST:PORT that port only, "*" turns the check off).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tegaki.errors import TegakiError
from tegaki.predict import Predictor
from tegaki.run import Run
from tegaki.serve.batch import Batcher
from tegaki.serve.docs import add_docs
from tegaki.serve.fast import FastPredict
from tegaki.serve.limits import HEADER_SECONDS, MAX_BATCH, WAIT_MS, Limits
from tegaki.serve.requests import ApiError
from tegaki.serve.routes import STATIC, folder_names, router


# the application -------------------------------------------------------------------------------
def create_app(model: Run | Predictor | str | Path | None = None, *, engine: str = "torch",
               mnist: tuple[str | Path, str | Path] | None = None, drawings: str | Path | None = None,
               limits: Limits | None = None, threads: int | None = None,
               allow_hosts: tuple[str, ...] | list[str] = (), max_batch: int = MAX_BATCH,
               batch_wait_ms: float = WAIT_MS) -> FastAPI:
    """The application. `model`: a run (folder, Run or ready Predictor; None = the bundled model);
    `mnist`: the (images, labels) IDX files of the test set for random digits, or None;
    `drawings`: where "save as label N" writes (None: saving is off); `threads`: torch's
    intra-op threads (None leaves the process's setting alone); `allow_hosts`: host names
    (HOST or HOST:PORT, "*" for any) accepted besides this server's own, e.g. behind a proxy;
    `max_batch`, `batch_wait_ms`: requests arriving together share a network call of up to
    max_batch images, waiting at most batch_wait_ms for each other (serve/batch.py; 1 turns it off)."""
    Batcher.check(max_batch, batch_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if threads:
            import torch

            torch.set_num_threads(threads)
        st = app.state
        st.predictor = load_predictor(model, engine)
        st.folders = folder_names(st.predictor.classes)
        st.mnist, st.mnist_note = load_mnist(mnist)
        st.batcher = Batcher(st.predictor, max_batch, batch_wait_ms)
        try:
            yield
        finally:
            st.batcher.close()

    app = FastAPI(title="tegaki", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Handwritten-digit recognition: send an image or 28x28 pixels, get the digit.")
    app.state.limits = limits or Limits()
    app.state.drawings = Path(drawings).expanduser() if drawings else None
    app.include_router(router)
    add_docs(app)  # /docs with Swagger UI's files from a Python package: works offline
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(FastPredict, state=app.state)  # innermost: after the Host and Origin checks
    app.add_middleware(SameOrigin, allow_hosts=tuple(allow_hosts))
    app.add_middleware(ProcessTime)
    return app


ENV = "TEGAKI_SERVE_APP"  # create_app's arguments as JSON, for each worker of `tegaki serve --workers N`


def app_from_env() -> FastAPI:
    """The app of one worker process of `tegaki serve --workers N` (uvicorn imports this factory in
    each worker): create_app with the arguments the command wrote to $TEGAKI_SERVE_APP as JSON."""
    kw = json.loads(os.environ[ENV])
    kw["limits"] = Limits(**kw["limits"])
    kw["mnist"] = tuple(kw["mnist"]) if kw.get("mnist") else None
    return create_app(kw.pop("model"), **kw)


def load_predictor(model, engine: str) -> Predictor:
    if isinstance(model, Predictor):
        p = model
    elif isinstance(model, Run):
        p = Predictor(model, engine=engine)
    else:
        p = Predictor.load(model, engine=engine)
    p.predict_proba(np.zeros((1, 28, 28), np.uint8))  # warm up
    return p


def load_mnist(mnist) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """(images, labels) of the MNIST test set, or None and why not."""
    if not mnist:
        return None, "no MNIST test set was given to the server"
    try:
        from tegaki.data.idx import read_idx

        images, labels = read_idx(mnist[0], ndim=3), read_idx(mnist[1], ndim=1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise TegakiError(f"{mnist[0]} and {mnist[1]} do not match")
    except TegakiError as e:
        return None, f"the MNIST test set could not be read ({e})"
    return (images, labels.astype(np.int64)), ""


# errors as one-line JSON ---------------------------------------------------------------------------
def api_error(request: Request, e: ApiError):
    return JSONResponse(e.body(), status_code=e.status)


def validation_error(request: Request, e: RequestValidationError):
    parts = []
    for err in e.errors():
        where = " ".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        parts.append(f"{where}: {err.get('msg')}")
    return JSONResponse({"detail": " ".join("; ".join(parts).split())[:300] or "invalid request"}, status_code=422)


def http_error(request: Request, e: StarletteHTTPException):
    detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
    if e.status_code == 404:
        detail = f"no such page or API route: {request.url.path} (see /docs)"
    elif e.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path} (see /docs)"
    return JSONResponse({"detail": detail}, status_code=e.status_code, headers=getattr(e, "headers", None))


# middleware --------------------------------------------------------------------------------------
class SameOrigin:
    """ASGI middleware: 403 for a request for another host name (DNS rebinding) or from another
    site (its Origin header); see the module docstring for what counts as this server's own."""

    LOOPBACK = ("127.0.0.1", "localhost", "[::1]")

    def __init__(self, app, allow_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allow = {h.strip().lower() for h in allow_hosts if h.strip()}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or "*" in self.allow:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reversed(scope.get("headers", []))}
        why = self.refusal(scope, headers.get("host", ""), headers.get("origin"))
        if why is None:
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        await JSONResponse({"detail": why}, status_code=403)(scope, receive, send)

    def refusal(self, scope, host: str, origin: str | None) -> str | None:
        """Why this request is refused (one line), or None."""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if not self.ours(host, scheme, scope.get("server")):
            return (f"refused: Host {host or '(none)'!r} is not this server's name; open the page at this "
                    "server's own address, or start 'tegaki serve' with --allow-host HOST (behind a proxy)")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not self.ours(parts.netloc, parts.scheme, scope.get("server")):
                return (f"refused: a request from another site (Origin {origin[:100]!r}); only the page this "
                        "server serves may use its API (or start 'tegaki serve' with --allow-host HOST)")
        return None

    def ours(self, hostport: str, scheme: str, server) -> bool:
        """Is HOST[:PORT] this server's own name, or one it was told to allow?"""
        hostport = hostport.strip().lower()
        name, port = split_host(hostport, 443 if scheme == "https" else 80)
        if name is None:
            return False
        if hostport in self.allow or name in self.allow or f"{name}:{port}" in self.allow:
            return True
        if not server:
            return name in self.LOOPBACK
        bound, bound_port = str(server[0]).lower(), server[1]
        if port != bound_port:
            return False
        if name in self.LOOPBACK or name in (bound, f"[{bound}]") and is_ip(bound):
            return True
        return bound in ("0.0.0.0", "::") and is_ip(name.strip("[]"))  # bound to all: any of its addresses


def split_host(hostport: str, default_port: int) -> tuple[str | None, int | None]:
    """'name:8000' -> ('name', 8000); '[::1]:80' -> ('[::1]', 80); no port -> default_port;
    (None, None) when it is not a host at all."""
    if not hostport or any(c in hostport for c in "/@?#\\ "):
        return None, None
    if hostport.startswith("["):
        name, _, rest = hostport.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None if not rest else "x"
    else:
        name, sep, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", None)
    if port is None or port == "":
        return name, default_port
    return (name, int(port)) if port.isdigit() and len(port) <= 5 else (None, None)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class ProcessTime:
    """ASGI middleware: X-Process-Time (ms) and Server-Timing on every HTTP answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"x-process-time", f"{ms:.3f}".encode()))
                headers.append((b"server-timing", f"app;dur={ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


@contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0,
            header_seconds: float = HEADER_SECONDS):
    """Run `app` with uvicorn in a background thread (for tests and notebooks); yields its base URL.

        with serving(create_app()) as url:
            httpx.post(url + "/api/predict", ...)
    """
    import socket
    import threading

    import uvicorn

    # proto IPPROTO_TCP (not 0): asyncio then sets TCP_NODELAY on each connection, as uvicorn.run's
    # own sockets get; without it a keep-alive answer's body waits ~40 ms behind its headers (Nagle)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    from tegaki.serve.protocol import with_deadline

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           http=with_deadline(header_seconds)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="tegaki-serve")
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > timeout:
            sock.close()
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.02)
    try:
        h, p = sock.getsockname()[:2]
        yield f"http://{'[' + h + ']' if ':' in h else h}:{p}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _version() -> str:
    from tegaki import __version__

    return __version__


__all__ = ["create_app", "serving", "Limits", "SameOrigin"]
