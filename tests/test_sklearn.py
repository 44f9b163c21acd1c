"""tegaki.sklearn.CNNClassifier: a real scikit-learn estimator on real MNIST digits (a few thousand,
the small `fast` preset, one torch thread), inside Pipeline, cross_val_score and GridSearchCV, through
scikit-learn's own estimator checks, and refusing bad input with one-line InputErrors before training."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted

import tegaki.sklearn as tsk
from tegaki.arrays import InputError
from tegaki.errors import TegakiError
from tegaki.run import Run
from tegaki.sklearn import CNNClassifier, NotFitted
from tegaki.spec import load_preset

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sklearn.md"
N = 2000


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def digits(mnist):
    """(X, y, X_test, y_test): the first 2,000 MNIST training and 1,000 test digits."""
    return mnist.train_images[:N], mnist.train_labels[:N], mnist.test_images[:1000], mnist.test_labels[:1000]


@pytest.fixture(scope="module")
def fitted(digits):
    X, y, _, _ = digits
    torch.set_num_threads(1)
    return CNNClassifier("fast", epochs=3).fit(X, y)


def test_fit_predict_score_on_mnist(fitted, digits):
    X, y, Xt, yt = digits
    clf = fitted
    assert list(clf.classes_) == list(range(10))
    assert clf.n_features_in_ == 784
    assert isinstance(clf.run_, Run) and clf.run_.spec.num_classes == 10 and clf.run_.path is None
    assert len(clf.history_) == 3 and clf.history_[-1]["epoch"] == 3 and not clf.interrupted_
    proba = clf.predict_proba(Xt)
    assert proba.shape == (1000, 10) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(Xt), proba.argmax(axis=1))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(Xt)), proba, rtol=1e-12)
    acc = clf.score(Xt, yt)
    assert acc == np.mean(clf.predict(Xt) == yt)  # ClassifierMixin.score: accuracy
    assert 0.8 < acc <= 1.0  # the fast CNN after 3 epochs on 2,000 digits: about 0.88
    check_is_fitted(clf)


def test_the_same_images_in_every_form_give_the_same_answers(fitted, digits):
    Xt = digits[2][:200]
    want = fitted.predict_proba(Xt)
    for form in (Xt[:, None], Xt.reshape(200, 784), Xt / 255.0, (Xt / 255.0).astype(np.float32),
                 Xt.astype(np.int64), Xt.tolist()):
        np.testing.assert_array_equal(fitted.predict_proba(form), want)


def test_fit_is_seeded_and_leaves_params_and_spec_alone(digits):
    X, y, Xt, _ = digits
    spec = load_preset("fast")
    before = spec.to_json()
    a = CNNClassifier(spec, epochs=1, seed=3)
    params = a.get_params()
    assert a.fit(X, y) is a
    assert a.get_params() == params and a.spec is spec and spec.to_json() == before
    b = clone(a).fit(X / 255.0, y)  # the same pixels as floats: the same network
    for k, w in a.run_.weights.items():
        np.testing.assert_array_equal(w, b.run_.weights[k])
    state = dict(a.__dict__)
    a.predict(Xt)
    assert a.__dict__.keys() == state.keys() and all(a.__dict__[k] is v for k, v in state.items())
    # predicting in parts gives the same as predicting at once (to float32 rounding: batch sizes differ)
    np.testing.assert_allclose(np.concatenate([a.predict_proba(Xt[:300]), a.predict_proba(Xt[300:])]),
                               a.predict_proba(Xt), rtol=1e-4, atol=1e-6)
    c = CNNClassifier(spec, epochs=1, seed=4).fit(X, y)
    assert any(not np.array_equal(w, c.run_.weights[k]) for k, w in a.run_.weights.items())


def test_any_labels_and_a_preset_resized_to_the_classes(digits):
    X, y, Xt, yt = digits
    keep, keep_t = np.isin(y, [0, 1, 7]), np.isin(yt, [0, 1, 7])
    names = np.array(["zero", "one", "", "", "", "", "", "seven", "", ""], dtype=object)
    clf = CNNClassifier("fast", epochs=3).fit(X[keep], names[y[keep]])
    assert list(clf.classes_) == ["one", "seven", "zero"]  # np.unique: sorted
    assert clf.run_.spec.num_classes == 3 and clf.run_.classes == ["one", "seven", "zero"]
    assert load_preset("fast").num_classes == 10  # the preset itself is untouched
    pred = clf.predict(Xt[keep_t])
    assert set(pred) <= {"zero", "one", "seven"}
    assert clf.predict_proba(Xt[:5]).shape == (5, 3)
    assert clf.score(Xt[keep_t], names[yt[keep_t]]) > 0.9  # three well-separated digits


def test_a_spec_file_must_have_as_many_outputs_as_classes(digits, tmp_path, monkeypatch):
    X, y, _, _ = digits
    monkeypatch.setattr(tsk, "train", _no_training)
    with pytest.raises(InputError, match=r"has 10 outputs but y has 2 classes; give its last dense layer 2 units"):
        CNNClassifier(load_preset("fast")).fit(X[:100], y[:100] % 2)
    d = load_preset("fast").to_dict()
    [layer for layer in d["layers"] if layer["type"] == "dense"][-1]["units"] = 2
    del d["name"]  # a spec file is named after itself
    path = tmp_path / "two.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(InputError, match=r"spec 'two' has 2 outputs but y has 10 classes"):
        CNNClassifier(str(path)).fit(X[:100], y[:100])
    monkeypatch.undo()
    clf = CNNClassifier(path, epochs=1).fit(X, y % 2)  # even / odd
    assert clf.run_.spec.name == "two" and list(clf.classes_) == [0, 1]


def _no_training(*args, **kwargs):
    raise AssertionError("training started although the input was bad")


def _images(n=20, dtype=np.uint8):
    return np.zeros((n, 28, 28), dtype)


BAD = [  # (what, X, y, params, the message's gist)
    ("2-D of the wrong width", np.zeros((20, 3)), np.arange(20) % 2, {}, r"X has shape \(20, 3\); pass a batch"),
    ("one image", np.zeros((28, 28)), [0] * 28, {}, r"X has shape \(28, 28\); pass a batch"),
    ("1-D", np.zeros(784), [0], {}, r"X has shape \(784,\)"),
    ("NaN", np.full((20, 28, 28), np.nan), np.arange(20) % 2, {}, r"NaN or infinite"),
    ("no images", np.zeros((0, 784)), [], {}, r"X is empty"),
    ("floats above 1", _images(dtype=float) + 3.0, np.arange(20) % 2, {}, r"float pixels must be in 0..1"),
    ("negative floats", _images(dtype=float) - 0.5, np.arange(20) % 2, {}, r"float pixels must be in 0..1"),
    ("integers above 255", _images(dtype=np.int32) + 300, np.arange(20) % 2, {}, r"integer pixels must be in 0..255"),
    ("strings", _images().astype(str), np.arange(20) % 2, {}, r"holds <U"),
    ("complex", _images(dtype=complex), np.arange(20) % 2, {}, r"Complex data not supported"),
    ("ragged", [[0] * 784, [0] * 3], [0, 1], {}, r"X is not an array of images"),
    ("sparse", None, np.arange(20) % 2, {}, r"sparse matrix"),
    ("too few labels", _images(), np.arange(19) % 2, {}, r"X holds 20 images but y 19 labels"),
    ("labels as a column", _images(), (np.arange(20) % 2)[:, None], {}, r"y has shape \(20, 1\)"),
    ("NaN label", _images(), np.r_[np.zeros(19), np.nan], {}, r"label at index 19 is NaN"),
    ("one class", _images(), np.zeros(20), {}, r"one class only \(0.0\); a classifier needs"),
    ("continuous labels", _images(), np.linspace(0, 1, 20), {}, r"regression target"),
    ("mixed labels", _images(), np.array([1, "a"] * 10, dtype=object), {}, r"cannot be sorted into classes"),
    ("negative lr", _images(), np.arange(20) % 2, {"lr": -1.0}, r"^lr must be a positive number"),
    ("zero epochs", _images(), np.arange(20) % 2, {"epochs": 0}, r"^epochs must be at least 1"),
    ("unknown preset", _images(), np.arange(20) % 2, {"spec": "lenet9"}, r"unknown preset 'lenet9'"),
    ("missing spec file", _images(), np.arange(20) % 2, {"spec": "nowhere.toml"}, r"no such spec file"),
    ("spec of another type", _images(), np.arange(20) % 2, {"spec": 3}, r"spec=3: pass a preset name"),
    ("unknown optimizer", _images(), np.arange(20) % 2, {"optimizer": "lbfgs"}, r"unknown optimizer 'lbfgs'"),
    ("validation_fraction 1", _images(), np.arange(20) % 2, {"validation_fraction": 1.0}, r"validation_fraction"),
    ("constant images", _images(), np.arange(20) % 2, {"spec": "fast"}, r"every pixel of X is 0"),
]


@pytest.mark.parametrize("what,X,y,params,gist", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_input_error_before_training(what, X, y, params, gist, monkeypatch):
    if what == "sparse":
        from scipy import sparse

        X = sparse.csr_matrix(np.zeros((20, 784)))
    monkeypatch.setattr(tsk, "train", _no_training)
    with pytest.raises(InputError, match=gist) as e:
        CNNClassifier(**params).fit(X, y)
    assert isinstance(e.value, TegakiError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_bad_input_to_predict_and_predicting_before_fit(fitted):
    with pytest.raises(NotFitted, match=r"not fitted yet; call fit\(X, y\) first") as e:
        CNNClassifier().predict(_images())
    assert isinstance(e.value, NotFittedError) and isinstance(e.value, TegakiError)
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        with pytest.raises(NotFittedError):
            getattr(CNNClassifier(), method)(*([_images(), np.zeros(20)] if method == "score" else [_images()]))
    with pytest.raises(InputError, match=r"X has shape \(3, 10\)"):
        fitted.predict(np.zeros((3, 10)))
    with pytest.raises(InputError, match="NaN"):
        fitted.predict_proba(np.full((3, 784), np.nan))


def test_validation_fraction_holds_out_a_stratified_part(digits):
    X, y, _, _ = digits
    clf = CNNClassifier("fast", epochs=1, validation_fraction=0.1).fit(X, y)
    assert clf.history_[0]["valid_acc"] is not None and 0.0 < clf.history_[0]["valid_acc"] <= 1.0
    assert clf.run_.metrics["train_size"] == 1800 and clf.run_.metrics["valid_size"] == 200
    clf0 = CNNClassifier("fast", epochs=1).fit(X, y)
    assert clf0.history_[0]["valid_loss"] is None and clf0.run_.metrics["train_size"] == N


def test_pipeline_cross_val_score_and_grid_search(digits):
    X, y, Xt, yt = digits
    flat = FunctionTransformer(lambda a: a.reshape(len(a), -1) / 255.0)  # (N, 784) floats 0..1
    pipe = Pipeline([("flat", flat), ("cnn", CNNClassifier("fast", epochs=3))])
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and (scores > 0.6).all()
    grid = GridSearchCV(CNNClassifier("fast", epochs=3), {"lr": [0.01, 0.4]}, cv=2).fit(X, y)
    means = grid.cv_results_["mean_test_score"]
    assert grid.best_params_ == {"lr": 0.4} and means[1] > means[0]  # 0.01 is far too small for 3 short epochs
    assert grid.best_estimator_.lr == 0.4 and grid.best_estimator_.run_.meta["config"]["lr"] == 0.4
    assert grid.score(Xt, yt) > 0.8
    # set_params reaches the classifier inside a pipeline, and the pipeline refits with it
    pipe.set_params(cnn__epochs=1)
    assert pipe.fit(X, y).named_steps["cnn"].history_[-1]["epoch"] == 1


def test_scikit_learn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    expected = tsk.expected_failed_checks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(CNNClassifier("fast", epochs=1), expected_failed_checks=expected, on_fail=None)
    status = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    unexpected = {k: v for k, v in status.items() if k not in expected and v - {"passed", "skipped"}}
    assert not unexpected, unexpected
    for must_pass in ("check_get_params_invariance", "check_set_params", "check_estimator_cloneable",
                      "check_no_attributes_set_in_init", "check_estimators_unfitted", "check_complex_data",
                      "check_estimator_sparse_matrix", "check_parameters_default_constructible"):
        assert status[must_pass] == {"passed"}, must_pass
    assert set(expected) <= set(status)  # every listed check exists in this scikit-learn
    assert all(status[k] == {"xfail"} for k in expected)


def test_the_expected_failures_do_fail():
    """The list is not stale: each listed check, run on its own, still fails."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(CNNClassifier("fast", epochs=1), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(tsk.expected_failed_checks())


def test_docs_example_runs_as_written(mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    from conftest import run_python_blocks

    ns = run_python_blocks(DOC)
    assert ns["_blocks"] == 2
    out = capsys.readouterr().out
    assert "best {'lr': 0.4}" in out and out.rstrip().endswith("True")
    assert ns["clf"].score(ns["x_test"][:1000], ns["y_test"][:1000]) > 0.8
    assert list(ns["named"].classes_) == sorted(ns["names"])


def test_module_imports_the_real_scikit_learn_and_nothing_imports_it():
    assert tsk.BaseEstimator.__module__ == "sklearn.base"  # `sklearn` is scikit-learn, not tegaki.sklearn
    users = [p for p in (ROOT / "src").rglob("*.py")
             if p.name != "sklearn.py" and re.search(r"tegaki\.sklearn|from tegaki import[^\n]*\bsklearn\b",
                                                     p.read_text(encoding="utf-8"))]
    assert users == []


def test_verbose_prints_the_epoch_table_and_quiet_prints_nothing(digits, capsys):
    X, y, _, _ = digits
    CNNClassifier("fast", epochs=1).fit(X[:500], y[:500])
    assert capsys.readouterr().out == ""
    CNNClassifier("fast", epochs=1, verbose=1).fit(X[:500], y[:500])
    out = capsys.readouterr().out
    assert "training fast" in out and "500 train, 0 valid, 0 test" in out and " epoch | train loss" in out


def test_a_device_this_machine_lacks_is_a_bad_parameter():
    """device="cuda" without a GPU is an InputError (a ValueError), like every other bad parameter."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InputError, match="no CUDA GPU") as e:
        CNNClassifier(device="cuda", epochs=1).fit(_images(), np.arange(20) % 2)
    assert isinstance(e.value, ValueError)
