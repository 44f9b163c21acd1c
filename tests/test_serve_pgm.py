"""The page sends its drawing as a binary PGM ("P5": a short header, then one byte per pixel), made
from the canvas's pixels without waiting on canvas.toBlob. The API reads it, as a multipart file or
as an image/x-portable-graymap body, exactly like the same drawing as a PNG; a damaged PGM is a 4xx."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from sketches import DIGITS, drawing  # tests/sketches.py

from tegaki.predict import bundled_model_path
from tegaki.serve.app import Limits, create_app, serving


@pytest.fixture(scope="module")
def client():
    if bundled_model_path() is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    with serving(create_app(None, limits=Limits(max_pixels=1_000_000))) as url, \
            httpx.Client(base_url=url, timeout=30) as c:
        yield c


def pgm(grey: np.ndarray) -> bytes:
    """What the page's canvasPGM() sends: P5, width height, 255, then the rows."""
    h, w = grey.shape
    return f"P5\n{w} {h}\n255\n".encode() + grey.astype(np.uint8).tobytes()


def as_grey(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


@pytest.mark.parametrize("digit", [0, 3, 7])
def test_a_pgm_drawing_is_read_like_the_png(client, digit):
    png = drawing(DIGITS[digit], size=140)
    grey = as_grey(png)
    ref = client.post("/api/predict", files={"file": ("d.png", png, "image/png")}).json()
    form = client.post("/api/predict", files={"file": ("drawing.pgm", pgm(grey), "image/x-portable-graymap")})
    raw = client.post("/api/predict", content=pgm(grey), headers={"Content-Type": "image/x-portable-graymap"})
    for r in (form, raw):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == ref["label"] == digit
        assert body["input"] == ref["input"]  # the same 28x28: the same pixels, whichever format
        assert np.allclose(body["probabilities"], ref["probabilities"], atol=1e-6)


@pytest.mark.parametrize("data, status", [
    (b"P5\n140 140\n255\n" + b"\xff" * 10, 422),       # truncated: far fewer pixels than the header says
    (b"P5\n140 140\n0\n" + b"\xff" * 140 * 140, 422),  # maxval 0
    (b"P5\n-4 3\n255\n" + bytes(12), 422),             # a negative width
    (b"P5\n", 422),                                    # a header and nothing else
    (b"P5\n4000 4000\n255\n" + bytes(100), 413),       # more pixels than the server allows
])
def test_a_bad_pgm_is_a_4xx(client, data, status):
    for r in (client.post("/api/predict", files={"file": ("drawing.pgm", data, "image/x-portable-graymap")}),
              client.post("/api/predict", content=data, headers={"Content-Type": "image/x-portable-graymap"})):
        assert r.status_code == status, r.text
        assert "\n" not in r.json()["detail"]
