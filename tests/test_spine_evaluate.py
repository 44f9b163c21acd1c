"""Evaluation: the per-class report and confusion matrix against scikit-learn, the pictures."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix as sk_confusion

from tegaki import figures
from tegaki.evaluate import confusion_matrix, confusion_text, evaluate, per_class, report_text
from tegaki.spec import load_preset
from tegaki.train import TrainConfig, train

CLASSES = [str(i) for i in range(10)]


class FixedPredictor:
    """Stands in for a model: returns the probabilities it was given."""

    def __init__(self, probs):
        self.probs, self.classes = probs, CLASSES

    def predict_proba(self, images):
        return self.probs[: len(images)]


def random_case(seed, n=500, k=10, skip=()):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + 2.5 * np.eye(k)[y]  # better than chance, far from perfect
    logits[:, list(skip)] -= 100  # classes never predicted: precision 0/0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed, skip", [(0, ()), (1, (3,)), (2, (0, 9))])
def test_report_matches_scikit_learn(seed, skip):
    y, probs = random_case(seed, skip=skip)
    ev = evaluate(FixedPredictor(probs), np.zeros((len(y), 28, 28), np.uint8), y, CLASSES)
    pred = probs.argmax(1)
    np.testing.assert_array_equal(ev.cm, sk_confusion(y, pred, labels=range(10)))
    assert ev.accuracy == accuracy_score(y, pred)
    ref = classification_report(y, pred, labels=range(10), target_names=CLASSES, output_dict=True, zero_division=0)
    m = per_class(ev.cm)
    for i, c in enumerate(CLASSES):
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                             ("support", "support")):
            assert m[ours][i] == pytest.approx(ref[c][theirs], abs=1e-12), (c, ours)
    # the printed report carries the same numbers (4 decimals) and the same averages
    text = report_text(ev.cm, CLASSES)
    rows = {line.split()[0] if not line.strip().startswith(("macro", "weighted")) else " ".join(line.split()[:2]):
            line.split() for line in text.splitlines() if line.strip()}
    for c in CLASSES:
        got = [float(v) for v in rows[c][1:4]]
        assert got == pytest.approx([ref[c]["precision"], ref[c]["recall"], ref[c]["f1-score"]], abs=5e-5)
        assert int(rows[c][4]) == ref[c]["support"]
    for avg in ("macro avg", "weighted avg"):
        got = [float(v) for v in rows[avg][2:5]]
        assert got == pytest.approx([ref[avg]["precision"], ref[avg]["recall"], ref[avg]["f1-score"]], abs=5e-5)
    assert float(rows["accuracy"][1]) == pytest.approx(ref["accuracy"], abs=5e-5)


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    text = confusion_text(cm, ["a", "b", "c"])
    assert text.splitlines()[0].split() == ["true\\pred", "a", "b", "c"]
    assert text.splitlines()[3].split() == ["c", "1", "0", "2"]


def test_misclassified_most_confident_first():
    y = np.array([0, 1, 2, 0])
    probs = np.array([[0.1, 0.9, 0], [0, 1.0, 0], [0.6, 0, 0.4], [0.45, 0.55, 0]])
    ev = evaluate(FixedPredictor(probs), np.zeros((4, 28, 28), np.uint8), y, CLASSES[:3])
    assert ev.misclassified().tolist() == [0, 2, 3]  # confidences 0.9, 0.6, 0.55


def png_size(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_pictures(tmp_path):
    y, probs = random_case(4)
    ev = evaluate(FixedPredictor(probs), np.zeros((len(y), 28, 28), np.uint8), y, CLASSES)
    w, h = png_size(figures.save(figures.confusion_matrix(ev.cm, CLASSES), tmp_path / "cm.png"))
    assert w > 300 and h > 300
    wrong = ev.misclassified()
    imgs = np.random.default_rng(0).integers(0, 255, (len(y), 28, 28)).astype(np.uint8)
    w, h = png_size(figures.save(figures.misclassified(imgs[wrong], y[wrong], ev.predictions[wrong], probs[wrong],
                                                       CLASSES, limit=20), tmp_path / "wrong.png"))
    assert w > h > 100  # 2 rows of 10
    hist = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "train_acc": 1 - 0.1 / e,
             "valid_acc": 1 - 0.12 / e} for e in (1, 2, 3)]
    png_size(figures.save(figures.learning_curves(hist, "x"), tmp_path / "lc.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "lc.png", "wrong.png"]  # no temp files


@pytest.fixture(scope="module")
def ffnn_run(mnist, tmp_path_factory):
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small = replace(mnist, train_images=mnist.train_images[:3000], train_labels=mnist.train_labels[:3000],
                        test_images=mnist.test_images[:500], test_labels=mnist.test_labels[:500])
        out = tmp_path_factory.mktemp("eval") / "ffnn"
        spec = load_preset("ffnn")
        train(spec, small, TrainConfig.for_spec(spec, epochs=2, device="cpu", valid_size=500), out, log=lambda m: None)
    finally:
        torch.set_num_threads(torch_threads)
    return out


def test_evaluate_command(cli, ffnn_run, mnist):
    r = cli("evaluate", ffnn_run)
    assert r.code == 0, r.err
    ev = json.loads((ffnn_run / "evaluation.json").read_text())
    cm = np.array(ev["confusion_matrix"])
    assert cm.sum() == 10000 and ev["n"] == 10000  # the whole MNIST test set
    assert cm.sum(axis=1).tolist() == np.bincount(mnist.test_labels).tolist()
    assert ev["accuracy"] == pytest.approx(np.trace(cm) / 10000)
    assert f"accuracy {ev['accuracy']:.2%}" in r.out
    assert re.search(r"^\s+7\s+0\.\d{4}\s+0\.\d{4}\s+0\.\d{4}\s+1028$", r.out, re.M)  # 1,028 sevens
    for name in ("confusion.png", "misclassified.png", "learning_curves.png"):
        assert png_size(ffnn_run / name)[0] > 200
    assert 0.7 < ev["accuracy"] < 0.97


def test_evaluate_on_another_dataset_writes_beside_the_run(cli, ffnn_run, tmp_path):
    r = cli("evaluate", ffnn_run, "--dataset", "sklearn-digits", "--out", tmp_path / "ev")
    assert r.code == 0, r.err
    assert "on sklearn-digits (360 test images" in r.out
    assert {"evaluation.json", "confusion.png", "misclassified.png"} <= {p.name for p in (tmp_path / "ev").iterdir()}


def test_threads_option(cli, ffnn_run, tmp_path):
    from threadpoolctl import threadpool_info

    from tegaki import threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # so that the option has something to change
        r = cli("evaluate", ffnn_run, "--threads", "1", "--out", tmp_path / "ev")
        assert r.code == 0, r.err
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        while threads._LIMITS:
            threads._LIMITS.pop().restore_original_limits()
        torch.set_num_threads(before)
    for args in (("evaluate", ffnn_run, "--threads", "0"), ("train", "--threads", "-2", "--out", tmp_path / "t")):
        bad = cli(*args)
        assert bad.code == 2 and "--threads must be at least 1" in bad.err
    assert not (tmp_path / "t").exists()
