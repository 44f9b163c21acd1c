"""tegaki.figures: every picture is a matplotlib Figure, rendered to PNG bytes or saved atomically;
names that look like mathtext are drawn as written; learning curves tick whole epochs; the report
and the commands never write into the installed package."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from tegaki import diagram, figures
from tegaki.spec import load_preset

PNG = b"\x89PNG\r\n\x1a\n"
MATHS = ["$x^$", "a$b", r"\frac", r"$\alpha$", "$", "5", "6", "7", "8", "9"]  # each fails as mathtext


def history(epochs: int, valid: bool = True) -> list[dict]:
    return [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e if valid else None, "train_acc": 1 - 0.1 / e,
             "valid_acc": 1 - 0.12 / e if valid else None} for e in range(1, epochs + 1)]


def rng_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 28, 28)).astype(np.uint8)


def probe_result(classifier, label, accuracy, dims=500, train_size=600):
    return SimpleNamespace(classifier=classifier, label=label, accuracy=accuracy, dims=dims, train_size=train_size)


def every_figure() -> dict[str, Figure]:
    lenet = load_preset("lenet")
    w0, w1 = lenet.init_weights(0), lenet.init_weights(1)
    rng = np.random.default_rng(0)
    img = rng_images(1)[0]
    probs = rng.dirichlet(np.ones(10), 20)
    labels = np.arange(20) % 10
    classes = [str(i) for i in range(10)]
    maps = {"conv1": rng.normal(size=(20, 24, 24)), "pool1": rng.normal(size=(20, 12, 12))}
    return {
        "learning_curves": figures.learning_curves(history(3), "x"),
        "learning_curves_train_only": figures.learning_curves(history(40, valid=False)),
        "confusion_matrix": figures.confusion_matrix(rng.integers(0, 50, (10, 10)), classes),
        "gallery": figures.gallery(rng_images(12), [f"#{i}" for i in range(12)], cols=5, title="t"),
        "misclassified": figures.misclassified(rng_images(20), labels, probs.argmax(1), probs, classes),
        "filters": figures.filters(w0, w1, "conv2"),
        "filters_after_only": figures.filters(None, w1, "conv1"),
        "feature_maps": figures.feature_maps(img, maps, {"conv1": (20, 24, 24), "pool1": (20, 12, 12)}, "maps"),
        "activations": figures.activations([("tanh3", rng.normal(size=500)), ("probabilities", probs[0])], classes),
        "attribution": figures.attribution(img, rng.normal(size=(28, 28)), rng.normal(size=(12, 12)), "why",
                                           figures.OCCLUSION_NOTE),
        "attribution_no_occlusion": figures.attribution(img, rng.normal(size=(28, 28))),
        "embedding": figures.embedding(rng.normal(size=(20, 2)), labels, classes, "pca"),
        "probe_accuracy": figures.probe_accuracy([probe_result("logreg", "pixels", 0.9),
                                                  probe_result("logreg", "tanh3", 0.95)], 0.97),
        "diagram": diagram.draw(lenet, title="lenet"),
    }


def test_every_figure_function_returns_a_figure_that_renders_to_png():
    for name, fig in every_figure().items():
        assert isinstance(fig, Figure), name
        png = figures.to_png(fig, dpi=50)
        assert png[:8] == PNG, name
        with Image.open(io.BytesIO(png)) as im:
            assert im.width > 50 and im.height > 50, (name, im.size)


def test_figures_stay_out_of_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    every_figure()
    assert plt.get_fignums() == before  # nothing registered globally: notebooks and servers leak nothing


def test_to_png_dpi_scales_the_picture():
    fig = figures.confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"])
    with Image.open(io.BytesIO(figures.to_png(fig, dpi=50))) as small, \
            Image.open(io.BytesIO(figures.to_png(fig, dpi=100))) as big:
        assert abs(big.width / small.width - 2) < 0.1


def test_save_writes_atomically_and_returns_the_path(tmp_path):
    path = tmp_path / "sub" / "lc.png"
    out = figures.save(figures.learning_curves(history(3)), path)
    assert out == path and path.read_bytes()[:8] == PNG
    assert os.listdir(path.parent) == ["lc.png"]  # no temporary file left beside it
    path.write_bytes(b"old")
    bad = Figure()
    bad.text(0.5, 0.5, "$x^$")  # unescaped: rendering raises
    with pytest.raises(ValueError):  # a failing render leaves the old file whole and no temporary file
        figures.save(bad, path)
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["lc.png"]


def test_save_closes_a_pyplot_figure(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.add_subplot().plot([1, 2])
    assert fig.number in plt.get_fignums()
    figures.save(fig, tmp_path / "p.png")
    assert fig.number not in plt.get_fignums() and (tmp_path / "p.png").read_bytes()[:8] == PNG


def shown(text_obj) -> tuple[str, bool]:
    """What matplotlib draws for a Text: (string, read as maths?), by its own preprocessing."""
    return text_obj._preprocess_math(text_obj.get_text())


def test_plain_keeps_mathtext_out():
    from matplotlib.text import Text

    for name in MATHS:
        assert shown(Text(0, 0, figures.plain(name))) == (name, False), name


def test_class_names_that_look_like_maths_draw_as_written():
    cm = np.arange(100).reshape(10, 10)
    fig = figures.confusion_matrix(cm, MATHS, title="on $x^$")
    png = figures.to_png(fig)  # mathtext would raise ValueError here
    assert png[:8] == PNG
    ax = fig.axes[0]
    assert [shown(t) for t in ax.get_xticklabels()] == [(c, False) for c in MATHS]
    assert [shown(t) for t in ax.get_yticklabels()] == [(c, False) for c in MATHS]
    assert shown(ax.title) == ("on $x^$", False)
    probs = np.full((3, 10), 0.1)
    for fig in (figures.activations([("probabilities", probs[0])], MATHS, "$x^$"),
                figures.embedding(np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 10, MATHS, "$x^$"),
                figures.misclassified(rng_images(3), np.array([0, 1, 2]), np.array([1, 2, 3]), probs, MATHS),
                figures.learning_curves(history(2), "run $x^$")):
        assert figures.to_png(fig)[:8] == PNG


def test_unescaped_names_do_fail_so_the_test_above_means_something():
    fig = Figure()
    fig.text(0.5, 0.5, "$x^$")
    with pytest.raises(ValueError):
        figures.to_png(fig)


@pytest.mark.parametrize("epochs", [1, 2, 3, 7])
def test_learning_curves_tick_whole_epochs(epochs):
    fig = figures.learning_curves(history(epochs))
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
        assert set(range(1, epochs + 1)) >= set(map(int, ticks)) - {0, epochs + 1}
    if epochs == 3:
        assert [int(t) for t in fig.axes[0].get_xticks() if 1 <= t <= 3] == [1, 2, 3]


def test_pixel_pictures_are_uint8_rgb_enlarged():
    a = figures.colourise(np.arange(6).reshape(2, 3), scale=3)
    assert a.shape == (6, 9, 3) and a.dtype == np.uint8
    assert a[0, 0].tolist() == [0, 0, 0] and a[-1, -1].tolist() == [255, 255, 255]  # gray: min black, max white
    assert (a[:3, :3] == a[0, 0]).all()  # nearest-neighbour blocks
    s = figures.saliency_overlay(np.array([[0, 255]]), np.array([[0.0, -2.0]]), 2.0, scale=1)
    assert s.shape == (1, 2, 3)
    # no gradient, no ink: 'hot' at 0 is (0.0416, 0, 0), times 0.75; |gradient| = vmax on white ink: clipped white
    assert s[0, 0].tolist() == [8, 0, 0] and s[0, 1].tolist() == [255, 255, 255]


# the report with such class names -----------------------------------------------------------------
@pytest.fixture(scope="module")
def maths_run(tmp_path_factory):
    """An untrained LeNet run whose classes are names mathtext cannot parse, with a 3-epoch history."""
    from tegaki.run import make_meta, save_run

    out = tmp_path_factory.mktemp("runs") / "maths"
    spec = load_preset("lenet")
    meta = make_meta(spec, MATHS, {"mean": 0.13, "std": 0.31}, {"source": "test"}, 0, {"dataset": "mnist"},
                     command=["test"])
    save_run(out, spec, spec.init_weights(0), meta, history(3), {"test_accuracy": 0.1},
             initial=spec.init_weights(1))
    return out


def test_report_with_mathtext_class_names(maths_run, tmp_path):
    import html

    from tegaki.predict import Predictor
    from tegaki.report import build_report

    pred = Predictor.load(maths_run)
    rng = np.random.default_rng(0)
    ds = SimpleNamespace(name="synthetic $x^$", test_images=rng_images(120), test_labels=rng.integers(0, 10, 120))
    r = build_report(pred, ds, tmp_path / "r.html", index=2, gallery_limit=4, tsne_sample=40)
    text = r.path.read_text()
    assert r.images > 10 and os.listdir(tmp_path) == ["r.html"]
    for name in MATHS[:5]:
        assert f"<td class=l>{html.escape(name)}</td>" in text  # the per-class table row
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # still one self-contained file
    assert set(r.timings) >= {"forward pass over the test set", "summary", "confusion", "t-SNE"}
    # class names longer than a digit: each mistake card gives its top two on lines of their own, wrapping
    cards = re.findall(r'<div class="card" id="m\d+">.*?</div>', text)
    assert cards and all("<span>top-2: " in c and c.count("<br>") >= 4 and "class=nw" not in c for c in cards)


# no output into the installed package ------------------------------------------------------------
def package_files() -> set[Path]:
    from tegaki.run import bundled_model_path

    return set(bundled_model_path().rglob("*"))


def test_default_outputs_of_the_bundled_model_are_in_the_current_folder(tmp_path, monkeypatch):
    from tegaki.commands import inspect as ci
    from tegaki.commands import report as cr
    from tegaki.run import bundled_model_path, load_run

    if bundled_model_path() is None:
        pytest.skip("no bundled model in this checkout")
    bundled, other = load_run("bundled"), SimpleNamespace(path=tmp_path / "run")
    assert ci.default_out(bundled) == Path("inspect-bundled") and ci.default_out(other) == tmp_path / "run" / "inspect"
    assert cr.default_out(bundled) == Path("report-bundled.html")
    assert cr.default_out(other) == tmp_path / "run" / "report.html"


def test_inspect_bundled_writes_here(cli, tmp_path, monkeypatch):
    from tegaki.run import bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("no bundled model in this checkout")
    before = package_files()
    monkeypatch.chdir(tmp_path)
    r = cli("inspect", "bundled", "--only", "diagram,filters")
    assert r.code == 0, r.err
    written = sorted(p.name for p in (tmp_path / "inspect-bundled").iterdir())
    assert "diagram.png" in written and any(n.startswith("filters_") for n in written), written
    assert package_files() == before


def test_report_bundled_writes_here(cli, mnist_dir, tmp_path, monkeypatch):
    from tegaki.run import bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("no bundled model in this checkout")
    before = package_files()
    monkeypatch.chdir(tmp_path)
    r = cli("report", "bundled", "--mistakes", "2", "--tsne-sample", "20")
    assert r.code == 0, r.err
    assert os.listdir(tmp_path) == ["report-bundled.html"]
    assert "wrote report-bundled.html" in r.out and 'id="confusion"' in (tmp_path / "report-bundled.html").read_text()
    assert package_files() == before


def test_pictures_say_what_they_show():
    """From the figure review: a mistake at 0.9985 never reads 100%; long class names fit their caption; images
    that are not digits are not called digits; a probe chart keeps the network's own line in view; a copied
    "validation" history is no validation; confusion counts are white on the darkest cells of the log scale."""
    assert figures.below_one(0.9985) == "99.8%" and figures.below_one(1.0) == "100%" and figures.below_one(0.42) == "42%"
    assert figures.things([str(d) for d in range(10)]) == "digits" and figures.things(["T-shirt/top", "Bag"]) == "images"
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    fig = figures.misclassified(np.zeros((2, 28, 28), np.uint8), np.array([0, 9]), np.array([9, 0]),
                                np.array([[0.0] * 9 + [0.9985], [0.97] + [0.0] * 9]), fashion)
    caps = [a.get_title() for a in fig.axes if a.get_title()]
    assert caps[0] == "true T-shirt/t…\npred Ankle boot 99.8%" and "images" in fig._suptitle.get_text()
    table = [SimpleNamespace(classifier="logreg", label="pixels", accuracy=0.90, train_size=100, dims=784)]
    low, high = figures.probe_accuracy(table, 0.70).axes[0].get_ylim()
    assert low <= 70 <= high  # the network below every probe: its line is drawn, not off the chart
    two = table + [SimpleNamespace(classifier="svm", label="pixels", accuracy=0.95, train_size=50, dims=784)]
    ax = figures.probe_accuracy(two, 0.99).axes[0]
    assert not ax.patches, "bars from a cut-off axis exaggerate: the chart draws dots"
    assert [len(line.get_xdata()) for line in ax.lines] == [1, 1, 2]  # a line of dots per classifier, and the network's
    copied = [{"epoch": e, "train_loss": 1.0 / e, "valid_loss": 1.0 / e, "train_acc": 0.9, "valid_acc": 0.9}
              for e in (1, 2)]
    assert not figures.has_validation(copied)
    assert figures.has_validation([{**r, "valid_loss": 2.0 / r["epoch"]} for r in copied])
    cm = np.array([[9000, 213, 0], [170, 40, 3], [0, 1, 50]])
    texts = {t.get_text(): t.get_color() for t in figures.confusion_matrix(cm, ["a", "b", "c"]).axes[0].texts}
    assert texts["213"] == "white" and texts["170"] == "white" and texts["3"] == "black"
