"""Small numerical helpers shared by every stage (NumPy only, no torch)."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis, stable for large logits (the max is subtracted)."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
