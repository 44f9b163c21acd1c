"""`tegaki predict`: files, folders and globs; table, JSON and CSV; per-file errors; the bundled model.

The acceptance test renders real MNIST test digits as phone photos (dark ink on light paper,
enlarged, off-centre, slightly rotated, blurred, uneven light, JPEG) and asks `tegaki predict`,
with the bundled model, to read them back: at least 97% must come out right.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tegaki.predict import Predictor, bundled_model_path


def render_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """An MNIST digit as a photo of dark ink on light paper: enlarged 4-10x, rotated up to 10
    degrees, placed off-centre on a larger sheet, coloured paper and ink, light falling off
    across the sheet, sensor noise, blurred, saved as JPEG."""
    size = int(28 * rng.uniform(4, 10))
    ink = Image.fromarray(digit).resize((size, size), Image.BICUBIC)
    ink = ink.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, expand=True)
    a = np.asarray(ink, np.float32) / 255  # (h, w) ink coverage
    h, w = int(a.shape[0] * rng.uniform(1.3, 2.2)), int(a.shape[1] * rng.uniform(1.3, 2.2))
    top, left = rng.integers(0, h - a.shape[0] + 1), rng.integers(0, w - a.shape[1] + 1)
    cover = np.zeros((h, w), np.float32)
    cover[top: top + a.shape[0], left: left + a.shape[1]] = a
    paper = np.array([rng.uniform(200, 245), rng.uniform(195, 240), rng.uniform(185, 230)], np.float32)
    pen = np.array([rng.uniform(10, 60), rng.uniform(10, 60), rng.uniform(20, 90)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = 1.0 - rng.uniform(0, 0.25) * (yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1) + 0.5)
    rgb = (paper * (1 - cover[..., None]) + pen * cover[..., None]) * light[..., None]  # (h, w, 3)
    rgb += rng.normal(0, 4, rgb.shape)
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(60, 92)))
    return buf.getvalue()


def write_png(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def model() -> Path:
    """The bundled model's run folder (also what `predict` uses without --model)."""
    path = bundled_model_path()
    if path is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory, mnist):
    """Five MNIST test digits as dark-on-light PNGs in a folder tree, plus their labels."""
    root = tmp_path_factory.mktemp("pred")
    labels = {}
    for i in range(5):
        d = 255 - np.asarray(Image.fromarray(mnist.test_images[i]).resize((112, 112), Image.BICUBIC))
        sub = root / ("a" if i < 3 else "b/c")
        f = write_png(sub / f"digit{i}.png", d)
        labels[str(f)] = int(mnist.test_labels[i])
    return root, labels


def test_table_for_a_folder_with_the_right_labels(cli, model, images):
    root, labels = images
    r = cli("predict", "--model", model, root)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "label", "confidence"]
    assert len(lines) == 1 + len(labels)  # every image below the folder, recursively
    p = Predictor.load(model)
    for line in lines[1:]:
        f, label = line.split()[:2]
        assert int(label) == p.predict_image(f).label  # the same door as the library


def test_table_columns_line_up_for_names_in_any_script(cli, model, images, tmp_path):
    """Wide characters take two terminal columns and combining marks none: the label column starts in the same
    column on every row, counted as a terminal shows it."""
    from tegaki.commands.common import columns

    src = next(iter(images[1]))
    names = ["手書き数字.png", "e\u0301te\u0301.png", "plain-ascii-name.png"]  # CJK, combining accents, ASCII
    for n in names:
        (tmp_path / n).write_bytes(Path(src).read_bytes())
    r = cli("predict", "--model", model, *[tmp_path / n for n in names])
    assert r.code == 0, r.err
    header, *rows = r.out.splitlines()
    starts = set()
    for line in rows:  # the terminal column where the label begins, after the file name and its padding
        end = max(line.index(str(tmp_path / n)) + len(str(tmp_path / n)) for n in names if str(tmp_path / n) in line)
        starts.add(columns(line[:end]) + len(line[end:]) - len(line[end:].lstrip(" ")))
    assert len(rows) == 3 and starts == {header.index("label")}, r.out
    assert columns("手書き") == 6 and columns("e\u0301") == 1 and columns("abc") == 3


def test_json_csv_top_k_and_globs(cli, model, images):
    root, labels = images
    r = cli("predict", "--model", model, "--format", "json", "--top", "4", str(root / "a" / "*.png"))
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert [Path(x["file"]).name for x in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    for x in rows:
        assert len(x["top"]) == 4 and x["top"][0]["label"] == x["label"] and x["error"] is None
        probs = [t["probability"] for t in x["top"]]
        assert probs == sorted(probs, reverse=True) and abs(x["confidence"] - probs[0]) < 1e-6
    r = cli("predict", "--model", model, "--format", "csv", "--top", "2", root)
    assert r.code == 0
    table = list(csv.DictReader(io.StringIO(r.out)))
    assert len(table) == len(labels) and set(table[0]) >= {"file", "label", "confidence", "top1", "top2", "error"}
    correct = sum(int(t["label"]) == labels[t["file"]] for t in table)
    assert correct >= 4


def test_unreadable_files_are_reported_and_the_others_go_on(cli, model, images, tmp_path):
    root, labels = images
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    good = sorted(labels)[0]
    blank = write_png(tmp_path / "blank.png", np.full((100, 100), 255, np.uint8))
    r = cli("predict", "--model", model, "--format", "json", junk, good, tmp_path / "missing.jpg", blank,
            str(tmp_path / "nothing-*.png"))
    assert r.code == 1
    rows = json.loads(r.out)
    assert [x["error"] is not None for x in rows] == [True, False, True, False, True]
    assert "not an image" in rows[0]["error"]
    assert "No such file" in rows[2]["error"] or "cannot open" in rows[2]["error"]
    assert rows[1]["label"] is not None and 0 <= rows[1]["confidence"] <= 1
    assert rows[3]["label"] is None and rows[3]["no_digit"] is True  # empty is a result, not a failure
    assert "no files match" in rows[4]["error"]
    assert "3 of 5 file(s) could not be read" in r.err
    # one stderr line per bad file, naming it, then the count
    err = r.err.splitlines()
    assert len(err) == 4 and err[0].startswith(f"tegaki: {junk}: not an image")
    assert str(tmp_path / "missing.jpg") in err[1] and "no files match" in err[2]
    r = cli("predict", "--model", model, junk)  # nothing readable: one line on stderr, exit 2
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1 and "not an image" in r.err


def test_no_readable_image_is_one_line_and_exit_2(cli, model, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs\n")
    for fmt in ("table", "json", "csv"):
        r = cli("predict", "--model", model, "--format", fmt, notes)
        assert r.code == 2 and r.out == "", (fmt, r.out)
        assert r.err.count("\n") == 1 and f"{notes}: not an image" in r.err
        assert r.err.count("; ") == 1 and r.err.strip().endswith("; use a PNG or JPEG")  # one remedy, not two
    r = cli("predict", "--model", model, notes, tmp_path / "gone.png", str(tmp_path / "none-*.png"))
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1 and "none of the 3 files" in r.err
    r = cli("predict", "--help")
    assert r.code == 0 and "exit status" in r.out and "2  no argument named a readable image" in r.out


def test_a_pipe_named_like_an_image_is_refused_not_waited_on(cli, model, images, tmp_path):
    """A FIFO called x.png would block the reader forever: named directly it is one line, in a folder it is
    skipped (a folder dataset too)."""
    import os

    root, labels = images
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    r = cli("predict", "--model", model, pipe)
    assert r.code == 2 and "not a regular file (a pipe or a device?)" in r.err and r.err.count("\n") == 1
    from tegaki.data.sources import load_dataset

    folder = tmp_path / "digits"
    for i, f in enumerate(sorted(labels)[:4]):
        (folder / str(i)).mkdir(parents=True)
        (folder / str(i) / "a.png").write_bytes(Path(f).read_bytes())
    os.mkfifo(folder / "0" / "pipe.png")
    ds = load_dataset(f"folder:{folder}")
    assert len(ds.train_labels) + len(ds.test_labels) == 4


def test_a_file_named_twice_is_predicted_once(cli, model, images):
    root, labels = images
    first = sorted(labels)[0]
    # the folder, a glob over part of it, one of its files again (by another spelling of its path)
    again = str(Path(first).parent / ".." / Path(first).parent.name / Path(first).name)
    r = cli("predict", "--model", model, "--format", "json", root, str(root / "a" / "*.png"), first, again)
    assert r.code == 0, r.err
    files = [x["file"] for x in json.loads(r.out)]
    assert len(files) == len(labels) == 5
    assert sorted(str(Path(f).resolve()) for f in files) == sorted(str(Path(f).resolve()) for f in labels)


def test_bad_model_and_options_are_one_line(cli, images, tmp_path):
    root, _ = images
    r = cli("predict", "--model", tmp_path / "nope", root)
    assert r.code == 2 and r.err.count("\n") == 1 and "no such run folder" in r.err
    r = cli("predict", "--top", "0", root)
    assert r.code == 2 and "--top" in r.err


def test_bundled_model_is_small_accurate_and_the_default(cli, images):
    path = bundled_model_path()
    assert path is not None, "the bundled model (src/tegaki/model/) is missing"
    assert (path / "model.safetensors").stat().st_size < 1_000_000
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.995 and metrics["dataset"] == "mnist"
    assert metrics["train_size"] == 60000  # the full training set
    meta = json.loads((path / "model.json").read_text())
    assert meta["command"][:2] == ["tegaki", "train"]
    root, labels = images
    r = cli("predict", "--format", "json", root)  # no --model: the bundled one
    assert r.code == 0
    assert all(x["label"] == labels[x["file"]] for x in json.loads(r.out))


def test_photos_of_mnist_test_digits_are_recognised(cli, mnist, tmp_path):
    """>= 97% of 300 MNIST test digits rendered as JPEG photos are read right by `tegaki predict`."""
    rng = np.random.default_rng(2024)
    idx = rng.choice(len(mnist.test_labels), 300, replace=False)
    truth = {}
    for k, i in enumerate(idx):
        f = tmp_path / f"photo{k:03d}.jpg"
        f.write_bytes(render_photo(mnist.test_images[i], rng))
        truth[str(f)] = int(mnist.test_labels[i])
    r = cli("predict", "--format", "json", "--top", "1", tmp_path)
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert len(rows) == 300
    acc = np.mean([x["label"] == truth[x["file"]] for x in rows])
    print(f"photos of MNIST test digits: {acc:.1%} recognised")
    assert acc >= 0.97


def test_other_engines_give_the_same_answers(cli, model, images):
    root, _ = images
    ref = json.loads(cli("predict", "--format", "json", "--top", "3", "--engine", "torch", root).out)
    for engine, atol in (("auto", 2e-6), ("numpy", 2e-6), ("onnx", 1e-4)):  # auto: numpy for a few files
        r = cli("predict", "--format", "json", "--top", "3", "--engine", engine, root)
        assert r.code == 0, r.err
        rows = json.loads(r.out)
        assert [x["label"] for x in rows] == [x["label"] for x in ref]
        assert [x["status"] for x in rows] == [x["status"] for x in ref]
        assert np.allclose([x["confidence"] for x in rows], [x["confidence"] for x in ref], atol=atol, rtol=0)
    table = [cli("predict", "--engine", e, root).out for e in ("torch", "numpy")]
    assert table[0] == table[1]  # the table a user reads is the same


def test_auto_engine_picks_by_the_work():
    from tegaki.commands.predict import pick_engine
    from tegaki.spec import load_preset

    bundled, best = Predictor.find_run(None).spec, load_preset("best")
    # 2 x multiply-adds: conv 1->32 @5x5 on 24x24, conv 32->64 @3x3 on 10x10, conv 64->64 @3x3 on 8x8,
    # dense 1024->128, dense 128->10
    assert bundled.forward_flops() == 2 * (25 * 32 * 576 + 32 * 9 * 64 * 100 + 64 * 9 * 64 * 64 + 1024 * 128 + 1280)
    assert pick_engine("auto", 1, bundled) == "numpy" and pick_engine("auto", 4000, bundled) == "numpy"
    assert pick_engine("auto", 4200, bundled) == "torch"
    assert pick_engine("auto", 1000, best) == "numpy" and pick_engine("auto", 2000, best) == "torch"
    assert pick_engine("onnx", 1, bundled) == "onnx" and pick_engine("torch", 1, bundled) == "torch"


def test_fine_pen_lines_in_big_images_need_thickening(model):
    """A digit written with a fine pen in a big image is a faint hair at 28x28 unless its strokes
    are thickened to MNIST's width: without that, the bundled model reads every one as a 1."""
    from PIL import ImageDraw

    from tegaki.data.preprocess import to_mnist

    p = Predictor.load(model)
    digits = {7: [(400, 200), (800, 200), (560, 1000)], 2: [(420, 360), (600, 220), (780, 360), (420, 1000), (800, 1000)],
              4: [(700, 200), (380, 760), (860, 760)]}
    without = []
    for digit, line in digits.items():
        img = Image.new("L", (1600, 1200), 255)
        ImageDraw.Draw(img).line(line, fill=0, width=3)
        if digit == 4:
            ImageDraw.Draw(img).line([(700, 200), (700, 1000)], fill=0, width=3)
        a = np.asarray(img)
        assert p.classify(to_mnist(a)).label == digit
        without.append(p.classify(to_mnist(a, strokes=False)).label)
    assert without != list(digits)  # the thin version is misread


def test_logits_in_chunks_are_the_logits(model, mnist, monkeypatch):
    """Predictor.logits makes a large set float a chunk at a time: the same numbers as in one go."""
    from tegaki import predict

    p = Predictor.load(model)
    x = mnist.test_images[:300]
    whole = p.logits(x)
    monkeypatch.setattr(predict, "CHUNK", 64)
    np.testing.assert_allclose(p.logits(x), whole, atol=1e-5)  # batch sizes may pick other kernels
    assert p.logits(x[:0]).shape == (0, 10)


def test_a_huge_declared_image_and_an_empty_file_are_one_line_each(cli, tmp_path):
    import struct
    import warnings
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    big = tmp_path / "big.png"  # a header that declares 12000 x 10000 pixels: past Pillow's own warning level
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 10000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    (tmp_path / "empty.png").write_bytes(b"")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = cli("predict", big)
    assert r.code == 2 and "image is 12000x10000 pixels, more than the 40,000,000 allowed" in r.err
    assert not [w for w in seen if "DecompressionBomb" in type(w.message).__name__], "Pillow's warning leaked"
    r = cli("predict", tmp_path / "empty.png")
    assert r.code == 2 and r.err.strip().endswith("empty.png: empty file; use a PNG or JPEG image")


def test_csv_cells_never_start_like_a_formula():
    import io

    from tegaki.commands.predict import text_cell, write_csv

    assert [text_cell(s) for s in ("=HYPERLINK(1)", "+1", "-2", "@x", "\tA", "7", "digit.png")] == \
        ["'=HYPERLINK(1)", "'+1", "'-2", "'@x", "'\tA", "7", "digit.png"]
    row = {"file": "=cmd|' /C calc'!A0.png", "name": "=1+1", "confidence": 0.9, "error": None, "status": "ok",
           "top": [{"name": "=1+1", "probability": 0.9}]}
    out = io.StringIO()
    write_csv([row], 1, out)
    body = out.getvalue().splitlines()[1]
    assert body == "'=cmd|' /C calc'!A0.png,'=1+1,0.900000,'=1+1,0.900000,,ok"


def test_files_go_a_chunk_at_a_time_with_the_same_answers(model, images, monkeypatch):
    from tegaki.commands import predict as P
    from tegaki.predict import Predictor

    predictor = Predictor.load(model)
    root, _ = images
    items = P.expand([str(root)])
    assert len(items) >= 5
    whole = P.predict_rows(predictor, items, 2)
    calls = []
    original = P._chunk_rows
    monkeypatch.setattr(P, "CHUNK", 2)
    monkeypatch.setattr(P, "_chunk_rows", lambda p, chunk, k: calls.append(len(chunk)) or original(p, chunk, k))
    assert P.predict_rows(predictor, items, 2) == whole
    assert max(calls) == 2 and sum(calls) == len(items)
