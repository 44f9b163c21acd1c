"""The HTTP API and the drawing page: one FastAPI application.

    app = create_app(run_or_path, mnist=(images_path, labels_path), drawings=Path("..."))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what `tegaki serve` does

Routes
  GET  /                 the drawing page (static/index.html, plain HTML, CSS and JavaScript)
  POST /api/predict      an image (multipart upload, or a raw image/png, image/jpeg ... body) or
                         JSON {"pixels": 28x28 or 784 numbers, 0..255 or 0..1}
                         -> {label, confidence, probabilities, top, input (the 28x28 the network
                         saw), info, steps (with ?steps=true)}
  POST /api/features     the same inputs -> the feature maps of the first conv layers, as PNG mosaics
  GET  /api/random       a random MNIST test digit with its true label and the prediction
  POST /api/save?label=N the drawing, written as a PNG to <drawings>/<N>/ (a folder dataset)
  GET  /api/model        what the model is: layers, metrics, data, command
  GET  /api/health       liveness
  GET  /docs, /openapi.json   the API's documentation

Everything the app needs comes in as arguments: the CLI reads options and the environment.
The model is built once, in the lifespan hook. Handlers that compute are plain `def` (FastAPI
runs them in its thread pool); only reading the request body is async. Every bad request gets a
4xx answer {"detail": "one line saying what was wrong and what to do"}: 413 for a body or an
image that is too large (an image's pixel count is read from its header, so a decompression
bomb is refused before anything is decoded), 415 for an unsupported content type, 400 for
malformed JSON or multipart, 422 for a wrong shape, NaN, an unreadable image or no digit.
Every answer carries X-Process-Time (milliseconds spent in the server) and Server-Timing.
"""

from __future__ import annotations

import base64
import io
import json
import math
import secrets
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from tegaki.data.preprocess import TooLarge, load_image
from tegaki.errors import TegakiError
from tegaki.fileio import atomic_write_bytes
from tegaki.predict import Prediction, Predictor
from tegaki.run import Run

STATIC = Path(__file__).resolve().parent / "static"
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/webp", "image/tiff",
               "application/octet-stream"}
STEP_SIDE = 280  # steps larger than this are shown reduced


@dataclass
class Limits:
    max_upload: int = 8 * 1024 * 1024  # bytes in one request body
    max_pixels: int = 25_000_000  # pixels in one decoded image (a 12 MP phone photo fits)


class ApiError(Exception):
    """A 4xx answer: status and the one-line message for {"detail": ...}."""

    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


# documentation models (the handlers build their JSON directly, for speed) ----------------------
class PixelsRequest(BaseModel):
    pixels: list[list[float]] | list[float] = Field(
        description="28 rows of 28 intensities, or 784 in row order; 0..255, or 0..1 floats. "
                    "White ink on black like MNIST, or dark on light: both are recognised.")
    steps: bool = Field(False, description="also return the preprocessing steps as PNG images")


class Ranked(BaseModel):
    label: int
    name: str
    probability: float


class PredictResponse(BaseModel):
    label: int = Field(description="the predicted class index")
    name: str = Field(description="the predicted class name")
    confidence: float
    probabilities: list[float] = Field(description="one probability per class")
    top: list[Ranked]
    input: list[list[int]] = Field(description="the 28x28 uint8 image the network saw (white ink on black)")
    info: dict[str, Any] = Field(description="what preprocessing measured: polarity, noise, stroke width ...")
    steps: list[dict[str, Any]] | None = Field(None, description="with steps=true: [{name, width, height, png}]")


class ErrorResponse(BaseModel):
    detail: str


ERRORS = {code: {"model": ErrorResponse, "description": why} for code, why in (
    (400, "malformed JSON or multipart body"), (413, "body or image too large"),
    (415, "unsupported content type"), (422, "wrong shape, NaN, unreadable image, or no digit"))}

IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a PNG, JPEG, GIF, BMP, WebP or TIFF image"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {
        "pixels": {"type": "array", "description": "28x28 nested lists, or 784 numbers; 0..255 or 0..1"},
        "steps": {"type": "boolean", "default": False}}}},
}}}


# reading a request -----------------------------------------------------------------------------
@dataclass
class Payload:
    image: bytes | None = None  # an encoded image
    pixels: np.ndarray | None = None  # (28, 28) float64 intensities
    steps: bool = False  # JSON's "steps"


async def _capped(request: Request, limit: int):
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, f"request body larger than the {limit // 1024:,} KB allowed; send a smaller image")
        yield chunk


async def _read_all(request: Request, limit: int) -> bytes:
    return b"".join([c async for c in _capped(request, limit)])


async def read_payload(request: Request) -> Payload:
    """The image or pixels of a request, checked for size and type; raises ApiError."""
    limits: Limits = request.app.state.limits
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_upload:
        raise ApiError(413, f"request body of {int(declared) // 1024:,} KB is larger than the "
                            f"{limits.max_upload // 1024:,} KB allowed; send a smaller image")
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime == "multipart/form-data":
        try:
            parser = MultiPartParser(request.headers, _capped(request, limits.max_upload), max_files=1, max_fields=8,
                                     max_part_size=64 * 1024)
            form = await parser.parse()
        except MultiPartException as e:
            raise ApiError(400, f"malformed multipart body ({e.message}); send one image in a field named 'file'")
        try:
            files = [v for k, v in form.multi_items() if not isinstance(v, str)]
            if not files:
                raise ApiError(422, "the multipart body has no file; send the image in a field named 'file'")
            data = await files[0].read()
        finally:
            await form.close()
        return Payload(image=data, steps=_flag(form.get("steps")))
    if mime == "application/json":
        body = await _read_all(request, min(limits.max_upload, 1024 * 1024))  # 784 numbers need a few KB
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON ({e}); send {{\"pixels\": [[...28 numbers...], ...28 rows]}}")
        return Payload(pixels=parse_pixels(obj), steps=bool(isinstance(obj, dict) and obj.get("steps") is True))
    if mime in IMAGE_TYPES:
        data = await _read_all(request, limits.max_upload)
        return Payload(image=data)
    shown = mime or "none"
    raise ApiError(415, f"unsupported Content-Type {shown}; send multipart/form-data with a file, an image/png or "
                        "image/jpeg body, or application/json {\"pixels\": 28x28 numbers}")


def _flag(v) -> bool:
    return isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on")


def parse_pixels(obj) -> np.ndarray:
    """JSON {"pixels": ...} -> (28, 28) float64, or ApiError(422) saying what is wrong."""
    if not isinstance(obj, dict) or "pixels" not in obj:
        raise ApiError(422, "JSON body must be an object with a 'pixels' field: 28 rows of 28 numbers, or 784 numbers")
    px = obj["pixels"]
    shape_msg = "'pixels' must be 28 rows of 28 numbers, or a flat list of 784 numbers"
    if not isinstance(px, list):
        raise ApiError(422, f"{shape_msg}; got {type(px).__name__}")
    rows = px if px and isinstance(px[0], list) else [px]
    for r in rows:
        if not isinstance(r, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
            raise ApiError(422, f"{shape_msg}; found something that is not a number")
    try:
        a = np.asarray(px, dtype=np.float64)
    except OverflowError:
        raise ApiError(422, "'pixels' must be intensities in 0..255 (or 0..1); found a huge number") from None
    except (ValueError, TypeError):
        raise ApiError(422, f"{shape_msg}; the rows have different lengths") from None
    if a.shape not in ((28, 28), (784,)):
        raise ApiError(422, f"{shape_msg}; got shape {'x'.join(map(str, a.shape)) or 'scalar'}")
    if not np.isfinite(a).all():
        raise ApiError(422, "'pixels' must be finite numbers; found NaN or Infinity")
    if a.min() < 0 or a.max() > 255:
        raise ApiError(422, f"'pixels' must be intensities in 0..255 (or 0..1); found {a.min():g}..{a.max():g}")
    return a.reshape(28, 28)


# answers ---------------------------------------------------------------------------------------
def png_data_url(a: np.ndarray, side: int | None = None) -> tuple[str, int, int]:
    """A 2-D array (floats 0..1 or uint8) as a PNG data URL, reduced to fit `side` if larger."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    im = Image.fromarray(a, mode="L")
    if side and max(im.size) > side:
        s = side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BOX)
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def mosaic(maps: np.ndarray, gap: int = 1) -> tuple[np.ndarray, int, int]:
    """(C, H, W) feature maps -> one (rows*(H+gap)-gap, cols*(W+gap)-gap) image in 0..1, each map
    stretched to its own range (zero stays black for maps that are never negative)."""
    c, h, w = maps.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), 0.25, np.float32)
    for i, m in enumerate(maps):
        lo = min(float(m.min()), 0.0)
        hi = float(m.max())
        t = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        r, q = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, q * (w + gap): q * (w + gap) + w] = t
    return out, rows, cols


def prediction_json(pred: Prediction, classes: list[str], steps: bool = False, top: int = 3) -> dict:
    body = {
        "label": pred.label, "name": classes[pred.label], "confidence": pred.confidence,
        "probabilities": pred.probabilities,
        "top": [{"label": i, "name": classes[i], "probability": p} for i, p in pred.top(top)],
        "input": pred.input.tolist(), "info": pred.info,
    }
    if steps:
        body["steps"] = steps_json(pred.steps)
    return body


def steps_json(steps: dict) -> list[dict]:
    out = []
    for name, a in steps.items():
        url, w, h = png_data_url(a, STEP_SIDE)
        out.append({"name": name, "width": w, "height": h, "shape": list(np.shape(a)), "png": url})
    return out


NO_DIGIT = ("no digit: nothing in the image stands out from the background as ink; "
            "draw or upload a digit (dark on light, or light on dark)")


# the application -------------------------------------------------------------------------------
def create_app(model: Run | Predictor | str | Path | None = None, *, engine: str = "torch",
               mnist: tuple[str | Path, str | Path] | None = None, drawings: str | Path | None = None,
               limits: Limits | None = None, threads: int | None = None) -> FastAPI:
    """The application. `model`: a run (folder, Run or ready Predictor; None = the bundled model);
    `mnist`: the (images, labels) IDX files of the test set for random digits, or None;
    `drawings`: where "save as label N" writes (None: saving is off); `threads`: torch's
    intra-op threads (None leaves the process's setting alone)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if threads:
            import torch

            torch.set_num_threads(threads)
        st = app.state
        if isinstance(model, Predictor):
            st.predictor = model
        elif isinstance(model, Run):
            st.predictor = Predictor(model, engine=engine)
        else:
            st.predictor = Predictor.load(model, engine=engine)
        st.predictor.predict_proba(np.zeros((1, 28, 28), np.uint8))  # warm up
        st.mnist, st.mnist_note = None, "no MNIST test set was given to the server"
        if mnist:
            try:
                from tegaki.data.idx import read_idx

                images, labels = read_idx(mnist[0], ndim=3), read_idx(mnist[1], ndim=1)
                if len(images) != len(labels) or images.shape[1:] != (28, 28):
                    raise TegakiError(f"{mnist[0]} and {mnist[1]} do not match")
                st.mnist = (images, labels.astype(np.int64))
            except TegakiError as e:
                st.mnist_note = f"the MNIST test set could not be read ({e})"
        yield

    app = FastAPI(title="tegaki", version=_version(), lifespan=lifespan,
                  description="Handwritten-digit recognition: send an image or 28x28 pixels, get the digit.")
    app.state.limits = limits or Limits()
    app.state.drawings = Path(drawings).expanduser() if drawings else None
    app.add_middleware(ProcessTime)

    @app.exception_handler(ApiError)
    def _api_error(request: Request, e: ApiError):
        return JSONResponse({"detail": e.detail, **e.extra}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    def _validation(request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            where = " ".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
            parts.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, e: StarletteHTTPException):
        detail = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404:
            detail = f"no such page or API route: {request.url.path} (see /docs)"
        elif e.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return JSONResponse({"detail": detail}, status_code=e.status_code, headers=getattr(e, "headers", None))

    def classify(request: Request, payload: Payload) -> Prediction:
        p: Predictor = request.app.state.predictor
        try:
            if payload.pixels is not None:
                pred = p.predict_image(payload.pixels)
            else:
                if not payload.image:
                    raise ApiError(422, "empty upload: the request carried no image bytes; send a PNG or JPEG")
                pred = p.predict_image(payload.image, max_pixels=request.app.state.limits.max_pixels)
        except TooLarge as e:
            raise ApiError(413, str(e)) from None
        except TegakiError as e:
            raise ApiError(422, str(e)) from None
        if pred.empty:
            raise ApiError(422, NO_DIGIT, no_digit=True)
        return pred

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", summary="Is the server up?")
    def health(request: Request):
        st = request.app.state
        return JSONResponse({"status": "ok", "model": st.predictor.spec.name, "mnist": st.mnist is not None,
                             "saving": st.drawings is not None})

    @app.get("/api/model", summary="What the model is: layers, metrics, data provenance, command")
    def model_info(request: Request):
        st = request.app.state
        d = st.predictor.describe()
        d["server"] = {"max_upload_bytes": st.limits.max_upload, "max_pixels": st.limits.max_pixels,
                       "mnist": st.mnist is not None, "mnist_note": None if st.mnist is not None else st.mnist_note,
                       "drawings": str(st.drawings) if st.drawings else None}
        return JSONResponse(json.loads(json.dumps(d, default=str)))

    @app.post("/api/predict", summary="Recognise the digit in an image or in 28x28 pixels",
              response_model=PredictResponse, responses=ERRORS, openapi_extra=IMAGE_BODY)
    def predict(request: Request, payload: Payload = Depends(read_payload),
                steps: bool = Query(False, description="also return the preprocessing steps as PNGs"),
                top: int = Query(3, ge=1, le=100, description="how many ranked classes to return")):
        pred = classify(request, payload)
        classes = request.app.state.predictor.classes
        return JSONResponse(prediction_json(pred, classes, steps or payload.steps, top))

    @app.post("/api/features", summary="Feature maps of the first conv layers for an image",
              responses=ERRORS, openapi_extra=IMAGE_BODY)
    def features(request: Request, payload: Payload = Depends(read_payload),
                 layers: int = Query(2, ge=1, le=8, description="how many conv layers, from the first")):
        pred = classify(request, payload)
        p: Predictor = request.app.state.predictor
        out = []
        for conv, read, maps in p.feature_maps(pred.input, limit=layers):
            img, rows, cols = mosaic(maps)
            url, w, h = png_data_url(img)
            out.append({"name": conv, "read": read, "shape": list(maps.shape), "rows": rows, "cols": cols,
                        "width": w, "height": h, "png": url})
        return JSONResponse({"label": pred.label, "input": pred.input.tolist(), "layers": out,
                             "note": None if out else "this network has no conv layers"})

    @app.get("/api/random", summary="A random MNIST test digit, its true label and the prediction",
             responses={404: {"model": ErrorResponse, "description": "no MNIST test set on the server"}})
    def random_digit(request: Request, index: int | None = Query(None, ge=0, description="a test image index"),
                     steps: bool = False):
        st = request.app.state
        if st.mnist is None:
            raise ApiError(404, f"no random test digits: {st.mnist_note}; start the server with --data-dir DIR "
                                "(or set TEGAKI_DATA_DIR, or run 'tegaki data fetch mnist')")
        images, labels = st.mnist
        if index is None:
            index = int(np.random.default_rng().integers(len(labels)))
        if index >= len(labels):
            raise ApiError(422, f"index {index} is out of range: the test set has {len(labels):,} images")
        img = images[index]
        pred = st.predictor.predict_image(img)
        body = {"index": index, "true_label": int(labels[index]), "pixels": img.tolist()}
        body["prediction"] = prediction_json(pred, st.predictor.classes, steps) if not pred.empty else None
        return JSONResponse(body)

    @app.post("/api/save", summary="Save the drawing as an example of class N (a folder dataset)",
              responses={**ERRORS, 404: {"model": ErrorResponse, "description": "saving is off"}},
              openapi_extra=IMAGE_BODY)
    def save(request: Request, payload: Payload = Depends(read_payload),
             label: int = Query(..., ge=0, description="the class the drawing shows, e.g. 7")):
        st = request.app.state
        if st.drawings is None:
            raise ApiError(404, "saving drawings is off on this server; start 'tegaki serve' with --drawings DIR")
        classes = st.predictor.classes
        if label >= len(classes):
            raise ApiError(422, f"label must be 0..{len(classes) - 1}, got {label}")
        pred = classify(request, payload)  # refuses unreadable images and empty drawings
        try:
            grey = load_image(payload.pixels if payload.pixels is not None else payload.image,
                              max_pixels=st.limits.max_pixels)
        except TegakiError as e:
            raise ApiError(422, str(e)) from None
        png, _, _ = png_data_url(grey)
        folder = st.drawings / classes[label]
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.png"
        try:
            atomic_write_bytes(path, base64.b64decode(png.split(",", 1)[1]))
        except OSError as e:
            raise ApiError(507, f"could not write {path}: {e.strerror or e}") from None
        count = sum(1 for f in folder.iterdir() if f.suffix == ".png")
        return JSONResponse({"saved": str(path), "label": label, "name": classes[label], "count": count,
                             "folder": str(st.drawings), "predicted": pred.label,
                             "use": f"tegaki evaluate RUN --dataset folder:{st.drawings}"})

    return app


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
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
    """Run `app` with uvicorn in a background thread (for tests and notebooks); yields its base URL.

        with serving(create_app()) as url:
            httpx.post(url + "/api/predict", ...)
    """
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
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


__all__ = ["create_app", "serving", "Limits"]
