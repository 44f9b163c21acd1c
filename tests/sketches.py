"""Digits drawn the way a person draws them on the page: polylines on its 280x280 canvas, and the
PNG the page would send. The API tests and bench/load_test.py post these (test data: it lives in tests/).

    png = drawing(DIGITS[7])                 # a 280x280 RGBA PNG
    png = drawing(DIGITS[7], size=140)       # drawn at 280, sent at 140x140 as the page does
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280  # the page's canvas, in CSS pixels


def arc(cx, cy, rx, ry, a0, a1, n=24):
    """Points on an ellipse from angle a0 to a1 (degrees)."""
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(math.radians(a0), math.radians(a1), n)]


DIGITS = {
    0: [arc(140, 140, 60, 95, 0, 360, 40)],
    1: [[(150, 40), (138, 240)]],
    2: [arc(140, 95, 55, 50, 200, 390, 20) + [(85, 240), (205, 240)]],
    3: [arc(135, 90, 50, 45, 210, 450, 20) + arc(135, 185, 58, 52, 270, 495, 20)],
    4: [[(170, 40), (80, 170), (215, 170)], [(170, 40), (170, 250)]],
    5: [[(195, 45), (100, 45), (92, 130)] + arc(135, 170, 62, 60, 230, 480, 24)],
    6: [[(180, 40), (120, 110), (85, 185)] + arc(140, 185, 55, 55, 180, 540, 30)],
    7: [[(80, 50), (200, 50), (120, 240)]],
    8: [arc(140, 90, 45, 48, 90, 450, 30), arc(140, 188, 55, 52, -90, 270, 30)],
    9: [arc(140, 95, 52, 52, 0, 360, 30), [(192, 95), (175, 245)]],
}


def drawing(strokes, width: int = 18, canvas: int = CANVAS, size: int | None = None, fmt: str = "PNG") -> bytes:
    """Black round-ended strokes on a white `canvas` x `canvas` RGBA image, resized to `size` x `size`
    if given, saved as `fmt` (PNG as the page does; JPEG, BMP ... as other clients might)."""
    im = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    d = ImageDraw.Draw(im)
    r = width / 2
    for s in strokes:
        d.line([tuple(p) for p in s], fill=(0, 0, 0, 255), width=width, joint="curve")
        for x, y in (s[0], s[-1]):
            d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 0, 0, 255))
    if size and size != canvas:
        im = im.resize((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    (im if fmt == "PNG" else im.convert("RGB")).save(buf, fmt)
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG of width x height pixels in a few KB: a decompression bomb when large."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    comp = zlib.compressobj(9)
    rows = bytes(1 + (width + 7) // 8) * 500
    idat = b"".join([comp.compress(rows) for _ in range(height // 500)] + [comp.flush()])
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
