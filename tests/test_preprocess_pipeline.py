"""The one preprocessing pipeline (tegaki.data.preprocess): drawings, photos and MNIST-like inputs.

References: MNIST itself (its digits must come out unchanged), hand-computed geometry (a bar of
known size and place), and invariances (the same digit inverted, moved, enlarged, on uneven
paper, with a speck beside it must give the same 28x28 input).
"""

from __future__ import annotations

import io
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tegaki.data.preprocess import FIELD, TooLarge, array_to_grey, load_image, paper_noise, stroke_width, to_mnist
from tegaki.errors import TegakiError


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    m = a.sum()
    return (a.sum(1) * np.arange(a.shape[0])).sum() / m, (a.sum(0) * np.arange(a.shape[1])).sum() / m


def bbox(a: np.ndarray, thr: int = 0) -> tuple[int, int]:
    ys, xs = np.nonzero(a > thr)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def on_paper(digit: np.ndarray, scale: int, size: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """An MNIST digit enlarged `scale` times, dark ink on white paper of `size`, top-left at `at`."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BICUBIC), np.float64)
    page = np.zeros(size)
    page[at[0]: at[0] + big.shape[0], at[1]: at[1] + big.shape[1]] = big
    return (255 - page).clip(0, 255).astype(np.uint8)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_mnist_digits_come_out_unchanged(mnist):
    x = mnist.test_images[:300]
    out = np.stack([to_mnist(i).image for i in x])
    diff = np.abs(out.astype(int) - x.astype(int))
    assert diff.mean() < 1.0  # grey levels out of 255
    assert np.median(diff.reshape(len(x), -1).mean(1)) < 0.5
    # and the centre of mass sits where MNIST's does: pixel (14, 14)
    c = np.array([centre_of_mass(i) for i in out])
    assert np.allclose(c.mean(0), [14.0, 14.0], atol=0.1)


def test_a_bar_is_cropped_scaled_to_20_and_centred():
    page = np.full((300, 200), 255, np.uint8)
    page[30:110, 120:160] = 0  # an 80 x 40 black bar, far off-centre
    pre = to_mnist(png(page))
    assert not pre.empty and pre.image.shape == (FIELD, FIELD)
    h, w = bbox(pre.image, 127)
    assert h == 20 and w == 10  # longer side 20, aspect ratio kept
    cy, cx = centre_of_mass(pre.image)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert pre.info["polarity"] == "dark ink on light"
    assert list(pre.steps) == ["grey", "ink", "cropped", "strokes", "resized", "centred"]
    assert pre.steps["cropped"].shape == (80, 40)


def test_inverted_moved_and_enlarged_digit_gives_the_same_input(mnist):
    d = mnist.test_images[3]
    a = to_mnist(on_paper(d, 6, (400, 500), (10, 300))).image
    b = to_mnist(on_paper(d, 6, (400, 500), (220, 20))).image
    c = to_mnist(255 - on_paper(d, 6, (400, 500), (100, 100))).image  # light ink on dark
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 2
    assert corr(a, to_mnist(d).image) > 0.9  # and close to the digit itself


def test_uneven_lighting_and_a_speck_do_not_change_the_input(mnist):
    d = mnist.test_images[7]
    page = on_paper(d, 5, (360, 360), (100, 60)).astype(np.float64)
    clean = to_mnist(page.astype(np.uint8)).image
    yy, xx = np.mgrid[0:360, 0:360]
    shaded = page * (1.0 - 0.45 * xx / 360) * (1.0 - 0.2 * yy / 360)  # a shadow across the paper
    shaded[20:26, 330:336] = 0  # a speck of dirt in a corner
    pre = to_mnist(shaded.clip(0, 255).astype(np.uint8))
    assert pre.info["paper"] == "uneven (estimated locally)"
    assert corr(pre.image, clean) > 0.97
    assert bbox(pre.image, 60) == bbox(clean, 60)


def test_colour_photo_jpeg_is_read_as_grey(mnist):
    d = mnist.test_images[0]
    page = on_paper(d, 8, (300, 400), (40, 100)).astype(np.float64) / 255
    paper, ink = np.array([240, 225, 160]), np.array([20, 30, 140])  # blue ink on yellowish paper
    rgb = (ink + (paper - ink) * page[..., None]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=75)
    out = to_mnist(buf.getvalue()).image
    assert corr(out, to_mnist(d).image) > 0.9


def test_thin_pen_lines_are_thickened_to_mnist_widths():
    img = Image.new("L", (1200, 1200), 255)
    ImageDraw.Draw(img).line([(400, 200), (800, 200), (560, 1000)], fill=0, width=3)  # a 7 drawn with a fine pen
    pre = to_mnist(np.asarray(img))
    assert pre.info["stroke"].startswith("thickened")
    # without thickening, the line is a faint hair at 28x28: almost no ink, nowhere near white
    thin = to_mnist(np.asarray(img), strokes=False).image
    assert thin.max() < 100 and thin.sum() / 255 < 10
    # thickened: MNIST-like ink (its digits: 5th percentile 46, median 93 pixels' worth; strokes 1.2..2.9)
    assert pre.image.max() == 255 and 40 < pre.image.sum() / 255 < 150
    assert 1.2 < stroke_width(pre.image / 255.0) < 3.0
    # a drawing already at MNIST's stroke width is left alone
    img2 = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img2).line([(90, 50), (190, 50), (130, 230)], fill=0, width=20)
    assert to_mnist(np.asarray(img2)).info["stroke"] == "kept"


@pytest.mark.parametrize("blank", [
    np.full((280, 280), 255, np.uint8), np.zeros((28, 28), np.uint8), np.zeros(784),
    (np.random.default_rng(0).normal(200, 3, (300, 300))).clip(0, 255).astype(np.uint8),
])
def test_no_ink_is_no_digit(blank):
    pre = to_mnist(blank)
    assert pre.empty and pre.image is None
    assert "grey" in pre.steps


@pytest.mark.parametrize("bad, words", [
    (b"certainly not an image", "not an image"),
    (b"", "empty file"),
    (np.full((28, 28), np.nan), "finite"),
    (np.zeros((3, 4, 5, 6)), "2-D image"),
    (np.full((28, 28), 300.0), "0..255"),
    (np.full((28, 28), -1.0), ">= 0"),
])
def test_bad_inputs_say_what_is_wrong(bad, words):
    with pytest.raises(TegakiError, match=words):
        to_mnist(bad)


def test_truncated_png_is_reported_as_corrupt():
    data = png(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(TegakiError, match="corrupt or truncated"):
        to_mnist(data[: len(data) // 2])


def huge_png(width: int, height: int) -> bytes:
    """A valid, fully encoded 1-bit PNG of the given size (all black), made without a big array."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    rows = row * 500
    parts = [comp.compress(rows) for _ in range(height // 500)] + [comp.compress(row * (height % 500)), comp.flush()]
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_its_header():
    bomb = huge_png(20000, 20000)
    assert len(bomb) < 2_000_000
    t = time.perf_counter()
    with pytest.raises(TooLarge, match="20000x20000|too many pixels"):
        load_image(bomb)
    with pytest.raises(TooLarge):
        load_image(huge_png(6000, 5000), max_pixels=25_000_000)
    assert time.perf_counter() - t < 2.0  # nothing was decoded


def test_big_photo_is_reduced_before_work(mnist):
    page = on_paper(mnist.test_images[1], 40, (3000, 2000), (800, 600))  # a 6 MP scan
    g = load_image(png(page))
    assert max(g.shape) <= 1536
    assert corr(to_mnist(png(page)).image, to_mnist(mnist.test_images[1]).image) > 0.85


# the server's shortcuts (bench/load_test.py): each gives exactly what the long way gives ----------
def test_clean_paper_shortcut_equals_the_medians():
    """paper_noise skips its two medians when more than half the pixels are exactly the paper's
    level: the median and the median absolute deviation are then both exactly 0."""
    rng = np.random.default_rng(0)
    taken = 0
    for _ in range(300):
        n = int(rng.integers(5, 3000))
        v = rng.normal(0.0, 0.2, n).astype(np.float32)
        v[rng.random(n) < rng.uniform(0.3, 0.8)] = 0.0
        if np.count_nonzero(v == 0.0) > n // 2 + 1:
            taken += 1
            med = float(np.median(v))
            assert med == 0.0 and float(np.median(np.abs(v - med))) == 0.0
            assert paper_noise(v.reshape(1, n)) == (0.0, 0.0)
    assert 50 < taken < 300  # both sides of the threshold were tried


def test_opaque_rgba_and_float_grey_take_the_short_way_to_the_same_levels():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((37, 53, 1), 255, np.uint8)], axis=2)
    png = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(png, "PNG")
    reference = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.float32) / 255.0
    assert np.array_equal(load_image(png.getvalue()), reference)
    grey = rng.random((40, 30)).astype(np.float32)
    same = array_to_grey(grey)
    assert np.array_equal(same, grey) and same is not grey and same.flags.writeable  # a copy, as before
    assert np.array_equal(array_to_grey(grey * 255), ((grey * 255).astype(np.float64) / 255.0).astype(np.float32))
