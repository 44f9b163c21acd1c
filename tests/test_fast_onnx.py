"""ONNX export (tegaki.export): the graph written from a spec gives PyTorch's outputs in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tegaki.engines import make_engine
from tegaki.engines.torch_engine import TorchEngine
from tegaki.errors import TegakiError
from tegaki.export import to_onnx
from tegaki.predict import Predictor
from tegaki.spec import Spec, layer_from_dict, load_preset, preset_names


def odd_spec() -> Spec:
    """Every layer type the exporter translates, with asymmetric 'same' padding and strides."""
    L = layer_from_dict
    return Spec(input_shape=(1, 28, 28), name="odd", layers=[
        L({"type": "conv2d", "filters": 8, "kernel": 4, "padding": "same", "stride": 2}), L({"type": "batchnorm"}),
        L({"type": "maxout", "pieces": 2}), L({"type": "avgpool", "size": 2}), L({"type": "elu", "alpha": 0.7}),
        L({"type": "conv2d", "filters": 6, "kernel": 3, "padding": 1}), L({"type": "maxpool", "size": 3, "stride": 2}),
        L({"type": "tanh"}), L({"type": "flatten"}), L({"type": "dropout", "rate": 0.3}),
        L({"type": "dense", "units": 12}), L({"type": "batchnorm"}), L({"type": "leaky_relu", "slope": 0.1}),
        L({"type": "maxout", "pieces": 3}), L({"type": "sigmoid"}), L({"type": "dense", "units": 10}),
        L({"type": "softmax"})])


@pytest.mark.parametrize("name", [*preset_names(), "odd"])
def test_onnx_runtime_matches_pytorch(name):
    spec = odd_spec() if name == "odd" else load_preset(name)
    rng = np.random.default_rng(1)
    w = spec.init_weights(3)
    for k in w:  # non-trivial batchnorm statistics, so the running mean and variance are exercised
        if k.endswith("running_mean"):
            w[k] = rng.normal(0, 0.3, w[k].shape).astype(np.float32)
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2.0, w[k].shape).astype(np.float32)
    x = rng.standard_normal((9, *spec.input_shape)).astype(np.float32)
    ref = TorchEngine(spec, w).logits(x)
    model = to_onnx(spec, w)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"input": x})
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    e = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(make_engine("onnx", spec, w).logits(x), ref, atol=1e-4, rtol=0)


def test_export_cli_round_trip(lenet_run, mnist, cli, tmp_path):
    out = tmp_path / "lenet.onnx"
    r = cli("export", lenet_run, "--onnx", out)
    assert r.code == 0, r.err
    assert "onnx.checker: ok" in r.out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    pred = Predictor.load(lenet_run)
    norm = json.loads(meta["tegaki.normalize"])
    assert norm["mean"] == pytest.approx(pred.norm["mean"]) and norm["std"] == pytest.approx(pred.norm["std"])
    assert json.loads(meta["tegaki.classes"]) == [str(i) for i in range(10)]
    # a user of the file alone: normalise with the metadata, run, compare with tegaki's PyTorch path
    images = mnist.test_images[:500]
    x = ((images.astype(np.float32) / 255 - norm["mean"]) / norm["std"]).reshape(-1, 1, 28, 28).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"input": x})
    np.testing.assert_allclose(logits, pred.logits(images), atol=1e-4, rtol=0)
    assert (logits.argmax(1) == mnist.test_labels[:500]).mean() > 0.9


def test_predictor_and_evaluate_with_the_onnx_engine(lenet_run, mnist, cli, tmp_path):
    images = mnist.test_images[:300]
    torch_p = Predictor.load(lenet_run).predict_proba(images)
    onnx_pred = Predictor.load(lenet_run, engine="onnx")
    np.testing.assert_allclose(onnx_pred.predict_proba(images), torch_p, atol=1e-5)
    with pytest.raises(TegakiError, match="onnx engine"):
        onnx_pred.engine.activations(np.zeros((1, 1, 28, 28), np.float32))
    r = cli("evaluate", lenet_run, "--engine", "onnx", "--out", tmp_path / "ev")
    assert r.code == 0, r.err
    t = cli("evaluate", lenet_run, "--out", tmp_path / "ev2")
    assert r.out.split("accuracy ")[1].split("%")[0] == t.out.split("accuracy ")[1].split("%")[0]


def test_export_bad_input(lenet_run, cli, tmp_path):
    for args, msg in [(("export", lenet_run), "--onnx"),
                      (("export", tmp_path / "nothing", "--onnx", tmp_path / "a.onnx"), "no such run folder"),
                      (("export", lenet_run, "--onnx", tmp_path / "missing" / "a.onnx"), "no such folder"),
                      (("export", lenet_run, "--onnx", tmp_path / "a.txt"), ".onnx")]:
        r = cli(*args)
        assert r.code == 2 and msg in r.err and r.err.count("\n") == 1, (args, r.err)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.txt"))
    r = cli("train", "--engine", "onnx", "--out", tmp_path / "r")
    assert r.code == 2 and not (tmp_path / "r").exists()


def test_a_check_that_fails_names_the_tolerance_that_would_pass(lenet_run, cli, tmp_path):
    """A tolerance below float32's rounding (1e-12 here; a very deep residual net reaches 1e-3 at the default)
    refuses the export and names the --tolerance above the difference; that tolerance then exports it."""
    import re

    out = tmp_path / "m.onnx"
    r = cli("export", lenet_run, "--onnx", out, "--tolerance", "1e-12")
    assert r.code == 2 and r.err.count("\n") == 1 and not out.exists(), r.err
    assert "on logits up to" in r.err and "Float32 rounding grows with a network's depth" in r.err
    suggested = re.search(r"export with --tolerance (\S+);", r.err).group(1)
    r = cli("export", lenet_run, "--onnx", out, "--tolerance", suggested)
    assert r.code == 0 and out.exists(), r.err
