"""The public Python API: what `import tegaki as tg` exports, and a model built, trained, used, saved and
loaded from Python, checked against the library it stands on (the Predictor, evaluate, the run folder)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import tegaki as tg
from tegaki.arrays import InputError, InputWarning, as_images, as_labels
from tegaki.errors import TegakiError


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_all_is_what_is_exported_and_documented():
    ns: dict = {}
    exec("from tegaki import *", ns)
    assert set(ns) - {"__builtins__"} == set(tg.__all__)
    import types

    # every other public name of the package is one of its submodules (tegaki.spec, tegaki.train ...)
    others = {n for n in dir(tg) if not n.startswith("_")} - set(tg.__all__)
    assert all(isinstance(getattr(tg, n), types.ModuleType) and getattr(tg, n).__name__ == f"tegaki.{n}"
               for n in others - {"annotations", "importlib"}), others
    for name in tg.__all__:
        value = getattr(tg, name)
        if name != "__version__":
            assert inspect.getdoc(value), f"tg.{name} has no docstring"


def test_import_is_light():
    code = "import sys, tegaki; import tegaki.datasets, tegaki.arrays; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def small_net() -> tg.Sequential:
    return tg.Sequential([tg.Conv2d(8, 5), tg.MaxPool(2), tg.ReLU(), tg.Flatten(), tg.Dense(10), tg.Softmax()])


@pytest.fixture(scope="module")
def trained(mnist):
    m = small_net()
    h = m.fit(mnist.train_images[:4000], mnist.train_labels[:4000], epochs=2, batch_size=64,
              validation_data=(mnist.train_images[4000:4500], mnist.train_labels[4000:4500]), verbose=0, seed=1)
    return m, h


def test_ten_line_cell(mnist_dir, monkeypatch):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    (x, y), (xt, yt) = tg.datasets.mnist.load_data()
    model = tg.Sequential([tg.Flatten(), tg.Dense(64), tg.ReLU(), tg.Dense(10), tg.Softmax()])
    model.summary()
    model.fit(x[:3000], y[:3000], epochs=1, verbose=0)
    ev = model.evaluate(xt[:1000], yt[:1000])
    assert ev.plot_confusion().axes and ev.accuracy > 0.75


def test_fit_history_is_keras_shaped_and_matches_the_table(trained):
    m, h = trained
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert len(h.history["loss"]) == 2 and h.epoch == [0, 1]
    assert h.history["val_loss"] == [r["valid_loss"] for r in h.rows]
    assert h.plot().axes


def test_predictions_agree_with_the_predictor_and_evaluate(trained, mnist):
    m, _ = trained
    x, y = mnist.test_images[:1000], mnist.test_labels[:1000]
    p = m.predict_proba(x)
    np.testing.assert_allclose(p, m.predictor.predict_proba(x), rtol=1e-6)
    assert (m.predict(x) == p.argmax(1)).all()
    ev = m.evaluate(x, y)
    assert ev.accuracy == pytest.approx((p.argmax(1) == y).mean()) and ev.accuracy > 0.85
    assert ev.confusion_matrix.sum() == 1000 and "precision" in ev.report()
    assert ev.plot_mistakes().axes
    # floats 0..1, (N, 784) and (N, 1, 28, 28) give the same answer as uint8 (N, 28, 28)
    for view in (x / 255.0, x.reshape(1000, 784), x[:, None]):
        np.testing.assert_allclose(m.predict_proba(view), p, rtol=1e-5, atol=1e-7)
    assert m.predict(x[0]).shape == (1,)


def test_save_load_and_the_cli_reads_it(trained, mnist, tmp_path, cli):
    m, _ = trained
    folder = m.save(tmp_path / "mine")
    again = tg.load(folder)
    x = mnist.test_images[:200]
    np.testing.assert_array_equal(again.predict_proba(x), m.predict_proba(x))
    r = cli("evaluate", folder)
    assert r.code == 0, r.err
    assert "10,000 test images" in r.out
    with pytest.raises(TegakiError, match=r"already exists and is not an empty folder; save to a new folder \(a run is never"):
        m.save(folder)  # in Python's words: no --out or --resume to name


def test_second_fit_continues(mnist):
    m = small_net()
    x, y = mnist.train_images[:2000], mnist.train_labels[:2000]
    m.fit(x, y, epochs=1, verbose=0)
    before = m.weights["dense1.weight"].copy()
    h = m.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(before, m.weights["dense1.weight"])
    first = small_net().fit(x, y, epochs=1, verbose=0)  # the same first epoch, from the seeded start
    assert h.rows[0]["train_loss"] < 0.8 * first.rows[0]["train_loss"]  # the second fit starts where it was


def test_features_and_torch_module_share_weights(trained, mnist):
    m, _ = trained
    x = mnist.test_images[:16]
    f = m.features(x, layer="flatten1")
    assert f.shape == (16, 8 * 12 * 12)
    net = m.torch_module()
    xn = (torch.from_numpy(x[:, None].astype(np.float32)) / 255 - m.run.norm["mean"]) / m.run.norm["std"]
    with torch.no_grad():
        logits = net(xn).numpy()
    t = m.predictor.temperature  # fitted on the validation data given to fit
    assert t != 1.0 and m.run.meta["calibration"]["held_out"]
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits) / t, 1).numpy(), m.predict_proba(x),
                               rtol=1e-5, atol=1e-6)


def test_numpy_engine_fit(mnist):
    m = tg.Sequential([tg.Flatten(), tg.Dense(32), tg.Sigmoid(), tg.Dense(10), tg.Softmax()])
    m.fit(mnist.train_images[:2000], mnist.train_labels[:2000], epochs=1, engine="numpy", verbose=0,
          optimizer="sgd", lr=0.5)
    assert m.evaluate(mnist.test_images[:500], mnist.test_labels[:500]).accuracy > 0.6


def test_ctrl_c_keeps_the_model_usable(mnist, monkeypatch):
    import tegaki.model

    rows = []

    def interrupting_print(msg=""):  # Ctrl-C while the second epoch's row is printed
        rows.append(msg)
        if sum(1 for r in rows if str(r).strip()[:1].isdigit()) == 2 and not str(msg).startswith("interrupted"):
            rows.append("interrupted")
            raise KeyboardInterrupt

    monkeypatch.setattr(tegaki.model, "print", interrupting_print, raising=False)
    m = small_net()
    h = m.fit(mnist.train_images[:1000], mnist.train_labels[:1000], epochs=20, verbose=1)
    # the second epoch had finished, and is recorded (as a run folder's checkpoint is) before its row is shown
    assert h.interrupted and len(h.rows) == 2
    assert m.predict(mnist.test_images[:5]).shape == (5,)


@pytest.mark.parametrize("x, words", [
    (np.zeros((5, 27, 28), np.uint8), "has shape (5, 27, 28)"),
    (np.zeros((0, 28, 28), np.uint8), "empty"),
    (np.full((2, 28, 28), np.nan), "NaN"),
    (np.full((2, 28, 28), 200.0), "float pixels must be in 0..1"),
    (-np.ones((2, 28, 28)), "go from -1 to -1; pass raw pixels, not normalised ones: rescale to 0..1"),
    (np.full((2, 28, 28), 300, np.int64), "integer pixels must be in 0..255"),
    (np.array([["a"] * 784]), "holds <U1 values"),
])
def test_bad_images(x, words):
    with pytest.raises(InputError) as e:
        as_images(x)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("y, words", [
    (np.arange(3), "3 labels for 4 images"),
    (np.array([0, 1, 2, 10]), "labels from 0 to 10"),
    (np.array([0, 1, 2.5, 3]), "not whole numbers"),
    (np.zeros((4, 2)), "shape (4, 2)"),
])
def test_bad_labels(y, words):
    with pytest.raises(InputError, match=".*") as e:
        as_labels(y, 4, 10)
    assert words in str(e.value)


def test_one_hot_labels_are_accepted():
    assert list(as_labels(np.eye(10)[[3, 1, 4]], 3, 10)) == [3, 1, 4]


def test_bad_fit_fails_before_training(mnist):
    m = small_net()
    with pytest.raises(InputError, match="labels from"):
        m.fit(mnist.train_images[:10], np.full(10, 12), verbose=0)
    with pytest.raises(TegakiError, match="not trained yet"):
        m.predict(mnist.test_images[:2])
    wide = tg.Sequential([tg.Flatten(), tg.Dense(10), tg.Softmax()], input_shape=(1, 32, 32))
    with pytest.raises(InputError, match=r"\(N, 32, 32\)"):
        wide.fit(mnist.train_images[:10], mnist.train_labels[:10], verbose=0)
    with pytest.raises(TegakiError, match="unknown optimizer"):
        small_net().compile(optimizer="rmsprop")
    with pytest.raises(TegakiError, match="momentun"):
        small_net().compile(momentun=0.9)
    with pytest.raises(TegakiError, match="units must be"):
        tg.Sequential([tg.Flatten(), tg.Dense("ten")]).summary()


def test_inverted_and_off_centre_digits_are_warned_about(trained, mnist):
    m, _ = trained
    x = mnist.test_images[:50]
    with pytest.warns(InputWarning, match="inverted"):
        m.predict(255 - x)
    shifted = np.zeros_like(x)
    shifted[:, :14, :14] = x[:, 7:21, 7:21]
    with pytest.warns(InputWarning, match="centred"):
        m.predict(shifted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict(x)  # MNIST itself: no warning


def test_load_dataset_reads_tegaki_data_dir(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(mnist_dir.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    ds = tg.load_dataset("mnist", verbose=False)
    assert len(ds.train_labels) == 60000 and str(mnist_dir.parent) in ds.provenance["source"]


def test_bundled_loads_and_predicts(mnist):
    m = tg.load("bundled")
    assert (m.predict(mnist.test_images[:200]) == mnist.test_labels[:200]).mean() > 0.95


def test_pictures_are_figures_from_the_model(trained, mnist, tmp_path):
    from matplotlib.figure import Figure

    m, _ = trained
    img = mnist.test_images[0]
    figs = [m.plot(), m.plot_filters(), m.plot_feature_maps(img), m.plot_activations(img), m.plot_saliency(img)]
    assert all(isinstance(f, Figure) and f.axes for f in figs)
    # filters before training are kept by fit and by the saved folder
    folder = m.save(tmp_path / "f")
    np.testing.assert_array_equal(tg.load(folder).initial_weights()["conv1.weight"],
                                  m.initial_weights()["conv1.weight"])
    assert not np.array_equal(m.initial_weights()["conv1.weight"], m.weights["conv1.weight"])
    with pytest.raises(TegakiError, match="no conv layers"):
        tg.Sequential([tg.Flatten(), tg.Dense(10), tg.Softmax()]).plot_filters()
    # a picture's path is preprocessed as predict_image does: the maps are those of that 28x28 digit
    from PIL import Image

    big = Image.fromarray(img).resize((140, 140))
    big.save(tmp_path / "seven.png")
    pre = m.predictor.preprocess(tmp_path / "seven.png").image
    assert np.array_equal(m._one_image(str(tmp_path / "seven.png")), pre)
    assert isinstance(m.plot_feature_maps(tmp_path / "seven.png"), Figure)
    Image.new("L", (50, 50)).save(tmp_path / "blank.png")
    with pytest.raises(InputError, match="blank.png: no digit found"):
        m.plot_saliency(tmp_path / "blank.png")


def test_the_glass_box_loop_and_gradcheck(mnist):
    """Source document 5's loop, written by hand on the NumPy layers: the loss falls, gradients check out."""
    m = tg.Sequential([tg.Conv2d(3, 3), tg.ReLU(), tg.MaxPool(2), tg.Flatten(), tg.Dense(16), tg.Sigmoid(),
                       tg.Dense(10), tg.Softmax()])
    net = m.numpy_net()
    x, y = net.inputs(mnist.train_images[:256]), mnist.train_labels[:256]
    errors = tg.gradcheck(net, x[:3], y[:3])
    assert set(errors) == {"conv1.weight", "conv1.bias", "dense1.weight", "dense1.bias", "dense2.weight",
                           "dense2.bias"} and max(errors.values()) < 1e-5, errors
    first = net.loss(net.forward(x), y)[0]
    for _ in range(30):
        for i in range(0, 256, 32):
            loss, d = net.loss(net.forward(x[i:i + 32]), y[i:i + 32])
            net.backward(d)
            net.step(0.5)
    assert net.loss(net.forward(x), y)[0] < 0.5 * first
    # a broken backward is caught: zero one layer's gradient and gradcheck reports it
    net.layers[4].backward = lambda dy, f=net.layers[4].backward: f(dy) * 0
    assert tg.gradcheck(net, x[:3], y[:3])["conv1.weight"] > 0.5


@pytest.mark.parametrize("preset", ["ffnn", "resnet-small"])
def test_gradcheck_keeps_its_documented_threshold_on_presets(mnist, preset):
    """A right backward pass stays below 1e-6 (gradient entries of 1e-7 used to read 1e-3: the difference quotient's
    rounding over a 1e-8 floor); a backward 1% off is still caught."""
    from tegaki.glassbox import NumpyNet

    net = NumpyNet(tg.load_preset(preset))
    x, y = net.inputs(mnist.train_images[:5]), mnist.train_labels[:5]
    errors = tg.gradcheck(net, x, y)
    assert max(errors.values()) < 1e-6, errors
    last = net.layers[-2] if preset == "ffnn" else net.layers[3]
    last.backward = lambda dy, f=last.backward: f(dy) * 1.01
    assert max(tg.gradcheck(net, x, y).values()) > 1e-3


def test_a_second_fit_and_a_loaded_runs_fit_number_their_epochs_on(mnist, tmp_path):
    """Two fits of 2 epochs save epochs 1..4 (not 1, 2, 1, 2); a loaded run's fit goes on from its last epoch."""
    import csv

    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    m = small_net()
    m.fit(x, y, epochs=2, verbose=0)
    h = m.fit(x, y, epochs=2, verbose=0)
    assert [r["epoch"] for r in h.rows] == [1, 2]  # this fit's own table
    m.save(tmp_path / "a")
    rows = list(csv.DictReader(open(tmp_path / "a" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"] == 4
    again = tg.load(tmp_path / "a")
    again.fit(x, y, epochs=1, verbose=0)
    again.save(tmp_path / "b")
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "b" / "history.csv"))] == [1, 2, 3, 4, 5]


def test_more_wrong_kinds_of_argument_are_one_line(mnist):
    """From the notebook probe: a layer for a list, a fraction as text, batch sizes below 1, gradcheck on the
    Sequential or with eps 0 or no entries, NumpyNet of a name or a model, a dataset named by None."""
    from tegaki.data.sources import load_dataset
    from tegaki.glassbox import NumpyNet

    x, y = mnist.train_images[:40], mnist.train_labels[:40]
    with pytest.raises(TegakiError, match=r"^Sequential takes its layers as a list, got Dense"):
        tg.Sequential(tg.Dense(10))
    m = small_net()
    with pytest.raises(TegakiError, match="^validation_split must be a fraction"):
        m.fit(x, y, epochs=1, verbose=0, validation_split="0.1")
    m.fit(x, y, epochs=1, verbose=0)
    for bad in (0, -1, 2.5):
        with pytest.raises(TegakiError, match="^batch_size must be a whole number of at least 1"):
            m.predict_proba(x, batch_size=bad)
    with pytest.raises(TegakiError, match=r"^gradcheck takes a NumpyNet, got Sequential; pass model.numpy_net\(\)"):
        tg.gradcheck(m, x[:2], y[:2])
    net = m.numpy_net()
    for kw in ({"eps": 0}, {"per_param": 0}):
        with pytest.raises(TegakiError, match="^gradcheck needs eps in"):
            tg.gradcheck(net, net.inputs(x[:2]), y[:2], **kw)
    assert NumpyNet("ffnn").spec.name == "ffnn"  # a preset's name, as the CLI takes it
    with pytest.raises(TegakiError, match="^NumpyNet takes a Spec or a preset's name, got Sequential"):
        NumpyNet(m)
    with pytest.raises(TegakiError, match="^a dataset is named by a string"):
        load_dataset(None)
    from scipy import sparse

    with pytest.raises(InputError, match=r"^x is a sparse matrix; pass a dense array of images \(x.toarray\(\)\)"):
        m.predict(sparse.csr_matrix(np.zeros((3, 784))))  # it said "x holds object values"


def test_the_glass_box_says_what_it_takes(mnist):
    """The natural mistakes with numpy_net (raw images to forward, labels of the wrong length, a gradient of the
    wrong shape, a learning rate that is not a number) are one-line InputErrors, not NumPy broadcasting errors."""
    net = tg.Sequential([tg.Flatten(), tg.Dense(8), tg.Sigmoid(), tg.Dense(10), tg.Softmax()]).numpy_net()
    x, y = net.inputs(mnist.train_images[:3]), mnist.train_labels[:3]
    with pytest.raises(InputError, match="backward needs a forward first"):
        net.backward(np.zeros((3, 10)))
    for bad, words in [(mnist.train_images[:2], r"got uint8 \(2, 28, 28\); turn images into them with net.inputs"),
                       (x[:, 0], r"shape \(N, 1, 28, 28\), got float64 \(3, 28, 28\)")]:
        with pytest.raises(InputError, match=words):
            net.forward(bad)
    z = net.forward(x)
    for labels, words in [(y[:2], "2 labels for 3 images"), (np.full(3, 12), "this network has 10 classes, 0..9")]:
        with pytest.raises(InputError, match=words):
            net.loss(z, labels)
    with pytest.raises(InputError, match=r"shaped like the last forward's logits \(3, 10\), got float64 \(3, 3\)"):
        net.backward(np.zeros((3, 3)))
    for lr in ("a", -0.1, float("nan"), True):
        with pytest.raises(InputError, match="step takes a positive learning rate"):
            net.step(lr)
    net.backward(net.loss(z, y)[1])  # the right calls still work
    net.step(0.1)
    net.step(np.float32(0.1)), net.step(np.int64(1))  # NumPy's numbers are numbers too


def test_onnx_engine_without_the_extra_says_what_to_install(monkeypatch):
    import importlib.util

    from tegaki.engines import make_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    with pytest.raises(TegakiError, match=r"--engine onnx needs onnxruntime: pip install 'tegaki\[onnx\]'"):
        make_engine("onnx", small_net().spec)


def test_probe_from_python(trained, mnist):
    """Source 1's transfer learning: hidden features beat raw pixels for a linear classifier."""
    m, _ = trained
    t = tg.probe(m, mnist.train_images[:3000], mnist.train_labels[:3000], mnist.test_images[:1000],
                 mnist.test_labels[:1000], classifiers=("logreg",), max_train=3000)
    assert {r.layer for r in t.results} == {"pixels", "relu1"} and len(t.results) == 2
    assert t.accuracy("logreg", "relu1") > 0.85 and 0.8 < t.network_accuracy <= 1
    assert "logreg" in str(t) and t.plot().axes
    ours = (m.predict(mnist.test_images[:1000]) == mnist.test_labels[:1000]).mean()
    assert t.network_accuracy == pytest.approx(ours)
    with pytest.raises(TegakiError, match="unknown classifier"):
        tg.probe(m, mnist.train_images[:10], mnist.train_labels[:10], mnist.test_images[:10],
                 mnist.test_labels[:10], classifiers=("forest",))
    args = (m, mnist.train_images[:60], mnist.train_labels[:60], mnist.test_images[:20], mnist.test_labels[:20])
    for bad in (-5, 0, 3, 2.5, True):  # -5 used to fit on all but 10 rows and call the row "(-5)"
        with pytest.raises(TegakiError, match="^max_train must be a whole number of at least 10"):
            tg.probe(*args, max_train=bad)
    with pytest.raises(TegakiError, match="^y_train holds one class only"):
        tg.probe(m, mnist.train_images[:60], np.full(60, 3), mnist.test_images[:20], mnist.test_labels[:20])
    one = tg.probe(*args, classifiers="logreg", max_train=None)  # one name, not the letters l, o, g ...
    assert {r.classifier for r in one.results} == {"logreg"} and all(r.train_size == 60 for r in one.results)


def test_wrong_kinds_of_argument_are_one_line(mnist):
    """An unknown fit option, a load of something that is not a path, and an int as a picture (which open()
    would take as a file descriptor)."""
    m = small_net()
    with pytest.raises(TegakiError, match="^unknown training option 'bogus'; choose from epochs, batch_size"):
        m.fit(mnist.train_images[:100], mnist.train_labels[:100], epochs=1, verbose=0, bogus=3)
    with pytest.raises(TegakiError, match="^epochs must be at least 1, got 0$"):  # the keyword, not --epochs
        m.fit(mnist.train_images[:100], mnist.train_labels[:100], epochs=0, verbose=0)
    with pytest.raises(TegakiError, match="^label_smoothing must be a number in"):
        m.compile("adam", label_smoothing=1.5)
    for ref in (None, 3):
        with pytest.raises(TegakiError, match="give a run folder \\(a path\\) or 'bundled'"):
            tg.load(ref)
    with pytest.raises(TegakiError, match="cannot read an image from int '3'"):
        tg.load("bundled").predict_image(3)


def test_figures_with_names_the_font_lacks_draw_without_warnings(recwarn):
    from matplotlib.figure import Figure

    from tegaki import figures

    fig = Figure()
    fig.add_subplot().set_title("私の数字 ユニコード")
    assert figures.to_png(fig)[:4] == b"\x89PNG"
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_one_image_plots_refuse_a_batch(mnist):
    """plot_feature_maps takes one image: a batch used to draw its first image without a word."""
    m = small_net()
    m.fit(mnist.train_images[:100], mnist.train_labels[:100], epochs=1, verbose=0)
    with pytest.raises(InputError, match="^give one image here, got 5; pick one"):
        m.plot_feature_maps(mnist.test_images[:5])
    m.plot_feature_maps(mnist.test_images[0])  # one image, as the docs say
    m.plot_feature_maps(mnist.test_images[:1])
