"""Make a drawing, a photo or a scan look like an MNIST digit: the one preprocessing pipeline.

MNIST digits are white ink on black, scaled so the longer side of the ink's bounding box is
20 px (anti-aliased, aspect ratio kept), then placed in a 28x28 field so that the centre of
mass of the intensities is at the centre. `to_mnist` does the same to any image, whichever way
round its ink is (a drawing or a photo of dark ink on light paper, or an MNIST-like white on
black), whatever its size, colour and position, and returns every intermediate step:

  grey      the image as grey levels in 0..1 (alpha composited onto white, or onto black under
            light ink; colour -> luma; photos larger than WORK_SIDE are reduced by area averaging,
            so thin lines fade but do not vanish)
  ink       ink as 1 and paper as 0: inverted when the paper is light; the paper's level is
            subtracted (estimated locally when the lighting is uneven, which is judged from that
            estimate, not from the border: a tight crop's strokes cross its border), the contrast
            stretched to the ink's level, and faint noise below the measured noise floor dropped
            (the floor measured on the paper's own pixels when ink covers much of the image: a
            tight crop, a bold pen); specks far from the digit are removed
  cropped   the ink's bounding box
  strokes   the crop at a working resolution (at most 4x the final box), with its strokes
            thickened or thinned when they are far thinner or thicker than MNIST's (a fine pen
            line in a big photo ends up a faint hair at 20 px; MNIST strokes are about 2 px)
  resized   longer side 20 px, anti-aliased
  centred   28x28, centre of mass at the centre: the network's input (as uint8 0..255)

An input with no ink is "no digit" (`Preprocessed.empty`), not a guess. An already
MNIST-like 28x28 digit comes out (nearly) unchanged. `from_ink` runs the steps from "cropped" on
for one digit's ink (each digit of a number: tegaki/data/segment.py).
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from tegaki.errors import TegakiError

#: refuse images with more pixels than this (decompression bombs); a phone photo is about 12 MP
MAX_PIXELS = 40_000_000
#: refuse images more than this many times longer one way than the other (a row of digits is about 10:1); a
#: thinner one holds no digit, and its blocks would be padded to squares far larger than its pixel count
MAX_ASPECT = 50
#: the longest side of the ink after scaling, and the field it is placed in
BOX, FIELD = 20, 28
#: photos are reduced (by area averaging) to about this longer side before anything else
WORK_SIDE = 1024
#: strokes are measured and adjusted at up to this many times the box's resolution
OVERSAMPLE = 4
#: stroke widths at the 20-px box scale, as measured by `stroke_width` (MNIST's test digits:
#: 5th percentile 1.2, median 1.8, 95th percentile 2.9): thinner than THIN is thickened to
#: TARGET (a little above the median: the estimate reads diagonal strokes thin), thicker than
#: THICK is thinned to THICK_TARGET
THIN, TARGET, THICK, THICK_TARGET = 1.25, 2.0, 4.0, 3.0
#: image formats decoded (Pillow's names); nothing exotic, so no rarely used decoder is exposed
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")  # PPM: also PGM, the page's drawings


class TooLarge(TegakiError):
    """The image has more pixels than allowed (a decompression bomb, or a photo to scale down)."""


@dataclass
class Preprocessed:
    image: np.ndarray | None  # (28, 28) uint8, white ink on black; None when empty
    empty: bool
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # name -> 2-D float array in 0..1
    info: dict = field(default_factory=dict)  # measurements: polarity, noise, stroke width, scale ...


# decoding --------------------------------------------------------------------------------------
@contextmanager
def no_bomb_warning():
    """Pillow's DecompressionBombWarning silenced: the caller's max_pixels is the limit, said in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def load_image(source, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] | None = FORMATS,
               work_side: int | None = WORK_SIDE) -> np.ndarray:
    """Decode an image (path, bytes, PIL image or array) to grey levels in 0..1, shape (H, W).

    The pixel count is checked from the header before anything is decoded, so a decompression
    bomb costs nothing. Images larger than `work_side` are reduced by area averaging (JPEGs
    while decoding, which is much faster).
    """
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_aspect("array", source.shape[1], source.shape[0])
        return _shrink(array_to_grey(source), work_side)
    if isinstance(source, Image.Image):
        _check_aspect("image", *source.size)
        return _shrink(_pil_to_grey(source), work_side)
    if not isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):  # an int would open a descriptor
        raise TegakiError(f"cannot read an image from {type(source).__name__} {str(source)[:40]!r}; give a file path, "
                          "bytes, a PIL image or an array")
    name = "upload" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(source)
    else:
        fp = _open_file(source, name)
    with fp, no_bomb_warning():
        if fp.seek(0, io.SEEK_END) == 0:
            raise TegakiError(f"{name}: empty file; use a PNG or JPEG image")
        fp.seek(0)
        try:
            with Image.open(fp, formats=formats) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise TooLarge(f"{name}: image is {w}x{h} pixels, more than the {max_pixels:,} allowed; "
                                      "scale it down first")
                if w < 1 or h < 1:
                    raise TegakiError(f"{name}: image has no pixels ({w}x{h})")
                _check_aspect(name, w, h)
                if work_side and im.format == "JPEG" and max(w, h) > 2 * work_side:
                    im.draft("L", (max(1, w * work_side // max(w, h)), max(1, h * work_side // max(w, h))))
                im.load()
                im = ImageOps.exif_transpose(im)
                return _shrink(_pil_to_grey(im), work_side)
        except TegakiError:
            raise
        except Image.DecompressionBombError:
            raise TooLarge(f"{name}: image has far too many pixels (more than the {max_pixels:,} allowed); "
                              "scale it down first") from None
        except UnidentifiedImageError:
            allowed = ", ".join(formats or ("any format Pillow reads",))
            raise TegakiError(f"{name}: not an image, or not one of the formats read here ({allowed}); "
                              "use a PNG or JPEG") from None
        except Exception as e:  # a damaged file can make a decoder fail in many ways; all mean the same here
            msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise TegakiError(f"{name}: corrupt or truncated image ({msg}); save it again and retry") from None


def _pil_to_grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] == 255:
        # opaque: nothing to composite; Pillow's RGBA -> L ignores alpha (the same weights as RGB -> L)
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        # laid on paper that shows the ink: white under dark ink, black under light ink (a white pen on a
        # transparent canvas, which on white would vanish)
        grey = np.asarray(im.convert("L"), dtype=np.float64)
        alpha = np.asarray(im.getchannel("A"), dtype=np.float64) / 255.0
        light_ink = (grey * alpha).sum() > 127.5 * max(alpha.sum(), 1e-9)
        paper = Image.new("RGBA", im.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
        im = Image.alpha_composite(paper, im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        return (a / max(a.max(), 1.0)).astype(np.float32)
    if im.mode == "F":
        return array_to_grey(np.asarray(im))
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def array_to_grey(a: np.ndarray) -> np.ndarray:
    """An array of intensities (H x W, or H x W x 3/4; 0..1 floats or 0..255) to grey in 0..1."""
    a = np.asarray(a)
    if a.dtype == np.float32 and a.ndim == 2 and a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        return a.copy()  # grey levels already (what load_image gives): the checks below would not change them
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TegakiError(f"image values must be numbers, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3].astype(np.float64).mean(axis=2)
    if a.ndim == 1 and a.size == 784:
        a = a.reshape(28, 28)
    if a.ndim != 2:
        raise TegakiError(f"expected a 2-D image (H x W), or 784 values, got shape {a.shape}")
    if a.size == 0:
        raise TegakiError("empty image (no pixels)")
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


def _open_file(path, name: str):
    """An image file opened for reading; a folder, a pipe, a device or a missing file is one TegakiError."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise TegakiError(f"{name}: is a folder, not an image")
        if not stat.S_ISREG(mode):  # a pipe or a device would block, or never end
            raise TegakiError(f"{name}: not a regular file (a pipe or a device?); give an image file")
        return open(path, "rb")
    except OSError as e:
        raise TegakiError(f"{name}: cannot open ({e.strerror or e})") from None


def _check_aspect(name: str, w: int, h: int) -> None:
    if min(w, h) >= 1 and max(w, h) > MAX_ASPECT * min(w, h):
        raise TegakiError(f"{name}: image is {w}x{h} pixels, more than {MAX_ASPECT} times longer one way than the "
                          "other; crop it around the digits")


def _shrink(grey: np.ndarray, work_side: int | None) -> np.ndarray:
    """Reduce by an integer factor (area average) until the longer side is at most about work_side."""
    if not work_side or max(grey.shape) <= work_side * 3 // 2:
        return grey
    f = math.ceil(max(grey.shape) / work_side)
    h, w = grey.shape[0] // f * f, grey.shape[1] // f * f
    if h == 0 or w == 0:
        return grey
    return grey[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)  # (H/f, W/f)


# ink -------------------------------------------------------------------------------------------
def _border(a: np.ndarray) -> np.ndarray:
    b = max(1, min(a.shape) // 50)  # a band 2% of the image wide
    return np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])


def paper_level(light: np.ndarray) -> np.ndarray | float:
    """The paper's brightness (ink dark), as one number, or per pixel when the lighting is uneven.

    The local estimate is the brightest value in a window a quarter of the image wide (wider
    than any stroke; of the longer side), computed on a reduced copy, smoothed and enlarged back. The paper is judged
    uneven only when that estimate itself varies: a border crossed by ink (a tight crop, whose
    strokes touch the edges) spreads the border's levels but leaves evenly lit paper even.
    """
    border = np.sort(_border(light))
    n = len(border) - 1
    lo, hi, mid = border[round(0.1 * n)], border[round(0.9 * n)], float(border[n // 2])
    if hi - lo < 0.03:
        return mid
    if min(light.shape) < 32:  # too small to estimate locally: the border's paper (ink may cross it)
        return float(hi)
    f = max(1, min(light.shape) // 64)
    h, w = light.shape[0] // f * f, light.shape[1] // f * f
    small = light[:h, :w].reshape(h // f, f, w // f, f).max(axis=(1, 3))  # (h/f, w/f): ink thinner than f gone
    k = max(3, max(small.shape) // 4)
    bg = ndimage.maximum_filter(small, size=k, mode="nearest")
    bg = ndimage.uniform_filter(bg, size=k, mode="nearest")
    b5, b50, b95 = np.percentile(bg, [5, 50, 95])
    if b95 - b5 < 0.03:  # evenly lit: the paper is where the brightest pixels are, everywhere
        return float(b50)
    big = Image.fromarray(bg.astype(np.float32), mode="F").resize(light.shape[::-1], Image.BILINEAR)
    return np.asarray(big, dtype=np.float32)  # (H, W)


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """The threshold that best splits values into two classes (Otsu: most variance between them)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)  # (bins-1,): pixels at or below each cut
    w1 = counts.sum() - w0
    m = np.cumsum(counts * centres)[:-1]
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] + counts[-1] * centres[-1] - m) / np.maximum(w1, 1)
    return float(edges[1:-1][np.argmax(w0 * w1 * (mu0 - mu1) ** 2)])


def paper_noise(d: np.ndarray) -> tuple[float, float]:
    """(typical level, robust spread) of the paper in d (how much darker than the paper each pixel is).

    Measured on all pixels, which are mostly paper; when ink covers much of the image (a tight crop,
    a bold pen) and stands clearly apart, on the pixels below the Otsu split between paper and ink.
    """
    sample = d.ravel()[:: max(1, d.size // 20_000)]  # plenty for a median, and fast
    if np.count_nonzero(sample == 0.0) > sample.size // 2 + 1:
        # clean paper (a drawing): more than half the pixels are exactly the paper's level, so the
        # median and the median absolute deviation below are both exactly 0; counting is cheaper
        return 0.0, 0.0

    def spread(v: np.ndarray) -> tuple[float, float]:
        med = float(np.median(v))
        return med, 1.4826 * float(np.median(np.abs(v - med)))

    med, noise = spread(sample)
    if noise == 0.0:  # clean paper (a drawing): the paper-only estimate below could not be lower
        return med, noise
    t = otsu(sample)
    paper, ink = sample[sample <= t], sample[sample > t]
    if paper.size < 0.2 * sample.size or ink.size == 0:
        return med, noise
    pmed = float(np.median(paper))
    # one-sided: from the paper's darker half only, as a blurred stroke's rim spreads the lighter one
    pnoise = (pmed - float(np.percentile(paper, 25))) / 0.6745
    if float(ink.mean()) - pmed > max(0.1, 6.0 * pnoise) and pnoise < noise:  # two clear classes
        return pmed, pnoise
    return med, noise


def ink_map(grey: np.ndarray, info: dict | None = None) -> np.ndarray:
    """Ink as 1 and background as 0, whichever way round the image is; faint noise dropped."""
    info = {} if info is None else info
    dark_paper = float(np.median(_border(grey))) < 0.5
    info["polarity"] = "light ink on dark" if dark_paper else "dark ink on light"
    light = 1.0 - grey if dark_paper else grey  # from here on: dark ink on light paper
    paper = paper_level(light)
    info["paper"] = "uneven (estimated locally)" if isinstance(paper, np.ndarray) else round(float(paper), 3)
    d = (paper - light).astype(np.float32)  # (H, W): how much darker than the paper
    med, noise = paper_noise(d)
    floor = max(med, 0.0) + 4.0 * noise + 0.01
    d -= floor
    np.maximum(d, 0.0, out=d)
    pos = d[d > 0]
    peak = float(np.percentile(pos, 99)) if pos.size else 0.0
    info["noise"] = round(noise, 4)
    info["contrast"] = round(peak, 4)
    if peak < max(0.06, 6.0 * noise):  # nothing stands out from the paper
        return np.zeros_like(d)
    d *= np.float32(1.0 / peak)
    return np.minimum(d, 1.0, out=d)  # (H, W) in 0..1


def ink_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), ends exclusive: the box around the nonzero pixels of a 2-D array (ink maps
    are never negative), or None when there are none."""
    ys, xs = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if ys.size == 0:
        return None
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def _block_max(a: np.ndarray, f: int) -> np.ndarray:
    """Maximum over f x f blocks (the last partial blocks included)."""
    if f == 1:
        return a
    h, w = -(-a.shape[0] // f) * f, -(-a.shape[1] // f) * f
    p = np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1])))
    return p.reshape(h // f, f, w // f, f).max(axis=(1, 3))


def remove_specks(ink: np.ndarray, keep: float = 0.05) -> np.ndarray:
    """Keep only the digit: clumps of clear ink with at least `keep` of the largest clump's ink.

    Clumps are found on a slightly dilated mask of clear ink (>= 0.25), so the pieces of a broken
    faint line stay together and the faint anti-aliased rim next to a stroke is kept; specks,
    haze and shadows away from the strokes are dropped. Large images are analysed in blocks.
    """
    mask = ink >= 0.25
    if not mask.any():
        return np.zeros_like(ink)
    f = max(1, -(-max(ink.shape) // 320))  # blocks: at most 320 of them along the longer side
    grow = max(3, round(0.02 * -(-max(ink.shape) // f)) | 1)  # odd, in blocks
    if f == 1:  # a small image: the work is done on the box around the clear ink and its surroundings
        y0, y1, x0, x1 = ink_box(mask)
        r = grow // 2
        y0, y1, x0, x1 = max(0, y0 - r), min(ink.shape[0], y1 + r), max(0, x0 - r), min(ink.shape[1], x1 + r)
        out = np.zeros(ink.shape, np.float32)
        part = ink[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = np.where(_near_clumps(mask[y0:y1, x0:x1], part, grow, keep), part, 0.0)
        return out
    near = _near_clumps(_block_max(mask, f), _block_max(ink, f), grow, keep)
    near = np.repeat(np.repeat(near, f, axis=0), f, axis=1)[: ink.shape[0], : ink.shape[1]]  # (H, W)
    return np.where(near, ink, 0.0).astype(np.float32)


def _near_clumps(mask: np.ndarray, weight: np.ndarray, grow: int, keep: float) -> np.ndarray:
    """The clear ink's surroundings (a maximum filter of size grow: zeros beyond the edges, which for a
    maximum is what reflecting the edge gives) in the clumps holding at least `keep` of the largest's ink."""
    near = ndimage.maximum_filter(mask, size=grow, mode="constant", cval=0)  # clear ink and its surroundings
    labels, n = ndimage.label(near, structure=np.ones((3, 3), bool))
    if n > 1:
        mass = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=n + 1)[1:]  # (n,)
        table = np.concatenate([[False], mass >= keep * mass.max()])  # label -> kept?
        near = table[labels]
    return near


# strokes ---------------------------------------------------------------------------------------
def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink's mass over the length of its outline.

    A stroke of width w and length L has mass w*L and an outline of about 2L, counted as the
    horizontal and vertical transitions of the mask (so diagonal strokes read a little thinner).
    """
    m = (ink >= 0.5).astype(np.int8)
    edges = (np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
             + m[0].sum() + m[-1].sum() + m[:, 0].sum() + m[:, -1].sum())
    return 2.0 * float(ink.sum()) / max(int(edges), 1)


def _disk(r: float) -> np.ndarray:
    n = int(math.floor(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    return (xx * xx + yy * yy) <= r * r + 1e-9  # (2n+1, 2n+1)


def _resize(a: np.ndarray, w: int, h: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), resample), dtype=np.float32)


def adjust_strokes(crop: np.ndarray, info: dict | None = None) -> np.ndarray:
    """The crop at up to OVERSAMPLE x the box's resolution, strokes brought into MNIST's range."""
    info = {} if info is None else info
    h, w = crop.shape
    side = OVERSAMPLE * BOX
    work = crop
    if max(h, w) > side:  # area averaging: a line thinner than a pixel here becomes fainter, not lost
        s = side / max(h, w)
        work = _resize(crop, max(1, round(w * s)), max(1, round(h * s)), Image.BOX)
        pos = work[work > 0.02]
        peak = float(np.percentile(pos, 99)) if pos.size else 1.0
        work = np.clip(work / max(peak, 1e-6), 0.0, 1.0)
    scale = BOX / max(work.shape)  # box pixels per work pixel
    width = stroke_width(work) * scale  # in box pixels
    info["stroke_width"] = round(width, 2)
    info["stroke"] = "kept"
    if width < THIN:
        r = (TARGET - width) / scale / 2  # work pixels to add on each side
        if r >= 0.5:
            # pad first: a dilated stroke may grow beyond the crop
            p = int(math.ceil(r))
            work = ndimage.grey_dilation(np.pad(work, p), footprint=_disk(r))
            info["stroke"] = f"thickened by {2 * r * scale:.1f} px"
    elif width > THICK:
        r = (width - THICK_TARGET) / scale / 2
        if r >= 0.5:
            thinner = ndimage.grey_erosion(work, footprint=_disk(r))
            if thinner.sum() > 0.3 * work.sum():  # never erode a digit away
                work = thinner
                info["stroke"] = f"thinned by {2 * r * scale:.1f} px"
    return work


# the whole pipeline ----------------------------------------------------------------------------
def _crop(ink: np.ndarray) -> np.ndarray | None:
    box = ink_box(ink)
    return None if box is None else ink[box[0]: box[1], box[2]: box[3]]


def to_mnist(source, max_pixels: int = MAX_PIXELS, formats: tuple[str, ...] | None = FORMATS,
             strokes: bool = True) -> Preprocessed:
    """Normalise any image the way MNIST was made; see the module docstring for the steps.

    `strokes=False` leaves stroke widths as they are (for comparison).
    """
    info: dict = {}
    grey = load_image(source, max_pixels=max_pixels, formats=formats)
    info["size"] = list(grey.shape)
    ink = ink_map(grey, info)
    ink = remove_specks(ink)
    info["source_size"] = list(image_size(source) or grey.shape)
    steps = {"grey": grey, "ink": ink}
    total = float(ink.sum())
    # no ink at all, or a few stray pixels: no digit
    if total < 1.0 or total < 2e-5 * ink.size:
        return Preprocessed(None, True, steps, info)
    return from_ink(ink, info, steps, strokes)


def from_ink(ink: np.ndarray, info: dict | None = None, steps: dict | None = None,
             strokes: bool = True) -> Preprocessed:
    """An ink map (ink 1, background 0; one digit) -> the MNIST-like 28x28 input: the steps from
    "cropped" on (the whole image's pipeline, and each digit of a number, go through here)."""
    info = {} if info is None else info
    steps = {} if steps is None else steps
    crop = _crop(ink)
    if crop is None:
        return Preprocessed(None, True, steps, info)
    steps["cropped"] = crop
    work = adjust_strokes(crop, info) if strokes else crop
    # trim what dilation padded on, so the box fits the (adjusted) ink exactly
    work = _crop(work)
    steps["strokes"] = work
    h, w = work.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.clip(_resize(work, nw, nh, Image.LANCZOS), 0.0, 1.0) if (nh, nw) != (h, w) else work.copy()
    steps["resized"] = resized
    info["scale"] = round(scale, 4)
    # place the box so that its centre of mass lands on the field's centre: MNIST's digits have
    # theirs at pixel (14, 14) (row and column indices; measured on the test set: 13.99, 14.01)
    mass = float(resized.sum())
    cy = float((resized.sum(axis=1) * np.arange(nh)).sum()) / mass
    cx = float((resized.sum(axis=0) * np.arange(nw)).sum()) / mass
    top = int(np.clip(round(FIELD / 2 - cy), 0, FIELD - nh))
    left = int(np.clip(round(FIELD / 2 - cx), 0, FIELD - nw))
    centred = np.zeros((FIELD, FIELD), np.float32)
    centred[top: top + nh, left: left + nw] = resized
    steps["centred"] = centred
    return Preprocessed((centred * 255.0).round().astype(np.uint8), False, steps, info)


def image_size(source) -> tuple[int, int] | None:
    """The (height, width) of the image as given (before any reduction; EXIF rotation applied), read
    from the header only; None when it cannot be read (load_image says why)."""
    if isinstance(source, np.ndarray):
        return (28, 28) if source.ndim == 1 else (int(source.shape[0]), int(source.shape[1]))
    try:
        if isinstance(source, Image.Image):
            im, close = source, False
        else:
            data = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
            im, close = Image.open(data, formats=FORMATS), True
        try:
            w, h = im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
        finally:
            if close:
                im.close()
    except Exception:  # noqa: BLE001  an unreadable image: load_image gives the one-line reason
        return None
    return (w, h) if turned else (h, w)
