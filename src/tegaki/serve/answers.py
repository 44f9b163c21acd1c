"""The JSON the API answers with: predictions, preprocessing steps and feature-map mosaics.

Every PNG goes through tegaki.png (encode, data_url). `look` classifies a preprocessed image and,
when asked, takes the first conv layers' feature maps from the same forward pass.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
from fastapi.responses import JSONResponse
from PIL import Image

from tegaki import png
from tegaki.data.preprocess import Preprocessed, image_size
from tegaki.data.segment import group_count
from tegaki.predict import Prediction, Predictor

STEP_SIDE = 280  # steps larger than this are shown reduced


def json_bytes(body) -> bytes:
    """An answer as compact JSON (orjson: about 8 times faster than json for a prediction's 28x28
    input; NaN and infinity become null)."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONAnswer(JSONResponse):
    """A JSONResponse encoded by json_bytes."""

    def render(self, content) -> bytes:
        return json_bytes(content)


def png_url(a: np.ndarray, side: int | None = None) -> tuple[str, int, int]:
    """A 2-D array (floats 0..1 or uint8) as a PNG data URL, reduced to fit `side` if larger."""
    im = Image.fromarray(to_uint8(a), mode="L")
    if side and max(im.size) > side:
        s = side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BOX)
    return png.data_url(png.encode(im, fast=True)), im.width, im.height


def to_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype == np.uint8 else (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)


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
        # "digit" | "not sure" | "not a digit" (calibrated confidence and the out-of-distribution score)
        "status": pred.status, "score": pred.score,
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
        url, w, h = png_url(a, STEP_SIDE)
        out.append({"name": name, "width": w, "height": h, "shape": list(np.shape(a)), "png": url})
    return out


def layers_json(maps: list[tuple[str, str, np.ndarray]]) -> dict:
    """[(conv, layer read, (C, H, W) maps)] -> {"layers": [...mosaics...], "note": ...}."""
    out = []
    for conv, read, a in maps:
        img, rows, cols = mosaic(a)
        url, w, h = png_url(img)
        out.append({"name": conv, "read": read, "shape": list(a.shape), "rows": rows, "cols": cols,
                    "width": w, "height": h, "png": url})
    return {"layers": out, "note": None if out else "this network has no conv layers"}


def look(p: Predictor, pre: Preprocessed, layers: int = 0) -> tuple[Prediction, list[tuple[str, str, np.ndarray]]]:
    """Classify a (non-empty) preprocessed image; with layers > 0 also the feature maps of the first
    `layers` conv layers, [(conv, layer read, (C, H, W) float32)], from the same forward pass."""
    maps, logits = p.maps_and_logits(pre.image, layers) if layers else ([], None)
    if logits is None:
        return p.classify(pre), []
    return p.from_logits(pre, logits), maps  # calibrated, with its status


def digit_groups(pre: Preprocessed, image: bytes | None) -> int | None:
    """How many digit groups an uploaded image's ink holds (tegaki/data/segment.py); None where no
    number is read at all (JSON pixels, a 28x28 image)."""
    ink = pre.steps.get("ink")
    if not image or ink is None or ink.shape == (28, 28):
        return None
    return group_count(ink)


def wants_number(groups: int | None, pred: Prediction) -> bool:
    """The "number" field is read for two or more groups, or one read as unsure (perhaps touching
    digits). One group of ink read surely as a whole (the page's usual drawing) is the image's digit,
    read already: it costs no second network call. Then read_number: None unless Number.several
    (fewer than two digits, or pieces mostly "not a digit")."""
    return bool(groups) and (groups >= 2 or pred.status != "digit")


def read_number(p: Predictor, pre: Preprocessed, image: bytes) -> dict | None:
    pre.info["source_size"] = list(image_size(image) or pre.steps["ink"].shape)  # the upload's size
    number = p.read_numbers([pre])[0]
    return number.as_dict(p.classes) if number.several else None
