"""Networks with branches (issue 15): `inputs` on layers, add / concat / globalavgpool, the functional
form (tg.Input, tg.Model), both engines (the fan-out rule in the NumPy backward), ONNX, and bad wiring."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tegaki as tg
from tegaki import spec as S
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.numpy_layers import build_layer, cross_entropy
from tegaki.engines.torch_engine import TorchEngine, TorchNet, _key
from tegaki.errors import TegakiError
from tegaki.glassbox import NumpyNet, gradcheck
from tegaki.spec import Spec, SpecError, load_preset


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def spec_of(layers: list[dict], input_shape=(1, 28, 28)) -> Spec:
    return Spec.from_dict({"input": list(input_shape), "layers": layers})


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


# a residual block, a branch straight from the input, a concat, global average pooling; relu1 is read
# three times (twice by the add) and the input twice: every gradient there is a sum (the fan-out rule)
BRANCHY = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}, {"type": "batchnorm"}, {"type": "relu"},
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
    {"type": "add", "inputs": ["relu1", "conv2", "relu1"]},
    {"type": "conv2d", "filters": 3, "kernel": 1, "inputs": ["input"]},
    {"type": "concat", "inputs": ["add1", "conv3"]},
    {"type": "globalavgpool"}, {"type": "dense", "units": 5}, {"type": "softmax"},
]


# the spec ----------------------------------------------------------------------------------------
def test_shapes_sources_and_connected_to_column():
    spec = spec_of(BRANCHY, (2, 7, 5))
    assert spec.sources()[4] == ("relu1", "conv2", "relu1") and spec.sources()[5] == ("input",)
    assert spec.sources()[3] == ("relu1",)  # no `inputs`: the previous layer
    m = spec.shape_map()
    assert m["add1"] == (4, 7, 5) and m["concat1"] == (7, 7, 5) and m["gap1"] == (7,) and m["dense1"] == (5,)
    assert spec.in_shapes()[5] == (2, 7, 5)  # conv3 reads the input: its weight is (3, 2, 1, 1)
    assert spec.param_shapes()["conv3.weight"] == (3, 2, 1, 1)
    rows = {line.split()[0]: line for line in spec.summary().splitlines()}
    assert "Connected to" in spec.summary()
    assert rows["add1"].rstrip().endswith("relu1, conv2, relu1") and rows["conv3"].rstrip().endswith("input")
    again = Spec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict() and again.summary() == spec.summary()


def test_inputs_naming_the_previous_layer_mean_no_inputs():
    plain = load_preset("keras-lecture")
    d = plain.to_dict()
    names = ["input"] + [l["name"] for l in d["layers"]]
    for i, l in enumerate(d["layers"]):
        l["inputs"] = [names[i]]
    wired = Spec.from_dict(d)
    assert not wired.branched and wired.to_dict() == plain.to_dict() and "Connected to" not in wired.summary()


KERAS_FUNCTIONAL_TOML = (Path(__file__).parent / "keras_functional.toml").read_text()


def test_keras_lecture_functional_in_toml_and_python_gives_the_sequential_summary(tmp_path):
    twin = load_preset("keras-lecture")
    path = tmp_path / "keras-lecture.toml"
    path.write_text(KERAS_FUNCTIONAL_TOML)
    assert Spec.from_file(path).summary() == twin.summary()

    x = tg.Input((1, 28, 28))
    y = tg.Conv2d(9, 3, padding="same")(x)
    y = tg.ReLU()(y)
    y = tg.MaxPool(2)(y)
    y = tg.Flatten()(y)
    y = tg.Dense(64)(y)
    y = tg.ReLU()(y)
    out = tg.Softmax()(tg.Dense(10)(y))
    model = tg.Model(x, out, name="keras-lecture")
    assert isinstance(model, tg.Sequential)
    assert model.spec.summary() == twin.summary()
    assert model.spec.to_dict()["layers"] == twin.to_dict()["layers"]
    lines = []
    model.summary(print_fn=lines.append)
    assert lines == [twin.summary()]


def residual_functional() -> tg.Model:
    """resnet-small written in the functional form."""
    def block(h, filters):
        y = tg.ReLU()(tg.BatchNorm()(tg.Conv2d(filters, 3, padding="same")(h)))
        y = tg.BatchNorm()(tg.Conv2d(filters, 3, padding="same")(y))
        return tg.ReLU()(tg.Add()([h, y]))

    x = tg.Input((1, 28, 28))
    h = tg.ReLU()(tg.BatchNorm()(tg.Conv2d(16, 5, stride=2, padding="same")(x)))
    h = block(h, 16)
    h = tg.ReLU()(tg.BatchNorm()(tg.Conv2d(32, 3, stride=2, padding="same")(h)))
    h = block(h, 32)
    out = tg.Softmax()(tg.Dense(10)(tg.GlobalAvgPool()(h)))
    return tg.Model(x, out, name="resnet-small")


def test_functional_residual_network_is_the_preset():
    preset = load_preset("resnet-small")
    model = residual_functional()
    assert model.spec.to_dict()["layers"] == preset.to_dict()["layers"]
    assert model.spec.summary() == preset.summary()
    assert model.spec.num_params() == 28_810


def _unnamed(s: Spec) -> list[dict]:
    """A spec's layers without their names, inputs and adds: what a plain stack computes."""
    return [{k: v for k, v in d.items() if k not in ("name", "inputs")} for d in s.to_dict()["layers"]
            if d["type"] != "add"]


def test_deep_preset_is_best_with_one_more_convolution():
    """deep: best's recipe and layers, with batch norm, ReLU and a 48@3x3 (same) conv before the first pool."""
    deep, best = load_preset("deep"), load_preset("best")
    assert deep.train == best.train
    extra = [{"type": "batchnorm"}, {"type": "relu"}, {"type": "conv2d", "filters": 48, "padding": "same"}]
    assert _unnamed(deep) == _unnamed(best)[:1] + extra + _unnamed(best)[1:]


# deep's weights before its dense layers, counted by hand: conv 5x5 1->48, conv 3x3 48->48, 48->96 and 96->96
# (weights and biases), and two numbers per batch-norm channel (48, 48, 96, 96, 256)
DEEP_CONVS = (25 * 48 + 48) + (9 * 48 * 48 + 48) + (9 * 48 * 96 + 96) + (9 * 96 * 96 + 96)
DEEP_BATCHNORMS = 2 * (48 + 48 + 96 + 96 + 256)


def test_deep_res_preset_is_deep_with_identity_skips():
    """deep-res: deep's recipe, both 3x3 stages residual (shapes and weights counted by hand)."""
    spec, deep = load_preset("deep-res"), load_preset("deep")
    assert spec.train == deep.train
    adds = [(layer.name, layer.inputs) for layer in spec.layers if layer.inputs]
    assert adds == [("add1", ("r1", "b1")), ("add2", ("r2", "b2"))]
    assert spec.shapes() == [(48, 24, 24)] * 7 + [(48, 12, 12)] + [(96, 10, 10)] * 7 + [
        (96, 5, 5), (2400,), (2400,), (256,), (256,), (256,), (256,), (10,), (10,)]
    # deep's convolutions and batch norms, then dense 2400->256 (stage 2 keeps 10x10: 96 x 5 x 5), 256->10
    dense = (2400 * 256 + 256) + (256 * 10 + 10)
    assert spec.num_params() == DEEP_CONVS + dense + DEEP_BATCHNORMS == 764_954


def test_deep_skip_preset_is_deep_with_one_identity_skip():
    """deep-skip: deep's layers, weights and recipe, plus one add around the 48@3x3 convolution."""
    spec, deep = load_preset("deep-skip"), load_preset("deep")
    assert spec.train == deep.train
    assert [(layer.name, layer.inputs) for layer in spec.layers if layer.inputs] == [("add1", ("r1", "c2"))]
    assert _unnamed(spec) == _unnamed(deep)
    # deep's convolutions and batch norms, then dense 1536->256 (96 x 4 x 4), 256->10: the add has no weights
    dense = (1536 * 256 + 256) + (256 * 10 + 10)
    assert spec.num_params() == deep.num_params() == DEEP_CONVS + dense + DEEP_BATCHNORMS == 543_770
    engine = TorchEngine(spec, spec.init_weights(0))
    acts = engine.activations(np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32))
    np.testing.assert_allclose(acts["add1"], acts["r1"] + acts["c2"], rtol=1e-6, atol=1e-6)
    assert np.abs(acts["c2"]).max() > 0.1 and np.abs(acts["r1"]).max() > 0.1  # both paths carry a signal


def test_deep7_preset_is_deep_with_a_7x7_first_convolution():
    """deep7: deep's recipe and layers, the first kernel 7x7 (22x22 maps, so 96x3x3 before the dense layer)."""
    spec, deep = load_preset("deep7"), load_preset("deep")
    assert spec.train == deep.train
    layers, deeps = _unnamed(spec), _unnamed(deep)
    assert layers == [{**deeps[0], "kernel": 7}] + deeps[1:]
    assert spec.shapes() == [(48, 22, 22)] * 4 + [(48, 11, 11)] * 3 + [(96, 9, 9)] * 3 + [(96, 7, 7)] + [
        (96, 3, 3)] * 3 + [(864,), (864,), (256,), (256,), (256,), (256,), (10,), (10,)]  # the pool floors 7 to 3
    # deep's convolutions with 49 weights per first-layer filter instead of 25, then dense 864->256, 256->10
    dense = (864 * 256 + 256) + (256 * 10 + 10)
    assert spec.num_params() == DEEP_CONVS + 24 * 48 + dense + DEEP_BATCHNORMS == 372_890


def test_deep_skip_thick_preset_is_deep_skip_with_stroke_thickness():
    """deep-skip-thick: deep-skip's network, names and skip included, trained with thickness distortions too."""
    spec, skip = load_preset("deep-skip-thick"), load_preset("deep-skip")
    assert spec.to_dict()["layers"] == skip.to_dict()["layers"]
    assert spec.train == {**skip.train, "augment": "affine+thickness"}
    assert spec.num_params() == 543_770


def test_functional_mistakes_are_tegaki_errors():
    x = tg.Input((1, 28, 28))
    conv = tg.Conv2d(4, 3)
    y = conv(x)
    with pytest.raises(TegakiError, match="called twice"):
        tg.Model(x, conv(y))
    with pytest.raises(TegakiError, match="from this input alone"):
        tg.Model(x, tg.Flatten()(tg.Conv2d(4, 3)(tg.Input((1, 28, 28)))))
    with pytest.raises(TegakiError, match="Input shape"):
        tg.Input((1, 0, 28))
    with pytest.raises(TegakiError, match="call it on tg.Input"):
        tg.Dense(10)(np.zeros(3))
    with pytest.raises(TegakiError, match="outputs must be a layer's result"):
        tg.Model(x, x)
    a, b = tg.Conv2d(4, 3)(x), tg.Conv2d(8, 3)(x)
    with pytest.raises(TegakiError, match=r"add1 \(add\) cannot add conv1's output \(4, 26, 26\) and conv2's"):
        tg.Model(x, tg.Add()([a, b]))
    assert conv.name == "" and conv.inputs is None  # the user's layers are not changed
    with pytest.raises(TegakiError, match=r"in Python: tg.Add\(\)\(\[a, b\]\)"):  # Python words, not TOML only
        tg.Model(x, tg.Add()(a))


def test_a_name_a_layer_was_given_is_skipped_by_automatic_names():
    """As Keras does: the first conv, unnamed, is not called conv1 when a later layer was named conv1."""
    spec = spec_of([CONV, {**CONV, "name": "conv1"}, {"type": "flatten"}, {"type": "dense", "units": 10}])
    assert [l.name for l in spec.layers] == ["conv2", "conv1", "flatten1", "dense1"]
    x = tg.Input((1, 28, 28))
    y = tg.Conv2d(4, 3)(tg.Conv2d(4, 3, name="conv2")(x))  # the user's conv2 first, an unnamed conv after it
    assert [l.name for l in tg.Model(x, tg.Dense(10)(tg.Flatten()(y))).spec.layers][:2] == ["conv2", "conv1"]


@pytest.mark.parametrize("name", ["update", "train", "to", "keys", "forward", "training"])
def test_any_layer_name_the_spec_takes_the_torch_engine_takes(name):
    """ModuleDict refuses keys that are its own attributes ("update", "train" ...): the engine keys its layers
    otherwise, and weights keep the spec's names."""
    spec = spec_of([{**CONV, "name": name}, {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 10}])
    w = random_weights(spec, dtype=np.float32)
    t = TorchEngine(spec, w)
    assert set(t.get_weights()) == set(w) and f"{name}.weight" in w
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(t.logits(x), NumpyEngine(spec, w).logits(x), atol=1e-5, rtol=0)
    assert list(t.activations(x))[0] == name


@pytest.mark.parametrize("name", ["logits", "probabilities", "scaled", "temperature"])
def test_onnx_export_takes_layers_named_like_its_own_outputs(name):
    """A last dense named "logits" (as Keras users name it), or a layer named after the graph's other tensors:
    the export is valid, and its outputs are the network's, calibrated."""
    ort = pytest.importorskip("onnxruntime")
    from tegaki.export import to_onnx

    inner = spec_of([CONV, {"type": "relu", "name": name}, {"type": "flatten"}, {"type": "dense", "units": 10},
                     {"type": "softmax"}])
    last = spec_of([CONV, {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 10, "name": name}])
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    for last in (inner, last):
        ww = random_weights(last, dtype=np.float32)
        sess = ort.InferenceSession(to_onnx(last, ww, temperature=2.0).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        logits, probs = sess.run(["logits", "probabilities"], {"input": x})
        ref = TorchEngine(last, ww).logits(x)
        np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(ref) / 2.0, 1).numpy(), atol=1e-5)


# bad wiring: one SpecError naming both layers, before anything is built --------------------------------
CONV = {"type": "conv2d", "filters": 4, "kernel": 3}
BAD = {
    "missing": ([CONV, {"type": "relu", "inputs": ["conv9"]}], ["relu1", "conv9", "not a layer"]),
    "later": ([{**CONV, "inputs": ["relu1"]}, {"type": "relu"}], ["conv1", "relu1", "comes after"]),
    "cycle": ([CONV, {"type": "relu", "inputs": ["relu1"]}], ["relu1", "itself, a cycle"]),
    "add shapes": ([CONV, {"type": "conv2d", "filters": 8, "kernel": 3, "inputs": ["conv1"]},
                    {"type": "add", "inputs": ["conv1", "conv2"]}], ["add1", "conv1", "conv2", "(4, 26, 26)"]),
    "concat sizes": ([CONV, {"type": "maxpool"}, {"type": "concat", "inputs": ["conv1", "pool1"]}],
                     ["concat1", "conv1", "pool1", "heights and widths"]),
    "concat kinds": ([CONV, {"type": "flatten"}, {"type": "concat", "inputs": ["conv1", "flatten1"]}],
                     ["concat1", "conv1", "flatten1", "an image and a vector"]),
    "two into one": ([CONV, {**CONV, "padding": "same"}, {"type": "relu", "inputs": ["conv1", "conv2"]}],
                     ["relu1", "conv1 and conv2", "takes one input"]),
    "add of one": ([CONV, {"type": "add"}], ["add1", "conv1", "two or more"]),
    "dead end": ([CONV, {"type": "relu"}, {"type": "relu", "inputs": ["conv1"]}], ["relu1", "relu2", "no layer"]),
    "not names": ([{**CONV, "inputs": [3]}], ["inputs must be a non-empty list"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_wiring_is_one_spec_error_naming_both_layers(case):
    layers, words = BAD[case]
    with pytest.raises(SpecError) as e:
        spec_of(layers)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def write_toml(path, layers):
    lines = ['input = [1, 28, 28]']
    for l in layers:
        lines.append("[[layers]]")
        for k, v in l.items():
            lines.append(f"{k} = {v!r}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("case", ["later", "add shapes", "two into one", "dead end"])
def test_summary_and_train_refuse_bad_wiring_in_one_line(cli, tmp_path, case):
    layers, words = BAD[case]
    path = write_toml(tmp_path / "bad.toml", layers)
    for args in (["summary", path], ["train", "--spec", path, "--out", tmp_path / "run", "--epochs", "1"]):
        r = cli(*args)
        assert r.code == 2 and r.out == "", (args, r.out, r.err)
        err = r.err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_size_limits_count_every_branch():
    big = {"type": "conv2d", "filters": 30_000, "kernel": 3, "padding": "same"}  # 23.5M numbers per example
    spec_of([big, {"type": "relu"}])  # fits: 47M in all
    with pytest.raises(SpecError, match="numbers per example"):
        spec_of([big, {"type": "relu"}, {"type": "add", "inputs": ["conv1", "relu1"]}])


# both engines ------------------------------------------------------------------------------------
def random_weights(spec: Spec, seed=1, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    w = {k: v.astype(dtype) for k, v in spec.init_weights(seed).items()}
    for k in w:
        if k.endswith("running_mean"):
            w[k] = rng.normal(0, 0.3, w[k].shape).astype(dtype)
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2.0, w[k].shape).astype(dtype)
    return w


@pytest.mark.parametrize("kind", ["add", "concat", "globalavgpool"])
def test_joining_layers_backward_matches_autograd(kind):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 2, 7, 5)), rng.standard_normal((3, 2 if kind == "add" else 3, 7, 5))]
    if kind == "globalavgpool":
        xs = xs[:1]
    rec = S.LAYERS[kind](name=f"{kind}1")
    layer = build_layer(rec, xs[0].shape[1:], np.float64)
    y = layer.forward(*xs)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx = dx if isinstance(dx, tuple) else (dx,)
    ts = [torch.from_numpy(x).requires_grad_(True) for x in xs]
    ref = {"add": lambda: ts[0] + ts[1], "concat": lambda: torch.cat(ts, 1),
           "globalavgpool": lambda: ts[0].mean(dim=(2, 3))}[kind]()
    (ref * torch.from_numpy(dy)).sum().backward()
    assert rel_err(y, ref.detach().numpy()) < 1e-12
    assert len(dx) == len(ts)
    for d, t in zip(dx, ts):
        assert d.shape == t.shape and rel_err(d, t.grad.numpy()) < 1e-12


@pytest.mark.parametrize("training", [False, True])
def test_branched_backward_accumulates_like_autograd(training):
    spec = spec_of(BRANCHY, (2, 7, 5))
    w = random_weights(spec)
    ne = NumpyEngine(spec, w, dtype=np.float64)
    net = TorchNet(spec).double()
    sd = net.state_dict()
    for k in sd:
        name = _key(k)  # the engine's key -> the weights' name
        if name in w:
            sd[k] = torch.from_numpy(w[name].copy())
    net.load_state_dict(sd)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((4, 2, 7, 5)), np.array([0, 1, 2, 4])
    ne._mode(training)
    logits = ne.forward(x)
    _, dz = cross_entropy(logits, y)
    dx = ne.backward(dz, need_input_grad=True)
    net.train(training)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = net(xt)
    F.cross_entropy(out, torch.from_numpy(y)).backward()
    assert rel_err(logits, out.detach().numpy()) < 1e-10
    assert rel_err(dx, xt.grad.numpy()) < 1e-6  # the input feeds conv1 and conv3: two gradients summed
    layers = {l.name: l for l in ne.layers}
    for k, p in net.named_parameters():
        layer, param = _key(k).split(".")
        mine, ref = layers[layer].grads[param], p.grad.numpy()
        # (a conv bias before a batch norm in training gets a zero gradient, up to rounding)
        assert rel_err(mine, ref) < 1e-6 or np.abs(mine - ref).max() < 1e-12, k


def test_residual_block_against_finite_differences():
    # smooth activations (tanh): a finite difference across a relu's kink measures the kink, not the backward
    spec = spec_of([
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}, {"type": "tanh"},
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}, {"type": "batchnorm"},
        {"type": "add", "inputs": ["tanh1", "bn1"]}, {"type": "tanh"},
        {"type": "conv2d", "filters": 2, "kernel": 1, "inputs": ["input"]},
        {"type": "concat", "inputs": ["tanh2", "conv3"]}, {"type": "globalavgpool"},
        {"type": "dense", "units": 5}, {"type": "softmax"}], (2, 7, 5))
    net = NumpyNet(spec, random_weights(spec), seed=0)
    x = np.random.default_rng(3).standard_normal((3, 2, 7, 5))
    worst = gradcheck(net, x, np.array([1, 4, 3]), per_param=6)
    assert max(worst.values()) < 1e-6, worst


def test_engines_agree_on_a_residual_net_in_float32():
    spec = load_preset("resnet-small")
    w = random_weights(spec, dtype=np.float32)
    x = np.random.default_rng(4).standard_normal((8, 1, 28, 28)).astype(np.float32)
    t, n = TorchEngine(spec, w), NumpyEngine(spec, w)
    np.testing.assert_allclose(n.logits(x), t.logits(x), rtol=0, atol=1e-5)
    at, an = t.activations(x), n.activations(x)
    assert list(at) == list(an) == [l.name for l in spec.layers]
    for k in at:
        np.testing.assert_allclose(an[k], at[k], rtol=0, atol=1e-5 * max(1.0, np.abs(at[k]).max()), err_msg=k)
    labels = np.arange(8) % 10
    np.testing.assert_allclose(n.input_gradient(x, labels), t.input_gradient(x, labels), rtol=0,
                               atol=1e-5 * np.abs(t.input_gradient(x, labels)).max())


def test_onnx_round_trip_of_a_branched_net():
    ort = pytest.importorskip("onnxruntime")
    from tegaki.export import to_onnx

    spec = spec_of(BRANCHY, (2, 7, 5))
    w = random_weights(spec, dtype=np.float32)
    x = np.random.default_rng(5).standard_normal((6, 2, 7, 5)).astype(np.float32)
    model = to_onnx(spec, w)
    ops = {n.op_type for n in model.graph.node}
    assert {"Sum", "Concat", "GlobalAveragePool"} <= ops
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(["logits"], {"input": x})[0], TorchEngine(spec, w).logits(x),
                               atol=1e-4, rtol=0)


def test_diagram_draws_an_arc_per_branch():
    from matplotlib.patches import FancyArrowPatch

    from tegaki import diagram

    spec = spec_of(BRANCHY, (2, 7, 5))
    arrows = [p for p in diagram.draw(spec).axes[0].patches if isinstance(p, FancyArrowPatch)]
    # one arrow per distinct (source, layer) pair: 10 layers, add1 and concat1 read two each
    assert len(arrows) == 12
    plain = [p for p in diagram.draw(load_preset("lenet")).axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(plain) == len(load_preset("lenet").layers)


def test_inspection_follows_the_wiring():
    from tegaki import inspect as I
    from tegaki.predict import Predictor

    # two convs read the input; conv_a's relu comes after conv_b (the functional form's order): conv_b's maps
    # are its own, not conv_a's relu
    parallel = spec_of([{**CONV, "name": "conv_a", "padding": "same"},
                        {**CONV, "name": "conv_b", "padding": "same", "inputs": ["input"]},
                        {"type": "relu", "name": "relu_a", "inputs": ["conv_a"]},
                        {"type": "concat", "inputs": ["relu_a", "conv_b"]}, {"type": "flatten"},
                        {"type": "dense", "units": 10}])
    assert I.block_end(parallel, "conv_a") == "conv_a" and I.block_end(parallel, "conv_b") == "conv_b"
    assert Predictor.conv_blocks(SimpleNamespace(spec=parallel)) == [("conv_a", "conv_a"), ("conv_b", "conv_b")]
    # explicit inputs that name the previous layer mean the same as none
    same = spec_of([{**CONV, "name": "c"}, {"type": "relu", "inputs": ["c"]}, {"type": "flatten"},
                    {"type": "dense", "units": 10}])
    assert I.block_end(same, "c") == "relu1"

    spec = load_preset("resnet-small")
    assert I.block_end(spec, "conv3") == "bn3"  # add1 reads relu1 and bn3: not the conv's tail
    assert I.block_end(spec, "conv1") == "relu1"
    assert I.penultimate(spec) == "gap1"
    assert "add1" in I.map_layers(spec) and "gap1" not in I.map_layers(spec)


# training end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_thousand(mnist):
    return replace(mnist, train_images=mnist.train_images[:4000], train_labels=mnist.train_labels[:4000],
                   test_images=mnist.test_images[:500], test_labels=mnist.test_labels[:500])


@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_resnet_small_trains_one_epoch_on_both_engines(four_thousand, tmp_path, engine):
    from tegaki.export import export_run
    from tegaki.train import TrainConfig, train

    spec = load_preset("resnet-small")
    cfg = TrainConfig.for_spec(spec, epochs=1, batch_size=64, valid_size=500, device="cpu", seed=0,
                               engine=engine, precision="fp32")
    result = train(spec, four_thousand, cfg, tmp_path / "run", log=lambda m: None)
    assert result.metrics["test_accuracy"] > 0.7, result.metrics  # chance is 0.1; about 0.86 here
    pytest.importorskip("onnxruntime")
    info = export_run(tmp_path / "run", tmp_path / "model.onnx")
    assert info["max_abs_diff"] <= 1e-4 and (tmp_path / "model.onnx").is_file()


def test_functional_model_fits_saves_and_loads(tmp_path):
    from conftest import digits_like

    x, y = digits_like(600)
    model = residual_functional()
    history = model.fit(x, y, epochs=1, batch_size=50, engine="numpy", verbose=0, validation_split=0.2)
    assert len(history.rows) == 1
    path = model.save(tmp_path / "res")
    back = tg.load(path)
    assert back.spec.to_dict()["layers"] == model.spec.to_dict()["layers"]
    np.testing.assert_allclose(back.predict_proba(x[:20]), model.predict_proba(x[:20]), atol=1e-6)
