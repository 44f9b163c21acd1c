"""Small numerical helpers shared by every stage (NumPy only, no torch)."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis, stable for large logits (the max is subtracted)."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


MAX_INT_DIGITS = 4300  # Python's own default limit for int(str), which a program may have lifted


def bounded_int(text: str) -> int:
    """int(text) for JSON parsing (json.loads(..., parse_int=bounded_int)): a number of thousands of digits
    is a ValueError whatever sys.set_int_max_str_digits says, so it cannot cost quadratic time."""
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text):,} digits")
    return int(text)


def json_depth(text: bytes | str) -> int:
    """How deeply brackets nest in JSON text ([ and { against ] and }), counted without parsing, so that
    a document nested thousands deep is refused before json.loads, whatever the recursion limit is.
    (Brackets inside strings count too: an over-estimate, never an under-estimate.)"""
    b = np.frombuffer(text.encode() if isinstance(text, str) else text, np.uint8)
    if not len(b):
        return 0
    step = (b == 91).astype(np.int32) + (b == 123) - (b == 93) - (b == 125)  # [ { ] }
    return int(np.cumsum(step).max())
