"""Make a drawing, a photo or a scan look like an MNIST digit.

MNIST digits are white ink on black, scaled so the longer side of the ink's bounding box is
20 px (anti-aliased, aspect ratio kept), then placed in a 28x28 field so that the centre of
mass of the intensities is at the centre. `to_mnist` does the same to any image:

  grey        -> the image as grey levels in 0..1 (alpha composited onto white)
  ink         -> ink as 1, background as 0: inverted when the background is light, the paper's
                 level subtracted, contrast stretched, faint noise dropped
  cropped     -> the ink's bounding box
  resized     -> longer side 20 px, anti-aliased
  centred     -> 28x28, centre of mass at the centre (the network's input, uint8 0..255)

An input with no ink is "no digit" (`Preprocessed.empty`), not a guess.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tegaki.errors import TegakiError

#: refuse images with more pixels than this (decompression bombs); a phone photo is about 12 MP
MAX_PIXELS = 40_000_000
#: ink fainter than this fraction of the strongest ink is treated as background noise
NOISE = 0.2
#: the longest side of the ink after scaling, and the field it is placed in
BOX, FIELD = 20, 28


@dataclass
class Preprocessed:
    image: np.ndarray | None  # (28, 28) uint8, white ink on black; None when empty
    empty: bool
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # name -> 2-D float array in 0..1


def load_image(source) -> np.ndarray:
    """Decode an image (path, bytes, PIL image or array) to grey levels in 0..1, shape (H, W)."""
    if isinstance(source, np.ndarray):
        return array_to_grey(source)
    if isinstance(source, Image.Image):
        return _pil_to_grey(source)
    name = "upload" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise TegakiError(f"{name}: cannot open ({e.strerror or e})") from None
    with fp:
        try:
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise TegakiError(f"{name}: image is {w}x{h} pixels, more than the {MAX_PIXELS:,} allowed; "
                                      "scale it down first")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _pil_to_grey(im)
        except TegakiError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise TegakiError(f"{name}: not a readable image ({str(e).splitlines()[0][:120]}); "
                              "use PNG, JPEG, BMP, GIF or WebP") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise TegakiError(f"{name}: corrupt or truncated image ({str(e)[:120]})") from None


def _pil_to_grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        return (a / max(a.max(), 1.0)).astype(np.float32)
    if im.mode == "F":
        return array_to_grey(np.asarray(im))
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def array_to_grey(a: np.ndarray) -> np.ndarray:
    """An array of intensities (H x W, or H x W x 3/4; 0..1 floats or 0..255) to grey in 0..1."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3].astype(np.float64).mean(axis=2)
    if a.ndim == 1 and a.size == 784:
        a = a.reshape(28, 28)
    if a.ndim != 2:
        raise TegakiError(f"expected a 2-D image (H x W), or 784 values, got shape {a.shape}")
    if a.size == 0 or min(a.shape) < 1:
        raise TegakiError("empty image")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise TegakiError("image values must be finite numbers (found NaN or infinity)")
    if a.min() < 0:
        raise TegakiError(f"image values must be >= 0, found {a.min():g}")
    if a.max() > 1.0:
        if a.max() > 255:
            raise TegakiError(f"image values must be in 0..1 or 0..255, found {a.max():g}")
        a = a / 255.0
    return a.astype(np.float32)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Ink as 1 and background as 0, whichever way round the image is."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    bg = float(np.median(border))
    ink = 1.0 - grey if bg > 0.5 else grey.copy()
    level = 1.0 - bg if bg > 0.5 else bg  # the paper's level, in ink units
    ink = np.clip((ink - level) / max(1.0 - level, 1e-6), 0.0, 1.0)
    peak = float(np.percentile(ink[ink > 0], 99)) if (ink > 0).any() else 0.0
    if peak < 0.08:  # nothing that stands out from the paper
        return np.zeros_like(ink)
    ink = np.clip(ink / peak, 0.0, 1.0)
    ink[ink < NOISE] = 0.0
    return ink


def to_mnist(source) -> Preprocessed:
    """Normalise any image the way MNIST was made; see the module docstring for the steps."""
    grey = load_image(source)
    ink = ink_map(grey)
    steps = {"grey": grey, "ink": ink}
    ys, xs = np.nonzero(ink)
    if len(ys) == 0 or ink.sum() < 1e-3 * max(ink.shape) or ink.sum() < 1.0:
        return Preprocessed(None, True, steps)
    crop = ink[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    steps["cropped"] = crop
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize((nw, nh), Image.LANCZOS))
    resized = np.clip(resized, 0.0, 1.0)
    steps["resized"] = resized
    # place the box so that its centre of mass lands on the field's centre
    total = resized.sum()
    cy = (resized.sum(axis=1) * np.arange(nh)).sum() / total
    cx = (resized.sum(axis=0) * np.arange(nw)).sum() / total
    top = int(np.clip(round((FIELD - 1) / 2 - cy), 0, FIELD - nh))
    left = int(np.clip(round((FIELD - 1) / 2 - cx), 0, FIELD - nw))
    field_ = np.zeros((FIELD, FIELD), np.float32)
    field_[top: top + nh, left: left + nw] = resized
    steps["centred"] = field_
    return Preprocessed((field_ * 255.0).round().astype(np.uint8), False, steps)
