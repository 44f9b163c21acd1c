"""The network's input: pixels 0..255 -> the normalised array every engine is fed.

    x = normalise(images_uint8, {"mean": 0.1307, "std": 0.3081}, (1, 28, 28))   # (N, 1, 28, 28) float32

This is the one place the normalisation is written; the engines' `prepare`, the Predictor,
the run folder, the ONNX exporter and the ONNX engine all call it.
"""

from __future__ import annotations

import numpy as np


def normalise(images: np.ndarray, norm: dict, input_shape, dtype=np.float32) -> np.ndarray:
    """Pixels 0..255 (N, H, W) -> the (N, C, H, W) input a network trained with `norm` expects:
    (pixels / 255 - mean) / std, computed in `dtype` (float32, or float64 for gradient checks)."""
    images = np.asarray(images)
    dtype = np.dtype(dtype)
    x = images.astype(dtype)  # a fresh copy: the arithmetic below runs in place on it
    x /= 255.0
    x -= dtype.type(norm["mean"])
    x /= dtype.type(norm["std"])
    return x.reshape(len(images), *input_shape)
