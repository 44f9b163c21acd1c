"""Reading a request: the body (capped), multipart / raw image / JSON pixels, and decoding an upload.

    payload = await read_payload(request)              # a FastAPI dependency; raises ApiError
    pre = preprocess(predictor, payload, limits)       # decoded once, in a bounded pool

The limits (bytes, pixels, decodes at once) are in serve/limits.py.

Every problem is an ApiError: 400 malformed body, 413 too large, 415 unsupported type, 422 a wrong
shape, NaN, an unreadable image or no digit.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from tegaki.data.preprocess import FORMATS, Preprocessed, TooLarge, load_image, no_bomb_warning
from tegaki.errors import TegakiError
from tegaki.numerics import bounded_int, json_depth
from tegaki.serve.limits import DECODES, Limits

JSON_LIMIT = 1024 * 1024  # 784 numbers need a few KB
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/webp", "image/tiff",
               "image/x-portable-graymap", "application/octet-stream"}  # PGM: what the page sends
NO_DIGIT = ("no digit: no strokes stand out from the background (the image is blank, or ink covers it evenly); "
            "draw or upload a digit (dark on light, or light on dark)")

# a part without a (plain) filename is a text field to the multipart parser: curl -F 'file=<x.png' sends one
NOT_A_FILE = "a multipart part without a filename was read as a text field, not a file"
AS_FILE = "send the image as a file part with a filename (with curl: -F file=@PATH)"

INLINE_PIXELS = 320 * 320  # images up to this size are decoded on the event loop (preprocess_async)

log = logging.getLogger("tegaki.serve")
# the threads that decode: few and always the same ones, so that the memory a decode frees is
# reused by the next instead of staying with one of the many request threads (malloc arenas)
_decoders = ThreadPoolExecutor(DECODES, thread_name_prefix="tegaki-decode")


class ApiError(Exception):
    """A 4xx answer: status and the one-line message for {"detail": ...}."""

    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra

    def body(self) -> dict:
        """The answer's JSON: {"detail": one line saying what was wrong and what to do, ...extra}."""
        return {"detail": self.detail, **self.extra}


@dataclass
class Payload:
    image: bytes | None = None  # an encoded image
    pixels: np.ndarray | None = None  # (28, 28) float64 intensities
    steps: bool = False  # JSON's or the form's "steps"


# the body ----------------------------------------------------------------------------------------
async def _capped(request: Request, limit: int):
    seen = 0
    seconds = request.app.state.limits.body_seconds
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:  # the whole body within the deadline: a stalled upload must not hold its bytes for ever
                async with asyncio.timeout_at(end):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise body_stalled(request.method, request.url.path, seen, seconds) from None
            seen += len(chunk)
            if seen > limit:
                raise ApiError(413, f"request body larger than the {limit // 1024:,} KB allowed; "
                                    "send a smaller image")
            yield chunk
    except ClientDisconnect:
        log.warning("tegaki serve: %s %s: the client went away after %d bytes of the body",
                    request.method, request.url.path, seen)
        raise ApiError(400, "the client disconnected before the request body was complete") from None


def body_stalled(method: str, path: str, seen: int, seconds: float) -> "ApiError":
    """The 408 for a body that did not arrive within the deadline (logged: one line)."""
    log.warning("tegaki serve: %s %s: the body stalled after %d bytes; answered 408", method, path, seen)
    return ApiError(408, f"the request body did not arrive within {seconds:g} s; send it again")


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
        return await _read_form(request, limits)
    if mime == "application/json":
        return parse_json(await _read_all(request, min(limits.max_upload, JSON_LIMIT)))
    if mime in IMAGE_TYPES:
        return Payload(image=await _read_all(request, limits.max_upload))
    raise ApiError(415, f"unsupported Content-Type {mime or 'none'}; send multipart/form-data with a file, an "
                        "image/png or image/jpeg body, or application/json {\"pixels\": 28x28 numbers}")


async def _read_form(request: Request, limits: Limits) -> Payload:
    try:
        parser = MultiPartParser(request.headers, _capped(request, limits.max_upload), max_files=1, max_fields=8,
                                 max_part_size=64 * 1024)
        form = await parser.parse()
    except MultiPartException as e:
        if "exceeded maximum size" in e.message:  # a large part without a filename is read as a text field
            raise ApiError(400, f"{NOT_A_FILE}, and is too large for one ({e.message.rstrip('.')}); {AS_FILE}")
        raise ApiError(400, f"malformed multipart body ({e.message}); send one image in a field named 'file'")
    try:
        files = [v for k, v in form.multi_items() if not isinstance(v, str)]
        if not files and "file" in form:
            raise ApiError(422, f"{NOT_A_FILE}; {AS_FILE}")
        if not files:
            raise ApiError(422, "the multipart body has no file; send the image in a field named 'file'")
        data = await files[0].read()
    finally:
        await form.close()
    steps = form.get("steps")
    return Payload(image=data, steps=isinstance(steps, str) and steps.strip().lower() in ("1", "true", "yes", "on"))


MAX_JSON_DEPTH = 100  # {"pixels": [[...]]} is 3 deep; far below what json.loads could recurse into


# JSON pixels -------------------------------------------------------------------------------------
def parse_json(body: bytes) -> Payload:
    """A JSON body {"pixels": ..., "steps": bool} -> Payload, or ApiError(400/422)."""
    hint = "send {\"pixels\": [[...28 numbers...], ...28 rows]}"
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, f"malformed JSON (nested too deeply); {hint}")
    try:
        obj = json.loads(body, parse_int=bounded_int)
    except RecursionError:
        raise ApiError(400, f"malformed JSON (nested too deeply); {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON ({e}); {hint}") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise ApiError(400, f"malformed JSON (a number with far too many digits); {hint}") from None
    return Payload(pixels=parse_pixels(obj), steps=bool(isinstance(obj, dict) and obj.get("steps") is True))


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


# decoding ----------------------------------------------------------------------------------------
def check_size(data: bytes, max_pixels: int) -> int | None:
    """Refuse an image whose header declares more than max_pixels (nothing is decoded here); its
    pixel count, or None when the header cannot be read."""
    try:
        with no_bomb_warning(), Image.open(io.BytesIO(data), formats=FORMATS) as im:  # max_pixels decides, below
            w, h = im.size
    except Exception:  # not an image, or a damaged header: load_image says which, in its words
        return None
    if w * h > max_pixels:
        raise ApiError(413, f"upload: image is {w}x{h} pixels, more than the {max_pixels:,} allowed; "
                            "scale it down first")
    return w * h


def grey_levels(payload: Payload, limits: Limits) -> np.ndarray:
    """The payload as grey levels in 0..1, (H, W): decoded once (see preprocess)."""
    if payload.pixels is not None:
        return load_image(payload.pixels)
    if not payload.image:
        raise ApiError(422, "empty upload: the request carried no image bytes; send a PNG or JPEG")
    return load_image(payload.image, max_pixels=limits.max_pixels)


def _decode(predictor, payload: Payload, limits: Limits, then=None) -> tuple[np.ndarray, Preprocessed]:
    grey = grey_levels(payload, limits)
    pre = predictor.preprocess(grey)
    if then is not None and not pre.empty:
        then(pre)  # more work on the same thread: the digit groups of a number (serve/answers.py)
    return grey, pre


def preprocess(predictor, payload: Payload, limits: Limits) -> tuple[np.ndarray, Preprocessed]:
    """Decode the payload once and make it MNIST-like: (grey levels, Preprocessed). This runs in a
    pool of DECODES threads; an image too large by its header is refused before it waits its turn."""
    if payload.image:
        check_size(payload.image, limits.max_pixels)
    with _api_errors():
        grey, pre = _decoders.submit(_decode, predictor, payload, limits).result()
    return grey, _not_empty(pre)


async def preprocess_async(predictor, payload: Payload, limits: Limits, then=None) -> tuple[np.ndarray, Preprocessed]:
    """`preprocess` for an async route; then(pre), if given, runs after a successful decode.

    A small image (up to INLINE_PIXELS: the page's 140x140 drawings, JSON pixels) is decoded right
    here, on the event loop's thread: about a millisecond, and cheaper than handing it to another
    thread (threads contending for the GIL cost more CPU than the decode). Larger images go to the
    pool of DECODES threads, so a photo never holds up the loop and memory stays bounded."""
    pixels = check_size(payload.image, limits.max_pixels) if payload.image else 28 * 28
    with _api_errors():
        if pixels is not None and pixels <= INLINE_PIXELS:
            grey, pre = _decode(predictor, payload, limits, then)
        else:
            grey, pre = await in_pool(_decode, predictor, payload, limits, then)
    return grey, _not_empty(pre)


async def in_pool(fn, *args):
    """fn(*args) on one of the DECODES threads, awaited."""
    return await asyncio.get_running_loop().run_in_executor(_decoders, fn, *args)


@contextmanager
def _api_errors():
    try:
        yield
    except TooLarge as e:
        raise ApiError(413, str(e)) from None
    except TegakiError as e:
        raise ApiError(422, str(e)) from None


def _not_empty(pre: Preprocessed) -> Preprocessed:
    if pre.empty:
        raise ApiError(422, NO_DIGIT, no_digit=True)
    return pre
