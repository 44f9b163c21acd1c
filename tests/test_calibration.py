"""Calibrated confidence and "not a digit": the temperature fit against hand-computed optima, the
calibration metrics against hand-computed values, the record in model.json (written by training,
checked by load_run), and the temperature applied by every engine and baked into the ONNX export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from tegaki import calibration as C
from tegaki import spec as S
from tegaki.errors import TegakiError
from tegaki.evaluate import brier, ece, log_loss, reliability
from tegaki.numerics import softmax
from tegaki.predict import Predictor
from tegaki.run import load_run
from tegaki.train import TrainConfig, train

from test_spine_cli import fails

TINY = S.Spec(layers=[S.Flatten(), S.Dense(10), S.Softmax()], name="tiny")


# the fit -----------------------------------------------------------------------------------------
def test_two_class_temperature_has_its_closed_form():
    """Every example has logits (a, 0); n0 of them are class 0. The NLL is smallest where
    sigmoid(a / T) = n0 / N, so T = a / logit(n0 / N)."""
    a, n0, n1 = 3.0, 80, 20
    z = np.tile([a, 0.0], (n0 + n1, 1))
    y = np.array([0] * n0 + [1] * n1)
    assert C.fit_temperature(z, y) == pytest.approx(a / math.log(n0 / n1), rel=1e-9)
    # and it is where the NLL is smallest on a fine grid
    grid = np.linspace(1.0, 4.0, 3001)
    best = grid[np.argmin([C.nll(z, y, t) for t in grid])]
    assert abs(best - a / math.log(4)) < 2e-3


def test_temperature_recovers_the_one_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 10))
    p = softmax(z / 2.5)
    y = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)  # labels drawn from softmax(z / 2.5)
    t = C.fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.05)
    assert C.nll(z, y, t) <= min(C.nll(z, y, t * 0.98), C.nll(z, y, t * 1.02))


def test_temperature_is_clipped_to_its_range_and_bad_logits_refused():
    z = np.tile([1.0, 0.0], (10, 1))
    assert C.fit_temperature(z, np.zeros(10, int)) == C.T_MIN  # always right: as sharp as allowed
    assert C.fit_temperature(z, np.array([0, 1] * 5)) == C.T_MAX  # a coin: as flat as allowed
    with pytest.raises(TegakiError, match="NaN"):
        C.fit_temperature(np.full((2, 2), np.nan), np.zeros(2, int))


# the metrics -------------------------------------------------------------------------------------
def test_metrics_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 0])
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.8 -> bin 11, 0.7 -> bin 10, 0.55 -> bin 8
    r = reliability(probs, y)
    assert r["count"].sum() == 4 and [int(i) for i in np.flatnonzero(r["count"])] == [8, 10, 11, 13]
    assert ece(probs, y) == pytest.approx((0.1 + 0.8 + 0.3 + 0.55) / 4)  # each alone in its bin
    assert log_loss(probs, y) == pytest.approx(-np.log([0.9, 0.2, 0.7, 0.45]).mean())
    assert brier(probs, y) == pytest.approx((2 * 0.1**2 + 2 * 0.8**2 + 2 * 0.3**2 + 2 * 0.55**2) / 4)
    # two in one bin: |mean accuracy - mean confidence| of the bin, weighted by its share
    two = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert ece(two, np.array([0, 1])) == pytest.approx(abs(0.5 - 0.9))


def test_scores_and_statuses():
    z = np.array([[10.0, 0, 0], [1.0, 0.9, 0.8], [-5, -5, -5.0]])
    s = C.digit_score(z, 2.0)
    assert s == pytest.approx([2 * np.log(np.exp(5) + 2), 2 * np.log(np.exp(.5) + np.exp(.45) + np.exp(.4)),
                               2 * np.log(3 * np.exp(-2.5))])
    rec = {"temperature": 2.0, "ood": C.ood_thresholds(np.linspace(0, 100, 1001))}
    assert rec["ood"]["not_a_digit_below"] == pytest.approx(0.5) and rec["ood"]["not_sure_below"] == pytest.approx(2)
    assert C.status(0.2, 0.99, rec) == "not a digit"
    assert C.status(1.0, 0.99, rec) == "not sure"
    assert C.status(50, 0.4, rec) == "not sure"
    assert C.status(50, 0.99, rec) == "digit"
    assert C.status(None, 0.0, rec) == "not a digit"
    assert C.status(-100, 0.99, None) == "digit"  # without thresholds only the confidence speaks


def test_mahalanobis_score_by_hand():
    means = np.array([[1.0, 0.0], [0.0, 1.0]])
    precision = np.array([[1.0, 0.0], [0.0, 4.0]])  # the second logit's spread is half the first's
    z = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 1.0]])
    # (z - m)^T P (z - m) for each class, then minus the smaller one
    want = [-0.0, -0.0, -min(1 + 4 * 4, 4 + 4 * 1), -min(0 + 4 * 1, 1 + 0)]
    assert C.mahalanobis_score(z, means, precision) == pytest.approx(want)
    ood = {"score": "mahalanobis", "means": means.tolist(), "precision": precision.tolist()}
    assert C.digit_score(z, 0.5, ood) == pytest.approx(want)  # the temperature plays no part in it


def test_mahalanobis_fit_recovers_means_and_covariance():
    rng = np.random.default_rng(0)
    k, n = 3, 30_000
    y = rng.integers(0, k, n)
    true_means = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    cov = np.array([[1.0, 0.3, 0], [0.3, 2.0, 0.1], [0, 0.1, 0.5]])
    z = true_means[y] + rng.multivariate_normal(np.zeros(k), cov, n)
    st = C.fit_mahalanobis(z, y)
    np.testing.assert_allclose(st["means"], true_means, atol=0.05)
    np.testing.assert_allclose(np.linalg.inv(st["precision"]), cov, atol=0.05)
    assert C.fit_mahalanobis(z[:5], np.array([0, 0, 1, 1, 1])) is None  # class 2 unseen: no statistics
    rec = C.ood_thresholds(np.linspace(0, 100, 1001), st)
    assert rec["score"] == "mahalanobis" and len(rec["precision"]) == k


def test_the_bundled_model_tells_clothes_from_digits():
    """The bundled model's calibration (its model.json): Fashion-MNIST scores below MNIST test digits
    (AUROC over 1,000 of each), and at most 1% of the digits are called "not a digit"."""
    from tegaki.data.sources import load_dataset

    p = Predictor.load(None, engine="numpy")
    assert p.calibration["ood"]["score"] == "mahalanobis"
    digits = load_dataset("mnist", data_dir=__import__("conftest").data_root() / "mnist").test_images[:1000]
    clothes = load_dataset("fashion-mnist").test_images[:1000]
    s_in, s_out = p.scores(digits), p.scores(clothes)
    auroc = (s_in[:, None] > s_out[None, :]).mean() + 0.5 * (s_in[:, None] == s_out[None, :]).mean()
    assert auroc >= 0.97
    statuses = p.status(digits)
    assert statuses.count("not a digit") <= 10
    assert p.status(clothes).count("not a digit") >= 500
    noise = (np.random.default_rng(0).random((100, 28, 28)) * 255).astype(np.uint8)
    assert p.status(noise).count("digit") <= 2  # a sheet of noise is not a digit


# runs --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(mnist):
    return replace(mnist, train_images=mnist.train_images[:6000], train_labels=mnist.train_labels[:6000],
                   test_images=mnist.test_images[:1000], test_labels=mnist.test_labels[:1000])


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    out = {}
    for name, valid in (("held", 1000), ("all", 0)):
        folder = tmp_path_factory.mktemp("calib") / name
        cfg = TrainConfig.for_spec(TINY, epochs=1, optimizer="adam", lr=3e-3, valid_size=valid, device="cpu",
                                   label_smoothing=0.1, seed=0)
        lines = []
        train(TINY, small, cfg, folder, log=lines.append)
        out[name] = (folder, lines)
    return out


def test_training_writes_the_calibration(runs, small):
    folder, lines = runs["held"]
    c = json.loads((folder / "model.json").read_text())["calibration"]
    assert c["held_out"] and c["fitted_on"] == "validation split" and c["n"] == 1000
    assert any(line.startswith("calibration: temperature") for line in lines)
    # the stored temperature is the fit on the validation split's logits, redone here
    run = load_run(folder)
    from tegaki.data.dataset import validation_split

    _, va = validation_split(small.train_labels, 1000, 0)
    z = Predictor(run).logits(small.train_images[va])
    assert c["temperature"] == pytest.approx(C.fit_temperature(z, small.train_labels[va]), rel=1e-5)
    assert c["nll_after"] <= c["nll_before"] + 1e-12
    assert c["ood"]["not_a_digit_below"] <= c["ood"]["not_sure_below"]
    # without a validation split: a slice of the training images, said to be optimistic
    c0 = json.loads((runs["all"][0] / "model.json").read_text())["calibration"]
    assert not c0["held_out"] and "optimistic" in c0["note"] and c0["n"] == 6000


def test_every_engine_applies_the_temperature(runs, small):
    folder, _ = runs["held"]
    x = small.test_images[:300]
    p = Predictor.load(folder)
    t = p.temperature
    assert t != 1.0
    np.testing.assert_allclose(p.predict_proba(x), softmax(p.logits(x).astype(np.float64) / t), rtol=1e-9)
    for engine in ("numpy", "onnx"):
        np.testing.assert_allclose(Predictor.load(folder, engine=engine).predict_proba(x), p.predict_proba(x),
                                   atol=1e-5)
    # statuses come with every prediction
    pred = p.predict_images([x[0], np.zeros((28, 28), np.uint8)])
    assert pred[0].status in C.STATUSES and pred[0].score == pytest.approx(float(p.scores(pred[0].input[None])[0]), rel=1e-9)
    assert pred[1].empty and pred[1].status == "not a digit"


def test_the_onnx_export_bakes_the_temperature_in(runs, small, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from tegaki.engines.inputs import normalise
    from tegaki.export import export_run

    folder, _ = runs["held"]
    export_run(folder, tmp_path / "m.onnx")
    p = Predictor.load(folder)
    x = small.test_images[:64]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"input": normalise(x, p.norm, p.spec.input_shape)})
    np.testing.assert_allclose(logits, p.logits(x), atol=1e-4)
    np.testing.assert_allclose(probs, p.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, 0.01, 25.0, "1.0", True, None])
def test_a_bad_temperature_is_refused(runs, tmp_path, bad, cli):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["held"][0], folder)
    d = json.loads((folder / "model.json").read_text())
    d["calibration"]["temperature"] = bad
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(TegakiError, match="temperature"):
        load_run(folder)
    fails(cli("evaluate", folder), "temperature")


def test_bad_thresholds_are_refused(runs, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["held"][0], folder)
    d = json.loads((folder / "model.json").read_text())
    d["calibration"]["ood"]["not_a_digit_below"] = d["calibration"]["ood"]["not_sure_below"] + 1
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(TegakiError, match="thresholds"):
        load_run(folder)


@pytest.mark.parametrize("field,value", [("means", [[0.0] * 10] * 9), ("precision", [[1.0] * 9] * 10),
                                         ("means", [[float("nan")] * 10] * 10), ("precision", "identity")])
def test_bad_mahalanobis_statistics_are_refused(runs, tmp_path, field, value):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["held"][0], folder)
    d = json.loads((folder / "model.json").read_text())
    assert d["calibration"]["ood"]["score"] == "mahalanobis"
    d["calibration"]["ood"][field] = value
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(TegakiError, match="Mahalanobis 'means' and 'precision' must each be 10 lists of 10"):
        load_run(folder)


def test_evaluate_prints_calibration_and_draws_the_reliability_diagram(runs, mnist, cli, tmp_path):
    from tegaki.commands.evaluate import _plain
    from tegaki.evaluate import evaluate

    folder, _ = runs["held"]
    r = cli("evaluate", folder, "--out", tmp_path / "ev")
    assert r.code == 0, r.err
    p = Predictor.load(folder)
    ev = evaluate(p, mnist.test_images, mnist.test_labels)  # what the command measured: all of MNIST test
    after = ev.calibration()
    raw = softmax(p.logits(mnist.test_images).astype(np.float64))
    np.testing.assert_allclose(_plain(ev.probabilities, p.temperature), raw, atol=1e-9)
    assert f"ECE {after['ece']:6.2%}   NLL {after['nll']:.4f}" in r.out
    assert f"ECE {ece(raw, mnist.test_labels):6.2%}" in r.out.split("plain softmax")[1]
    png = (tmp_path / "ev" / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["ece"] == pytest.approx(after["ece"]) and saved["brier"] == pytest.approx(after["brier"])


def test_predict_and_the_api_say_whether_it_is_a_digit(tmp_path, cli):
    """A clean MNIST digit is 'digit'; a Fashion-MNIST ankle boot is flagged, in the CLI's JSON and the API's answer."""
    import json as _json

    from PIL import Image

    from tegaki.data.sources import load_dataset
    from tegaki.predict import Predictor
    from tegaki.serve.app import create_app

    ds = load_dataset("mnist", data_dir=__import__("conftest").data_root() / "mnist")
    Image.fromarray(ds.test_images[0]).save(tmp_path / "seven.png")
    fashion = load_dataset("fashion-mnist")
    boot = fashion.test_images[np.flatnonzero(fashion.test_labels == 9)[0]]
    Image.fromarray(boot).save(tmp_path / "boot.png")
    r = cli("predict", tmp_path / "seven.png", tmp_path / "boot.png", "--format", "json")
    rows = {Path(x["file"]).name: x for x in _json.loads(r.out)}
    assert rows["seven.png"]["status"] == "digit" and rows["seven.png"]["label"] == 7
    assert rows["boot.png"]["status"] == "not a digit"
    table = cli("predict", tmp_path / "boot.png").out
    assert "(not a digit)" in table
    from fastapi.testclient import TestClient

    with TestClient(create_app(Predictor.load(None), drawings=None, allow_hosts=["testserver"])) as c:
        body = c.post("/api/predict", files={"file": ("s.png", (tmp_path / "seven.png").read_bytes(), "image/png")}).json()
    assert body["status"] == "digit" and body["label"] == 7 and isinstance(body["score"], float)


def test_a_clear_drawing_is_read_with_confidence():
    """Issue 14's bar: a clear drawn digit shows >= 97% (the calibrated confidence of the bundled
    model), where the plain label-smoothed softmax said about 90%."""
    from PIL import Image, ImageDraw

    strokes = {7: [(70, 60), (210, 60), (120, 230)], 1: [(140, 40), (140, 240)],
               4: [(170, 240), (170, 40), (60, 170), (220, 170)],
               0: [(140, 40), (200, 80), (210, 160), (170, 230), (110, 230), (70, 160), (80, 80), (140, 40)],
               2: [(70, 90), (110, 45), (180, 50), (200, 110), (80, 230), (220, 230)]}
    p = Predictor.load(None, engine="numpy")
    for digit, pts in strokes.items():
        im = Image.new("L", (280, 280), 255)
        ImageDraw.Draw(im).line(pts, fill=0, width=18, joint="curve")  # a mouse stroke on the page's canvas
        pred = p.predict_image(im)
        assert (pred.label, pred.status) == (digit, "digit") and pred.confidence >= 0.97, (digit, pred.confidence)
        plain = softmax(p.logits(pred.input[None]).astype(np.float64))[0].max()
        assert plain < pred.confidence  # the temperature is what lifts it
