"""The engine interface is written down (engines.Engine) and every engine keeps it: every member,
truthful capability flags, one dispatch entry per layer kind, one input normalisation."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from tegaki import spec as S
from tegaki.diagram import DESCRIBE, describe
from tegaki.engines import Engine, engine_members, make_engine
from tegaki.engines.inputs import normalise
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.numpy_layers import LAYER_CLASSES
from tegaki.engines.onnx_engine import OnnxEngine
from tegaki.engines.torch_engine import MODULES, TorchEngine
from tegaki.errors import TegakiError
from tegaki.export import NODES

CLASSES = {"torch": TorchEngine, "numpy": NumpyEngine, "onnx": OnnxEngine}
FLAGS = ("trainable", "has_gradients", "has_activations")
SRC = Path(__file__).resolve().parents[1] / "src" / "tegaki"


def tiny_spec() -> S.Spec:
    return S.Spec(input_shape=(1, 6, 6), layers=[S.Conv2d(filters=2, kernel=3), S.ReLU(), S.Flatten(),
                                                 S.Dense(units=3), S.Softmax()], name="tiny")


def test_the_protocol_lists_the_whole_interface():
    members = engine_members()
    for m in ("logits", "activations", "input_gradient", "get_weights", "set_weights", "prepare", "take",
              "evaluate", "configure", "tune", "train_step", "optimizer_state", "load_optimizer_state",
              "device", "precision", "spec", *FLAGS):
        assert m in members, m


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_engine_has_every_member(name):
    cls = CLASSES[name]
    engine = make_engine(name, tiny_spec())
    assert type(engine) is cls and engine.name == name
    missing = [m for m in engine_members() if not hasattr(engine, m)]
    assert missing == []
    assert isinstance(engine, Engine)
    for flag in FLAGS:  # class attributes, so a caller can ask the class before building anything
        assert isinstance(vars(cls).get(flag), bool), (name, flag)
    assert engine.precision == "fp32"


def test_the_flags_say_what_each_engine_does():
    assert {n: tuple(getattr(c, f) for f in FLAGS) for n, c in CLASSES.items()} == {
        "torch": (True, True, True), "numpy": (True, True, True), "onnx": (False, False, False)}
    x = np.random.default_rng(0).normal(size=(2, 1, 6, 6)).astype(np.float32)
    w = tiny_spec().init_weights(1)
    for name, cls in CLASSES.items():
        engine = make_engine(name, tiny_spec(), w)
        assert engine.logits(x).shape == (2, 3)
        if cls.has_activations:
            assert list(engine.activations(x)) == ["conv1", "relu1", "flatten1", "dense1", "softmax1"]
        else:
            with pytest.raises(TegakiError, match="onnx engine"):
                engine.activations(x)
        if cls.has_gradients:
            assert engine.input_gradient(x, np.array([0, 2])).shape == x.shape
        else:
            with pytest.raises(TegakiError, match="no gradients"):
                engine.input_gradient(x, np.array([0, 2]))
        if cls.trainable:
            engine.configure("sgd", 0.1)
            assert engine.tune("fp32") == "fp32"
        else:
            for call in (lambda: engine.configure("sgd", 0.1), lambda: engine.tune("fp32"),
                         lambda: engine.train_step(x, np.array([0, 1])), engine.optimizer_state):
                with pytest.raises(TegakiError, match="trained models only"):
                    call()


def test_numpy_tune_refuses_torch_only_options():
    engine = NumpyEngine(tiny_spec())
    assert engine.tune("auto") == "fp32"
    assert NumpyEngine(tiny_spec(), dtype=np.float64).precision == "fp64"
    for kw in ({"precision": "bf16"}, {"compile": True}):
        with pytest.raises(TegakiError, match="torch engine options"):
            engine.tune(**kw)


def test_one_dispatch_entry_per_layer_kind():
    kinds = set(S.LAYERS.values())
    assert set(LAYER_CLASSES) == kinds
    assert set(MODULES) == kinds
    assert set(NODES) == kinds
    assert set(DESCRIBE) <= kinds


def test_diagram_descriptions_by_hand():
    assert describe(S.Conv2d(filters=20, kernel=5)) == "conv 20@5x5"
    assert describe(S.Conv2d(filters=8, kernel=(3, 2), stride=2, padding="same")) == "conv 8@3x2\nstride 2x2\npad same"
    assert describe(S.MaxPool(size=3, stride=2)) == "max 3x3\nstride 2x2"
    assert describe(S.AvgPool(size=2)) == "avg 2x2"
    assert describe(S.LeakyReLU(slope=0.2)) == "leaky relu 0.2"
    assert describe(S.Tanh()) == "tanh"


def test_conv_records_give_their_kernel_and_stride_as_pairs():
    layer = S.Conv2d(filters=4, kernel=(3, 2), stride=2, name="conv1")
    assert layer.kernel2 == (3, 2) and layer.stride2 == (2, 2)
    with pytest.raises(S.SpecError, match="conv1 kernel must be an integer or a pair"):
        S.Conv2d(kernel=(1, 2, 3), name="conv1").kernel2  # noqa: B018


def test_nobody_outside_spec_calls_pair():
    users = []
    for p in sorted(SRC.rglob("*.py")):
        if p.name == "spec.py":
            continue
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Attribute) and n.attr == "_pair" or isinstance(n, ast.Name) and n.id == "_pair":
                users.append(f"{p.relative_to(SRC)}:{n.lineno}")
    assert users == []


def test_normalise_by_hand():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)  # (1, 2, 2)
    x = normalise(images, {"mean": 0.5, "std": 0.25}, (1, 2, 2))
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(x[0, 0], [[-2.0, 2.0], [-1.2, -0.4]], rtol=1e-6)
    x64 = normalise(images, {"mean": 0.0, "std": 1.0}, (4,), dtype=np.float64)
    assert x64.dtype == np.float64 and x64.shape == (1, 4)
    assert x64[0, 1] == 1.0 and images[0, 0, 1] == 255  # the caller's array is left alone


def test_every_engine_prepares_the_same_input():
    images = np.random.default_rng(2).integers(0, 256, (5, 6, 6)).astype(np.uint8)
    norm = {"mean": 0.1307, "std": 0.3081}
    ref = normalise(images, norm, (1, 6, 6))
    for name in CLASSES:
        x, y = make_engine(name, tiny_spec()).prepare(images, np.arange(5), norm)
        x = x.cpu().numpy() if hasattr(x, "cpu") else x
        assert np.array_equal(np.asarray(x), ref), name
        assert list(np.asarray(y.cpu() if hasattr(y, "cpu") else y)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_inference_batches_shrink_to_fit_the_activation_budget(monkeypatch, kind):
    """A network with huge feature maps (a 1x1 conv padded by 100: 12 maps of 228x228) is run in batches whose
    activations fit INFERENCE_BYTES, with the same logits as one example at a time."""
    spec = S.Spec.from_dict({"input": [1, 28, 28], "layers": [
        {"type": "conv2d", "filters": 12, "kernel": 1, "padding": 100}, {"type": "globalavgpool"},
        {"type": "dense", "units": 10}, {"type": "softmax"}]})
    acts = 784 + 12 * 228 * 228 + 12 + 10 + 10  # input, conv, pool, dense, softmax
    assert spec.activations_per_example() == acts
    assert spec.inference_batch_cap() == 2**30 // (4 * acts)  # 431 examples in 1 GiB
    monkeypatch.setattr(S, "INFERENCE_BYTES", 3 * 4 * acts)  # room for three
    engine = make_engine(kind, spec, spec.init_weights(0))
    seen = []
    if kind == "torch":
        engine.net.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    else:
        forward = engine.forward
        monkeypatch.setattr(engine, "forward", lambda x, *a, **k: (seen.append(len(x)), forward(x, *a, **k))[1])
    x = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    z = engine.logits(x)
    assert seen == [3, 3, 2]
    np.testing.assert_allclose(z, np.concatenate([engine.logits(x[i:i + 1]) for i in range(8)]), rtol=1e-5, atol=1e-5)
