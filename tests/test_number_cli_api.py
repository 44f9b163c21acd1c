"""Whole numbers through `tegaki predict` (table, JSON, CSV) and /api/predict's "number" field.

Inputs: a 4-digit number rendered from MNIST test digits (tests/renders.py: digits enlarged 3 times,
gaps of 4..16 px, as a photo) and single digits; the reference is MNIST's labels, and for a single
digit the output the command and the API gave before numbers existed (no "number" key or column in
the CLI, "number": null in the API).
"""

from __future__ import annotations

import csv
import io
import json

import httpx
import numpy as np
import pytest
import renders as R  # tests/renders.py
from PIL import Image
from sketches import DIGITS, drawing  # tests/sketches.py

from tegaki.predict import Predictor
from tegaki.serve.app import create_app, serving


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(mnist, tmp_path_factory):
    d = tmp_path_factory.mktemp("numbers")
    image, text, boxes = R.number_set(mnist.test_images, mnist.test_labels, 1, seed=3, photo=True)[0]
    (d / "number.png").write_bytes(png(image))
    (d / "seven.png").write_bytes(png(R.drawing(R.tight(mnist.test_images[0], margin=20))))
    return d, text, boxes


def test_cli_prints_the_number_in_every_format(cli, files):
    d, text, boxes = files
    r = cli("predict", d / "number.png", d / "seven.png")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[1].split()[1] == text and "4 digits:" in lines[1]
    assert lines[2].split()[1] == "7" and "digits" not in lines[2]
    rows = json.loads(cli("predict", d / "number.png", d / "seven.png", "--format", "json").out)
    n = rows[0]["number"]
    assert n["text"] == text and len(n["digits"]) == 4 and n["note"] is None
    assert [dg["name"] for dg in n["digits"]] == list(text)
    for dg, b in zip(n["digits"], boxes):  # the boxes hold the digits placed there
        x0, y0, x1, y1 = dg["box"]
        assert abs(x0 - b[0]) <= 3 and abs(x1 - b[2]) <= 3 and abs(y0 - b[1]) <= 3 and abs(y1 - b[3]) <= 3
        assert len(dg["probabilities"]) == 10 and dg["status"] in ("digit", "not sure", "not a digit")
    assert "number" not in rows[1]
    table = list(csv.DictReader(io.StringIO(cli("predict", d / "number.png", d / "seven.png",
                                                "--format", "csv").out)))
    assert table[0]["number"] == text and table[1]["number"] == "" and table[1]["label"] == "7"


def test_cli_single_digit_output_is_unchanged(cli, files):
    d, _, _ = files
    out = cli("predict", d / "seven.png", "--format", "csv").out
    assert out.splitlines()[0] == ("file,label,confidence,top1,top2,top3,top1_probability,top2_probability,"
                                   "top3_probability,error,status")
    row = json.loads(cli("predict", d / "seven.png", "--format", "json").out)[0]
    assert set(row) == {"file", "label", "name", "confidence", "top", "error", "status"}


@pytest.fixture(scope="module")
def server():
    app = create_app(Predictor.load(None).run)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def post(client, data: bytes):
    r = client.post("/api/predict", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()


def test_api_answers_the_number_with_boxes(server, files):
    d, text, boxes = files
    body = post(server, (d / "number.png").read_bytes())
    assert body["number"]["text"] == text and "label" in body and "probabilities" in body
    assert [dg["box"][0] for dg in body["number"]["digits"]] == pytest.approx([b[0] for b in boxes], abs=3)


def test_api_single_digits_have_no_number(server, files):
    d, _, _ = files
    assert post(server, (d / "seven.png").read_bytes())["number"] is None
    for digit, strokes in DIGITS.items():  # drawn with strokes, as on the page: one digit each
        assert post(server, drawing(strokes))["number"] is None, digit
    r = server.post("/api/predict", json={"pixels": np.zeros((28, 28)).tolist()})
    assert r.status_code == 422  # an empty 28x28: still refused as before
    px = np.zeros((28, 28))
    px[4:24, 8:11] = px[4:24, 17:20] = 255  # two bars in JSON pixels: still read as one 28x28 digit
    assert server.post("/api/predict", json={"pixels": px.tolist()}).json()["number"] is None


def test_api_many_marks_are_bounded(server, mnist):
    canvas, _ = R.number(mnist.test_images[:30], np.random.default_rng(0), scale=2)
    body = post(server, png(R.drawing(canvas)))
    assert len(body["number"]["digits"]) == 12 and "first 12" in body["number"]["note"]
