"""Probing a trained LeNet's hidden layers with scikit-learn classifiers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tegaki import figures
from tegaki import probe as P
from tegaki.predict import Predictor


@pytest.fixture(scope="module")
def small(mnist):
    """3,000 training and 2,000 test digits of the real MNIST (the fit is what is tested, not scale)."""
    return replace(mnist, train_images=mnist.train_images[-3000:], train_labels=mnist.train_labels[-3000:],
                   test_images=mnist.test_images[:2000], test_labels=mnist.test_labels[:2000])


@pytest.fixture(scope="module")
def extracted(lenet_run, small):
    pred = Predictor.load(lenet_run)
    feats, net_acc = P.extract(pred, small, ["pixels", "tanh3"], seed=0)
    return pred, feats, net_acc


def test_features_are_the_layers_outputs(extracted, small):
    pred, feats, _ = extracted
    f = feats["tanh3"]
    assert f.train.shape == (3000, 500) and f.test.shape == (2000, 500)
    assert sorted(f.train_index) == list(range(3000)) and not np.array_equal(f.train_index, np.arange(3000))
    rows = f.train_index[:5]
    acts = pred.engine.activations(pred.prepare(small.train_images[rows]))["tanh3"]
    np.testing.assert_allclose(f.train[:5], acts, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f.train_labels[:5], small.train_labels[rows])
    np.testing.assert_allclose(feats["pixels"].test[:3], pred.prepare(small.test_images[:3]).reshape(3, -1))


def test_probe_beats_chance_and_equals_scikit_learn(extracted):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, feats, net_acc = extracted
    f = feats["tanh3"]
    r = P.fit(f, "logreg", 2000)
    assert r.train_size == 2000 and r.dims == 500 and r.train_total == 3000
    assert r.accuracy > 0.9  # chance is 0.1; the 1-epoch network itself is about 0.97
    assert net_acc > 0.9
    # the same classifier, set up here by hand on the same 2,000 rows
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300, tol=1e-4))
    ref.fit(f.train[:2000], f.train_labels[:2000])
    assert r.accuracy == pytest.approx(float((ref.predict(f.test) == f.test_labels).mean()), abs=1e-12)
    # the hidden layer is a better input than the raw pixels, as in the source documents
    assert r.accuracy > P.fit(feats["pixels"], "logreg", 2000).accuracy


def test_kernel_svm_is_scikit_learns_rbf_svc(extracted):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    _, feats, _ = extracted
    f = feats["pixels"]
    ours = P.make_classifier("svm").fit(f.train[:800], f.train_labels[:800])
    ref = make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale")).fit(f.train[:800],
                                                                                       f.train_labels[:800])
    a, b = ours.predict(f.test[:1000]), ref.predict(f.test[:1000])
    assert (a == b).mean() >= 0.998 and (a == f.test_labels[:1000]).mean() > 0.8


def test_every_classifier_and_the_table(extracted, tmp_path):
    from PIL import Image

    _, feats, net_acc = extracted
    results = [P.fit(feats[k], c, 600) for c in P.CLASSIFIERS for k in ("pixels", "tanh3")]
    for r in results:
        assert r.accuracy > 0.5, r
    text = P.table(results, net_acc, "lenet")
    assert "dense1->tanh3" in text and "pixels" in text and "lenet softmax" in text
    assert "a seeded random subset of 3,000" in text
    for c in P.CLASSIFIERS:
        assert f"{c} (600)" in text
    with Image.open(figures.save(figures.probe_accuracy(results, net_acc), tmp_path / "probe.png")) as im:
        assert im.format == "PNG" and im.width > 400


def test_saved_features_load_without_pickle(extracted, tmp_path):
    _, feats, _ = extracted
    path = tmp_path / "f.npz"
    P.save_features(path, feats)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"pixels_train", "pixels_test", "tanh3_train", "tanh3_test", "train_labels",
                                "test_labels", "train_index"}
        np.testing.assert_array_equal(z["tanh3_train"], feats["tanh3"].train)
        np.testing.assert_array_equal(z["train_index"], feats["tanh3"].train_index)


def test_probe_command(cli, lenet_run, tmp_path):
    out = tmp_path / "f.npz"
    r = cli("probe", lenet_run, "--layer", "tanh3", "--classifier", "logreg", "--train-size", "1500",
            "--save-features", out)
    assert r.code == 0, r.err
    assert "dense1->tanh3" in r.out and "lenet softmax" in r.out and "logreg (1,500)" in r.out
    with np.load(out, allow_pickle=False) as z:
        assert z["tanh3_train"].shape == (1500, 500) and z["tanh3_test"].shape == (10000, 500)


def test_probe_bad_input_is_one_line(cli, lenet_run, tmp_path):
    cases = [(("--layer", "conv9"), "no layer named 'conv9'"),
             (("--classifier", "forest"), "unknown classifier 'forest'"),
             (("--train-size", "3"), "--train-size"),
             (("--save-features", tmp_path / "f.txt"), "ending in .npz"),
             (("--save-features", tmp_path / "nope" / "f.npz"), "does not exist")]
    for extra, msg in cases:
        r = cli("probe", lenet_run, *extra)
        assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, (extra, r.err)
