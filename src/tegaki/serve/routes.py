"""The routes, at module level on one APIRouter; each reaches the model and the settings through
the `state` dependency (the app's state, filled by create_app and its lifespan hook).

  GET  /api/health   GET /api/model   POST /api/predict   POST /api/features   GET /api/random
  POST /api/save     GET / (the page)
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from tegaki import png
from tegaki.fileio import atomic_write_bytes
from tegaki.serve.answers import (JSONAnswer, digit_groups, layers_json, look, prediction_json, read_number, to_uint8,
                                  wants_number)
from tegaki.serve.requests import ApiError, Payload, in_pool, preprocess, preprocess_async, read_payload

STATIC = Path(__file__).resolve().parent / "static"
router = APIRouter()


async def state(request: Request):
    """The app's state: predictor, batcher, limits, drawings, folders, mnist, mnist_note. (async: a
    plain def dependency would cost a trip through the thread pool on every request)"""
    return request.app.state


# documentation models (the handlers build their JSON directly, for speed) ----------------------
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
    features: dict[str, Any] | None = Field(None, description="with features=N: {layers: [...], note}")
    number: dict[str, Any] | None = Field(None, description=(
        "two or more digits found in an uploaded image: {text, digits: [{box, label, name, confidence, status, "
        "probabilities}], note}; null for a single digit"))


class ErrorResponse(BaseModel):
    detail: str


ERRORS = {code: {"model": ErrorResponse, "description": why} for code, why in (
    (400, "malformed JSON or multipart body"), (403, "a request from another site, or for another host"),
    (413, "body or image too large"), (415, "unsupported content type"),
    (422, "wrong shape, NaN, unreadable image, or no digit"))}

IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a PNG, JPEG, GIF, BMP, WebP, TIFF or PGM image"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {
        "pixels": {"type": "array", "description": "28x28 nested lists, or 784 numbers; 0..255 or 0..1"},
        "steps": {"type": "boolean", "default": False}}}},
}}}


# routes ----------------------------------------------------------------------------------------
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: what link checkers send
def page():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.head("/api/health", include_in_schema=False)  # HEAD: what uptime monitors send
@router.get("/api/health", summary="Is the server up?")
def health(st=Depends(state)):
    return JSONResponse({"status": "ok", "model": st.predictor.spec.name, "mnist": st.mnist is not None,
                         "saving": st.drawings is not None})


@router.get("/api/model", summary="What the model is: layers, metrics, data provenance, command")
def model_info(st=Depends(state)):
    d = st.predictor.describe()
    d["server"] = {"max_upload_bytes": st.limits.max_upload, "max_pixels": st.limits.max_pixels,
                   "mnist": st.mnist is not None, "mnist_note": None if st.mnist is not None else st.mnist_note,
                   "drawings": str(st.drawings) if st.drawings else None}
    return JSONResponse(json.loads(json.dumps(d, default=str)))


@router.post("/api/predict", summary="Recognise the digit in an image or in 28x28 pixels",
             response_model=PredictResponse, responses=ERRORS, openapi_extra=IMAGE_BODY)
async def predict(st=Depends(state), payload: Payload = Depends(read_payload),
                  steps: bool = Query(False, description="also return the preprocessing steps as PNGs"),
                  top: int = Query(3, ge=1, le=100, description="how many ranked classes to return"),
                  features: int = Query(0, ge=0, le=8, description="also the feature maps of this many conv layers")):
    return JSONAnswer(await predict_answer(st, payload, steps, top, features))


async def predict_answer(st, payload: Payload, steps: bool = False, top: int = 3, features: int = 0) -> dict:
    """The answer of POST /api/predict as a dict (raises ApiError): for the route above and for its
    fast path (serve/fast.py). A small upload is decoded on the event loop, a photo in the decode
    pool (requests.preprocess_async); the network call is shared with the requests whose images are
    ready in the same turn of the event loop (serve/batch.py)."""
    p, found = st.predictor, []

    def groups(pre):  # on the thread that decoded it (a photo's segmentation stays off the event loop)
        found.append(digit_groups(pre, payload.image))

    with st.batcher.coming():
        _, pre = await preprocess_async(p, payload, st.limits, then=groups)
    if features:
        pred, maps = await in_pool(look, p, pre, features)
    else:
        pred = p.from_logits(pre, (await st.batcher.logits(pre.image))[None])
    steps = steps or payload.steps
    if steps:  # PNG-encoded steps: in the pool
        body = await in_pool(prediction_json, pred, p.classes, True, top)
    else:
        body = prediction_json(pred, p.classes, False, top)
    body["number"] = await in_pool(read_number, p, pre, payload.image) if wants_number(found[0], pred) else None
    if features:
        body["features"] = await in_pool(layers_json, maps)
    return body


@router.post("/api/features", summary="Feature maps of the first conv layers for an image",
             responses=ERRORS, openapi_extra=IMAGE_BODY)
def features(st=Depends(state), payload: Payload = Depends(read_payload),
             layers: int = Query(2, ge=1, le=8, description="how many conv layers, from the first")):
    _, pre = preprocess(st.predictor, payload, st.limits)
    pred, maps = look(st.predictor, pre, layers)
    return JSONResponse({"label": pred.label, "input": pred.input.tolist(), **layers_json(maps)})


@router.get("/api/random", summary="A random MNIST test digit, its true label and the prediction",
            responses={404: {"model": ErrorResponse, "description": "no MNIST test set on the server"}})
def random_digit(st=Depends(state), index: int | None = Query(None, ge=0, description="a test image index"),
                 steps: bool = False):
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


@router.post("/api/save", summary="Save the drawing as an example of class N (a folder dataset)",
             responses={**ERRORS, 404: {"model": ErrorResponse, "description": "saving is off"}},
             openapi_extra=IMAGE_BODY)
def save(st=Depends(state), payload: Payload = Depends(read_payload),
         label: int = Query(..., ge=0, description="the class the drawing shows, e.g. 7")):
    if st.drawings is None:
        raise ApiError(404, "saving drawings is off on this server; start 'tegaki serve' with --drawings DIR")
    classes = st.predictor.classes
    if label >= len(classes):
        raise ApiError(422, f"label must be 0..{len(classes) - 1}, got {label}")
    grey, pre = preprocess(st.predictor, payload, st.limits)  # refuses unreadable images and empty drawings
    pred = st.predictor.classify(pre)
    folder = st.drawings / st.folders[label]
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.png"
    try:
        atomic_write_bytes(path, png.encode(to_uint8(grey), fast=True))
    except OSError as e:
        raise ApiError(507, f"could not write {path}: {e.strerror or e}") from None
    count = sum(1 for f in folder.iterdir() if f.suffix == ".png")
    return JSONResponse({"saved": str(path), "label": label, "name": classes[label], "count": count,
                         "folder": str(st.drawings), "subfolder": st.folders[label], "predicted": pred.label,
                         "use": f"tegaki evaluate RUN --dataset folder:{st.drawings}"})


# saving: class names as folder names ------------------------------------------------------------
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def folder_names(classes: list) -> list[str]:
    """One folder name per class, safe on any file system: the class name itself when it is made of
    A-Z a-z 0-9 _ - only (at most 64 characters), else class_NN (NN its index); never empty, never
    '.' or '..', never a path, and unique per class even where case is not significant."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(classes):
        name = str(name)
        cand = name if SAFE_NAME.fullmatch(name) else f"class_{i:02d}"
        k = 1
        while cand.lower() in seen:
            cand = f"class_{i:02d}" + (f"_{k}" if k > 1 else "")
            k += 1
        seen.add(cand.lower())
        out.append(cand)
    return out
