"""Arrays from Python, made into what the networks take: uint8 images (N, H, W) and int64 labels (N,).

    images = as_images(x)          # uint8 0..255 or float 0..1; (N, 28, 28), (N, 1, 28, 28), (N, 784) or one image
    labels = as_labels(y, len(images), 10)   # class numbers, or one-hot rows

Anything else is one TegakiError saying what was wrong and what to do, before any work is done; an
array that looks like a dark digit on a light background, or far from centred, is used but warned
about (MNIST digits are white on black, centred by their centre of mass), because either gives
confidently wrong answers rather than an error.
"""

from __future__ import annotations

import warnings

import numpy as np

from tegaki.errors import TegakiError


class InputError(TegakiError, ValueError):
    """An array that is not images or labels the network can take."""


class InputWarning(UserWarning):
    """Images that will be used but probably do not look like the training data."""


def _image_size(input_shape) -> tuple[int, int]:
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape[1], shape[2]
    side = int(round(shape[0] ** 0.5))
    return (side, side) if side * side == shape[0] else (1, shape[0])


def as_images(x, input_shape=(1, 28, 28), what: str = "x", warn: bool = True) -> np.ndarray:
    """x as uint8 images (N, H, W) for a network whose input is `input_shape` (C, H, W) or (F,)."""
    h, w = _image_size(input_shape)
    if hasattr(x, "toarray") and hasattr(x, "nnz"):  # a SciPy sparse matrix: np.asarray makes an object scalar
        raise InputError(f"{what} is a sparse matrix; pass a dense array of images ({what}.toarray())")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} is not an array of images ({e})") from None
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{what} holds {a.dtype} values; give uint8 pixels 0..255 or floats 0..1")
    a = _to_batch(a, h, w, what)
    if len(a) == 0:
        raise InputError(f"{what} is empty: give at least one image")
    out = _to_uint8(a, what)
    if warn and min(h, w) >= 8:  # pictures, not feature vectors
        _warn_if_unlike_mnist(out, what)
    return out


def _to_batch(a: np.ndarray, h: int, w: int, what: str) -> np.ndarray:
    shape = a.shape
    if shape == (h, w) or shape == (h * w,) or shape == (1, h, w):
        return a.reshape(1, h, w)  # one image
    if a.ndim == 3 and shape[1:] == (h, w):
        return a
    if a.ndim == 4 and shape[1:] == (1, h, w):
        return a.reshape(len(a), h, w)
    if a.ndim == 2 and shape[1] == h * w:
        return a.reshape(len(a), h, w)
    raise InputError(f"{what} has shape {shape}; give images of shape (N, {h}, {w}), (N, 1, {h}, {w}) or "
                     f"(N, {h * w}), or one image of shape ({h}, {w})")


def _to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{what} holds NaN or infinite values; every pixel must be a number in 0..1")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            hint = ("; divide by 255 (or pass the uint8 array)" if hi <= 255 and lo >= 0 else
                    "; pass raw pixels, not normalised ones: rescale to 0..1 (or uint8 0..255)")
            raise InputError(f"{what}: float pixels must be in 0..1, these go from {lo:g} to {hi:g}{hint}")
        return np.rint(a * 255).astype(np.uint8)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise InputError(f"{what}: integer pixels must be in 0..255, these go from {lo} to {hi}")
    return a.astype(np.uint8, copy=False)


def _warn_if_unlike_mnist(images: np.ndarray, what: str) -> None:
    sample = images[:: max(1, len(images) // 256)].astype(np.float32)  # (n, H, W), at most ~256 images
    border = np.concatenate([sample[:, :2].reshape(len(sample), -1), sample[:, -2:].reshape(len(sample), -1),
                             sample[:, :, :2].reshape(len(sample), -1), sample[:, :, -2:].reshape(len(sample), -1)],
                            axis=1)
    if np.median(border.mean(axis=1)) > 127:
        warnings.warn(f"{what} looks inverted (a light background): MNIST digits are white on black; "
                      f"use 255 - {what} for uint8 pixels (or 1 - {what} for floats)", InputWarning, stacklevel=3)
        return
    mass = sample.sum(axis=(1, 2))
    keep = mass > 0
    if not keep.any():
        return
    h, w = sample.shape[1:]
    rows = (sample[keep].sum(axis=2) * np.arange(h)).sum(axis=1) / mass[keep]
    cols = (sample[keep].sum(axis=1) * np.arange(w)).sum(axis=1) / mass[keep]
    off = np.hypot(rows - (h - 1) / 2, cols - (w - 1) / 2)
    if np.median(off) > 0.15 * max(h, w):
        warnings.warn(f"{what}: the digits are far from centred (median {np.median(off):.1f} px off); MNIST centres "
                      "them by their centre of mass: use predict_image, which does", InputWarning, stacklevel=3)


def as_labels(y, n: int, k: int, what: str = "y") -> np.ndarray:
    """y as int64 class numbers 0..k-1, n of them; one-hot rows (n, k) are accepted too."""
    try:
        a = np.asarray(y)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} is not an array of labels ({e})") from None
    if a.ndim == 2 and a.shape[1] == k and a.shape[0] == n:  # one-hot (Keras' to_categorical)
        a = a.argmax(axis=1)
    if a.ndim != 1:
        raise InputError(f"{what} has shape {a.shape}; give one class number per image, shape ({n},)")
    if len(a) != n:
        raise InputError(f"{what} has {len(a)} labels for {n} images; give one label per image")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{what} holds {a.dtype} values; labels are class numbers 0..{k - 1}")
    if np.issubdtype(a.dtype, np.floating) and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise InputError(f"{what} holds values that are not whole numbers; labels are class numbers 0..{k - 1}")
    if n and (a.min() < 0 or a.max() >= k):
        raise InputError(f"{what} holds labels from {a.min():g} to {a.max():g}; this network has {k} classes, "
                         f"0..{k - 1}")
    return a.astype(np.int64)
