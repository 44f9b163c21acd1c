"""Commands that measure or read with a trained run check that the data fit it first: its classes by name
(renumbered when only their order differs), its image size, and what predict and serve can read."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tegaki as tg
from tegaki.commands.common import _measurable
from tegaki.errors import TegakiError


def tiny_dataset(classes, labels):
    from tegaki.data.dataset import Dataset

    x = np.zeros((len(labels), 28, 28), np.uint8)
    return Dataset("mine", x[:0], np.zeros(0, np.int64), x, np.asarray(labels, np.int64), list(classes))


def test_classes_are_matched_by_name():
    run = SimpleNamespace(classes=["a", "b", "c"], spec=tg.load_preset("ffnn").__class__.from_dict(
        {"input": [1, 28, 28], "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "softmax"}]}))
    same = _measurable(tiny_dataset(["a", "b", "c"], [0, 1, 2]), run)
    assert list(same.test_labels) == [0, 1, 2]
    swapped = _measurable(tiny_dataset(["c", "a", "b"], [0, 1, 2]), run)  # "c", "a", "b" as the model numbers them
    assert list(swapped.test_labels) == [2, 0, 1] and swapped.classes == ["a", "b", "c"]
    with pytest.raises(TegakiError, match=r"mine's classes \(x, y, z ...\) are not the model's \(a, b, c ...\)"):
        _measurable(tiny_dataset(["x", "y", "z"], [0, 1, 2]), run)


def test_evaluate_and_ensemble_refuse_data_of_other_classes(cli, lenet_run, mnist_small, tmp_path):
    root = tmp_path / "letters"
    for i, name in enumerate("abcdefghij"):  # ten classes, but not the digits the run tells apart
        (root / name).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(mnist_small.test_images[2 * i + j]).save(root / name / f"{j}.png")
    for args in (("evaluate", lenet_run), ("ensemble", lenet_run, "--tta")):
        r = cli(*args, "--dataset", f"folder:{root}")
        assert r.code == 2 and "are not the model's (0, 1, 2, 3 ...)" in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1


def test_predict_and_serve_refuse_a_network_of_another_image_size(cli, tmp_path):
    model = tg.Sequential([tg.Flatten(), tg.Dense(10), tg.Softmax()], input_shape=(1, 32, 32))
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 60, (40, 32, 32), dtype=np.uint8), np.arange(40) % 10, epochs=1, verbose=0)
    run = model.save(tmp_path / "wide")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "d.png")
    for args in (("predict", tmp_path / "d.png", "--model", run), ("serve", "--model", run, "--port", "0")):
        r = cli(*args)
        assert r.code == 2 and "this network takes 32x32 images, and pictures are read as MNIST's 28x28" in r.err
        assert len(r.err.strip().splitlines()) == 1 and r.out == ""


def test_serve_without_onnx_runtime_is_one_line_before_its_banner(cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed: importing it fails
    r = cli("serve", "--engine", "onnx", "--port", "0")
    assert r.code == 2 and r.err.strip() == "tegaki: error: the onnx engine needs ONNX Runtime: pip install 'tegaki[onnx]'"
    assert r.out == ""  # no "open http://..." banner for a server that never starts
