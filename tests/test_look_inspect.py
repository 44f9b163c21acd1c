"""Looking inside a trained LeNet: saliency against finite differences and autograd, occlusion,
filter grids, feature maps against a hand-computed convolution, and `tegaki inspect` end to end."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tegaki import inspect as I
from tegaki.predict import Predictor
from tegaki.run import make_meta, save_run
from tegaki.spec import load_preset


@pytest.fixture(scope="module")
def lenet(lenet_run):
    return Predictor.load(lenet_run)


@pytest.fixture(scope="module")
def look(lenet):
    return I.Inspector(lenet)


@pytest.fixture(scope="module")
def ffnn_run(tmp_path_factory):
    """An untrained ffnn run folder (no conv layers): enough for the paths that need no accuracy."""
    out = tmp_path_factory.mktemp("runs") / "ffnn"
    spec = load_preset("ffnn")
    meta = make_meta(spec, [str(i) for i in range(10)], {"mean": 0.0, "std": 1.0}, {"source": "test"}, 0,
                     {"dataset": "mnist"}, command=["test"])
    save_run(out, spec, spec.init_weights(0), meta, [], {"test_accuracy": 0.1}, initial=spec.init_weights(0))
    return out


def reference_net(predictor):
    """The run's network in float64, for reference gradients."""
    return copy.deepcopy(predictor.engine.net).double().eval()


def test_structure_of_lenet_and_ffnn():
    lenet, ffnn = load_preset("lenet"), load_preset("ffnn")
    assert I.conv_layers(lenet) == ["conv1", "conv2"]
    assert I.map_layers(lenet) == ["conv1", "pool1", "conv2", "pool2"]
    assert I.hidden_layers(lenet) == [("conv1", "tanh1"), ("conv2", "tanh2"), ("dense1", "tanh3")]
    assert I.penultimate(lenet) == "tanh3" and I.logits_layer(lenet) == "dense2"
    assert I.conv_layers(ffnn) == [] and I.hidden_layers(ffnn) == [("dense1", "sigmoid1")]
    assert I.penultimate(ffnn) == "sigmoid1"


def test_saliency_equals_autograd_and_finite_differences(lenet, look, mnist):
    # faint noise on the blank background: a blank region gives equal conv outputs, max-pooling
    # ties and a gradient that finite differences cannot see (left and right derivatives differ)
    noise = np.random.default_rng(1).integers(0, 30, (3, 28, 28))
    images = np.clip(mnist.test_images[:3].astype(np.int64) + noise, 0, 255).astype(np.uint8)
    targets = np.array([3, 7, 1])
    sal = look.saliency(images, targets)  # (3, 1, 28, 28), float32 through the engine
    net = reference_net(lenet)
    x = torch.from_numpy(lenet.prepare(images).astype(np.float64)).requires_grad_(True)
    net(x).gather(1, torch.from_numpy(targets).view(-1, 1)).sum().backward()
    ref = x.grad.numpy()
    assert sal.shape == ref.shape
    np.testing.assert_allclose(sal, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())
    # central differences in float64 at the 12 largest and 12 random pixels of the first digit
    x0 = torch.from_numpy(lenet.prepare(images[:1]).astype(np.float64))
    flat = np.abs(ref[0]).ravel()
    pick = np.concatenate([np.argsort(-flat)[:12], np.random.default_rng(0).choice(784, 12, replace=False)])
    eps = 1e-5
    with torch.no_grad():
        for k in pick:
            up, down = x0.clone(), x0.clone()
            up.view(-1)[k] += eps
            down.view(-1)[k] -= eps
            fd = (net(up)[0, 3] - net(down)[0, 3]).item() / (2 * eps)
            assert fd == pytest.approx(float(sal[0].ravel()[k]), rel=2e-3, abs=1e-4 * flat.max())
    assert flat.max() > 0  # a network that ignores its input would make this test pass vacuously


def test_occluding_a_blank_region_changes_nothing(look, mnist):
    image = mnist.test_images[0]  # a 7 with blank borders
    target = int(look.probabilities(image)[0].argmax())
    for measure in I.OCCLUSION_MEASURES:
        occ = look.occlusion(image, target, patch=4, stride=4, measure=measure)  # 7x7 disjoint patches
        assert occ.shape == (28, 28)
        blank = changed = 0
        for t in range(0, 28, 4):
            for l in range(0, 28, 4):
                region = occ[t:t + 4, l:l + 4]
                if not image[t:t + 4, l:l + 4].any():
                    assert np.abs(region).max() < 1e-5, (measure, t, l)
                    blank += 1
                elif np.abs(region).max() > 1e-3:
                    changed += 1
        assert blank > 10 and changed > 0  # both kinds of region were tried
    # blanking the digit's ink hurts the margin of its class somewhere
    assert look.occlusion(image, target).max() > 0.1


def test_filter_grids_have_one_tile_per_kernel(lenet):
    w = lenet.run.weights
    m1, n1, cols1 = I.filter_mosaic(w, "conv1")
    m2, n2, cols2 = I.filter_mosaic(w, "conv2")
    assert (n1, n2) == (20, 50 * 20)
    # count the 5x5 tiles actually drawn (NaN gutters between them) and compare with the weights
    for m, n, cols, weight in ((m1, n1, cols1, w["conv1.weight"]), (m2, n2, cols2, w["conv2.weight"])):
        drawn = 0
        for r in range((m.shape[0] + 1) // 6):
            for c in range((m.shape[1] + 1) // 6):
                tile = m[r * 6: r * 6 + 5, c * 6: c * 6 + 5]
                if not np.isnan(tile).all():
                    drawn += 1
        assert drawn == n
    # conv2: row = input channel, column = filter, each filter scaled by its largest |weight|
    f, ch = 7, 4
    tile = m2[ch * 6: ch * 6 + 5, f * 6: f * 6 + 5]
    np.testing.assert_allclose(tile, w["conv2.weight"][f, ch] / np.abs(w["conv2.weight"][f]).max(), rtol=1e-6)
    with pytest.raises(Exception, match="not a conv layer"):
        I.filter_mosaic(w, "dense1")


def test_feature_maps_have_spec_shapes_and_match_a_hand_convolution(lenet, look, mnist):
    image = mnist.test_images[1]
    maps = look.feature_maps(image)
    shapes = I.layer_shapes(lenet.spec)
    assert list(maps) == ["conv1", "pool1", "conv2", "pool2"]
    for name, a in maps.items():
        assert a.shape == shapes[name]
    # conv1's map 5, computed by hand: valid cross-correlation of the normalised input plus bias
    x = lenet.prepare(image[None])[0, 0].astype(np.float64)
    k = lenet.run.weights["conv1.weight"][5, 0].astype(np.float64)
    b = float(lenet.run.weights["conv1.bias"][5])
    ref = np.array([[(x[i:i + 5, j:j + 5] * k).sum() + b for j in range(24)] for i in range(24)])
    np.testing.assert_allclose(maps["conv1"][5], ref, rtol=1e-4, atol=1e-4)
    # pool1 is the 2x2 max of conv1
    np.testing.assert_allclose(maps["pool1"], maps["conv1"].reshape(20, 12, 2, 12, 2).max(axis=(2, 4)), rtol=1e-6)


def test_dense_activations_end_with_probabilities(look, mnist):
    items = look.dense_activations(mnist.test_images[2])
    labels = [l for l, _ in items]
    assert labels == ["dense1 + tanh3", "dense2 (logits)", "probabilities"]
    assert items[0][1].shape == (500,) and np.abs(items[0][1]).max() <= 1.0  # after tanh
    assert items[2][1].sum() == pytest.approx(1.0) and items[2][1].argmax() == items[1][1].argmax()
    # the probabilities are the calibrated ones predict shows, softmax(logits / T), not the plain softmax
    t = look.p.temperature
    z = items[1][1].astype(np.float64) / t
    np.testing.assert_allclose(items[2][1], np.exp(z - z.max()) / np.exp(z - z.max()).sum(), rtol=1e-6)
    np.testing.assert_allclose(look.probabilities(mnist.test_images[2:3])[0], items[2][1], rtol=1e-5)


def test_inspect_shows_the_calibrated_confidence_predict_shows(cli, mnist, tmp_path):
    """The bundled model's temperature is far from 1: inspect's line (and its pictures) once said 91.0% where
    predict says 99.9% for the same digit."""
    from tegaki.predict import Predictor

    p = Predictor.load(None)
    assert abs(p.temperature - 1) > 0.2
    r = cli("inspect", "bundled", "--only", "activations", "--out", tmp_path, "--index", "0")
    assert r.code == 0, r.err
    shown = float(r.out.split("predicted 7 (")[1].split("%")[0])
    image = mnist.test_images[0]
    assert shown == pytest.approx(100 * p.predict_proba(image[None])[0].max(), abs=0.051)


def test_inspect_writes_every_picture(cli, lenet_run, tmp_path):
    r = cli("inspect", lenet_run, "--out", tmp_path, "--index", "3", "--tsne-sample", "200")
    assert r.code == 0, r.err
    want = ["diagram.png", "filters_conv1.png", "filters_conv2.png", "feature_maps.png", "activations.png",
            "saliency_occlusion.png", "embedding_pca.png", "embedding_tsne.png"]
    for name in want:
        path = tmp_path / name
        assert str(path) in r.out
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    assert "test digit #3: predicted" in r.out


def test_inspect_an_image_file(cli, lenet, lenet_run, mnist, tmp_path):
    # a test digit drawn dark on light and four times larger: preprocessing must undo both
    digit = mnist.test_images[0]
    big = Image.fromarray(255 - digit).resize((112, 112), Image.BILINEAR)
    path = tmp_path / "seven.png"
    big.save(path)
    r = cli("inspect", lenet_run, "--image", path, "--out", tmp_path / "o", "--only", "maps,saliency")
    assert r.code == 0, r.err
    assert "image seven.png: predicted 7" in r.out
    assert (tmp_path / "o" / "feature_maps.png").is_file() and (tmp_path / "o" / "saliency_occlusion.png").is_file()


def test_inspect_bad_input_is_one_line(cli, lenet_run, ffnn_run, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    cases = [
        (("--image", text), "notes.png: not"),  # the decoder's wording belongs to data/preprocess.py
        (("--image", tmp_path / "missing.png"), "no such image file"),
        (("--index", "10000"), "out of range"),
        (("--index", "-1"), "out of range"),
        (("--only", "filters,colours"), "unknown part"),
        (("--tsne-sample", "5"), "--tsne-sample must be 0 (no t-SNE map) or at least 10, got 5"),  # as report
        (("--tsne-sample", "-1"), "--tsne-sample must be 0"),
        (("--threads", "0"), "--threads must be at least 1, got 0"),  # as train and evaluate take it
    ]
    for extra, msg in cases:
        r = cli("inspect", lenet_run, "--out", tmp_path / "x", "--only", "maps", *extra) if extra[0] != "--only" \
            else cli("inspect", lenet_run, *extra)
        assert r.code == 2, (extra, r.out, r.err)
        assert msg in r.err and len(r.err.strip().splitlines()) == 1, r.err
    for only in ("filters", "filters,maps", "maps"):  # nothing would be left to draw: an error, not "wrote 0"
        r = cli("inspect", ffnn_run, "--only", only, "--out", tmp_path / "none")
        assert r.code == 2 and "no conv layers" in r.err and len(r.err.strip().splitlines()) == 1, (only, r.err)
        assert r.out == "" and not (tmp_path / "none").exists()
    (tmp_path / "afile").write_text("x")
    r = cli("inspect", lenet_run, "--out", tmp_path / "afile", "--only", "diagram")
    assert r.code == 2 and "is a file" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("inspect", tmp_path / "no-run")
    assert r.code == 2 and "no such run folder" in r.err
    r = cli("report", lenet_run, "--threads", "-2")
    assert r.code == 2 and r.err.strip() == "tegaki: error: --threads must be at least 1, got -2"
    before = torch.get_num_threads()
    try:
        r = cli("inspect", lenet_run, "--only", "diagram", "--threads", "1", "--out", tmp_path / "one")
        assert r.code == 0 and (tmp_path / "one").is_dir() and torch.get_num_threads() == 1, r.err
    finally:  # the rest of the suite keeps its threads: torch's, and the BLAS pools' (threadpoolctl's limits)
        torch.set_num_threads(before)
        from tegaki import threads

        threads._LIMITS.pop().restore_original_limits()


def test_inspect_a_network_without_conv_layers(cli, ffnn_run, tmp_path):
    r = cli("inspect", ffnn_run, "--out", tmp_path, "--only", "filters,maps,activations,diagram")
    assert r.code == 0, r.err
    assert "no conv layers" in r.out
    assert (tmp_path / "activations.png").is_file() and (tmp_path / "diagram.png").is_file()
    assert not list(tmp_path.glob("filters_*.png")) and not (tmp_path / "feature_maps.png").exists()


def test_numpy_engine_sees_the_same_things(lenet_run, look, mnist):
    pytest.importorskip("tegaki.engines.numpy_engine", reason="the numpy engine is not written yet")
    other = I.Inspector(Predictor.load(lenet_run, engine="numpy"))
    image = mnist.test_images[4]
    a, b = look.feature_maps(image), other.feature_maps(image)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-4)
    target = int(look.probabilities(image)[0].argmax())
    np.testing.assert_allclose(other.saliency(image, target), look.saliency(image, target), rtol=1e-3,
                               atol=1e-4 * np.abs(look.saliency(image, target)).max())
    np.testing.assert_allclose(other.occlusion(image, target), look.occlusion(image, target), atol=1e-3)


def test_png_helpers_make_small_valid_pngs():
    from tegaki.report import array_png, saliency_png

    for png in (array_png(np.arange(784).reshape(28, 28)), saliency_png(np.zeros((28, 28)), np.ones((28, 28)), 1.0)):
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == (56, 56)


def test_pictures_of_other_data_do_not_say_digit(mnist):
    """Fashion-MNIST's pictures said "test digit #0": images that are not digits are images."""
    from types import SimpleNamespace

    from tegaki.commands.inspect import pick_input

    args = SimpleNamespace(image=None, index=3)
    digits = SimpleNamespace(test_images=mnist.test_images[:5], test_labels=mnist.test_labels[:5],
                             classes=[str(d) for d in range(10)], name="mnist")
    clothes = SimpleNamespace(**{**vars(digits), "classes": ["T-shirt/top", "Trouser"] + ["x"] * 8, "name": "f"})
    assert pick_input(args, digits)[2] == "test digit #3" and pick_input(args, clothes)[2] == "test image #3"
