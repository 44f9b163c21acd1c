"""Test sets rendered from MNIST test digits: numbers, tight crops, photos, bold pens, ruled paper.

Used by tests/test_number*.py, tests/test_preprocess_photos.py and bench/numbers.py, so that the
figures a bench prints and the bars the tests hold are on the same construction:

  number(digits)      a row of MNIST test digits (white on black, 28x28) composed left to right on a
                      black canvas: each digit enlarged `scale` times (bicubic), its ink's bounding box
                      placed after the previous one with a random gap of `gap` = (lo, hi) pixels (a
                      negative gap makes neighbours overlap, "touching"), a random vertical jitter of
                      up to 4 pixels, and a margin of 12 pixels all round. Returns the canvas and each
                      digit's ink box (x0, y0, x1, y1).
  drawing(canvas)     dark ink on white paper (the canvas inverted), as the page or a scanner makes it
  photo_of(canvas, rng) dark ink on grey paper (about 0.75), blurred (Gaussian, sigma 1), with a
                      lighting gradient across the page (+-0.08), Gaussian noise (sigma 0.02) and
                      8-bit quantisation, as a phone photo
  number_set(...)     n such 4-digit numbers, digits drawn at random from the test set (fixed seed)
  tight(digit)        one digit enlarged 8 times and cropped to its ink's bounding box (ink touching
                      every edge), or with a margin of `margin` pixels
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage


def enlarge(digit: np.ndarray, scale: int) -> np.ndarray:
    """A 28x28 uint8 digit enlarged `scale` times (bicubic), as floats in 0..1."""
    im = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BICUBIC)
    return np.clip(np.asarray(im, np.float64) / 255.0, 0.0, 1.0)


def ink_box(a: np.ndarray, thr: float = 0.25) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(a > thr)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def number(digits: np.ndarray, rng: np.random.Generator, scale: int = 3, gap: tuple[int, int] = (4, 16),
           margin: int = 12) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Digits (N, 28, 28) composed left to right: (canvas in 0..1, white ink on black; ink boxes)."""
    parts = []
    for d in digits:
        big = enlarge(d, scale)
        x0, y0, x1, y1 = ink_box(big, 0.02)
        parts.append(big[y0:y1, x0:x1])
    gaps = rng.integers(gap[0], gap[1] + 1, len(parts) - 1) if len(parts) > 1 else np.zeros(0, int)
    jitter = rng.integers(0, 5, len(parts))
    height = max(p.shape[0] for p in parts) + 4 + 2 * margin
    width = sum(p.shape[1] for p in parts) + int(gaps.sum()) + 2 * margin
    canvas = np.zeros((height, max(width, 2 * margin + 1)))
    x, boxes = margin, []
    for i, p in enumerate(parts):
        y = margin + int(jitter[i])
        region = canvas[y:y + p.shape[0], x:x + p.shape[1]]
        np.maximum(region, p, out=region)
        boxes.append((x, y, x + p.shape[1], y + p.shape[0]))
        x += p.shape[1] + (int(gaps[i]) if i < len(gaps) else 0)
    return canvas, boxes


def to_uint8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def drawing(canvas: np.ndarray) -> np.ndarray:
    """Dark ink on white paper, uint8."""
    return to_uint8(1.0 - canvas)


def photo_of(canvas: np.ndarray, rng: np.random.Generator, paper: float = 0.75, ink: float = 0.15) -> np.ndarray:
    """Dark ink on grey, unevenly lit, blurred and noisy paper, uint8 (see the module docstring)."""
    h, w = canvas.shape
    ramp = np.linspace(-0.08, 0.08, w)[None, :] + np.linspace(-0.03, 0.03, h)[:, None]
    page = (paper + ramp) * (1.0 - canvas) + ink * canvas
    page = ndimage.gaussian_filter(page, 1.0)
    page = page + rng.normal(0.0, 0.02, page.shape)
    return to_uint8(page)


def tight(digit: np.ndarray, scale: int = 8, margin: int = 0) -> np.ndarray:
    """One digit enlarged and cropped to its ink (white on black, 0..1), with `margin` pixels round it."""
    big = enlarge(digit, scale)
    x0, y0, x1, y1 = ink_box(big, 0.02)
    crop = big[y0:y1, x0:x1]
    return np.pad(crop, margin)


def bold(canvas: np.ndarray, radius: int) -> np.ndarray:
    """The strokes widened by `radius` pixels on each side (a felt pen)."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return ndimage.grey_dilation(canvas, footprint=(xx * xx + yy * yy) <= radius * radius)


def ruled(paper: np.ndarray, step: int, squared: bool = False, level: float = 0.7) -> np.ndarray:
    """Paper (dark ink on light, 0..1) with thin lines of grey `level` every `step` pixels: lined
    paper, or squared paper with `squared`. The ink stays on top of the lines."""
    out = paper.copy()
    lines = np.zeros(paper.shape, bool)
    lines[step // 2::step, :] = True
    if squared:
        lines[:, step // 2::step] = True
    out[lines] = np.minimum(out[lines], level)
    return out


def number_set(images: np.ndarray, labels: np.ndarray, n: int, seed: int, gap: tuple[int, int] = (4, 16),
               photo: bool = False) -> list[tuple[np.ndarray, str, list]]:
    """n rendered 4-digit numbers from MNIST test digits drawn at random (no digit twice in a number):
    [(uint8 image, true text, true ink boxes)], as drawings or as photos."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx = rng.choice(len(labels), 4, replace=False)
        canvas, boxes = number(images[idx], rng, gap=gap)
        image = photo_of(canvas, rng) if photo else drawing(canvas)
        out.append((image, "".join(str(v) for v in labels[idx]), boxes))
    return out
