"""PNG bytes, written once: pixel arrays and PIL images to PNG, and PNG to a data URL.

Figures (matplotlib) are rendered by `tegaki.figures.to_png`; every other picture that tegaki
sends or embeds (the page's 28x28 input, galleries of filters and maps in the report) goes
through `encode` here.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def encode(image, fast: bool = False) -> bytes:
    """A PIL image, or a 2-D (H, W) / 3-D (H, W, 3) uint8 array, as PNG bytes.

    fast=True trades size for speed (zlib level 1: what a server answering every stroke wants);
    otherwise the smallest file (for pictures embedded in a report).
    """
    from PIL import Image

    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    if fast:
        im.save(buf, format="PNG", compress_level=1)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    """PNG bytes as a `data:image/png;base64,...` URL (for <img src> in a page or a report)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
