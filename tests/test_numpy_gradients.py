"""Gradient checks of the NumPy engine, in float64, for every layer type and every activation.

Each layer's hand-written backward is compared with two references on random inputs of odd
sizes (batch 3, 7x5 images, stride 2, asymmetric 'same' padding):
  - PyTorch autograd on the torch engine's module for the same spec record, and
  - central finite differences of the NumPy layer's own forward pass.
Relative error is ||a - b|| / max(||a||, ||b||) and must be <= 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tegaki import spec as S
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.numpy_layers import build_layer, cross_entropy
from tegaki.engines.torch_engine import TorchNet, build_module, _key

TOL = 1e-6
IMG = (2, 7, 5)  # channels, height, width: odd on purpose


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def make(layer: S.Layer, in_shape, seed=0):
    """The NumPy layer and the torch module for one spec record, with the same random weights."""
    spec = S.Spec(input_shape=in_shape, layers=[layer])  # names the layer, checks shapes
    rec = spec.layers[0]
    np_layer = build_layer(rec, in_shape, np.float64)
    mod = build_module(rec, in_shape).double()
    rng = np.random.default_rng(seed)
    for k, v in np_layer.params.items():
        v[...] = rng.normal(0, 0.5, v.shape)
    if isinstance(rec, S.BatchNorm):
        np_layer.buffers["running_mean"][...] = rng.normal(0, 0.5, np_layer.buffers["running_mean"].shape)
        np_layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, np_layer.buffers["running_var"].shape)
    sd = mod.state_dict()
    for k in sd:
        last = k.split(".")[-1]
        src = {**np_layer.params, **np_layer.buffers}.get(last)
        if src is not None:
            sd[k] = torch.from_numpy(src.copy())
    mod.load_state_dict(sd)
    return rec, np_layer, mod


def torch_grads(mod, x, g, training):
    mod.train(training)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = mod(xt)
    (y * torch.from_numpy(g)).sum().backward()
    grads = {k.split(".")[-1]: p.grad.numpy() for k, p in mod.named_parameters()}
    return y.detach().numpy(), xt.grad.numpy(), grads


def numeric_grad(f, a: np.ndarray, h=1e-5) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of `a` (changed in place)."""
    out = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + h
        fp = f()
        a[i] = old - h
        fm = f()
        a[i] = old
        out[i] = (fp - fm) / (2 * h)
    return out


CASES = [
    ("conv valid 3x3", S.Conv2d(filters=4, kernel=3), IMG),
    ("conv same 3x3", S.Conv2d(filters=3, kernel=3, padding="same"), IMG),
    ("conv same 2x4 (asymmetric pads)", S.Conv2d(filters=3, kernel=(2, 4), padding="same"), IMG),
    ("conv same stride 2 (asymmetric pads)", S.Conv2d(filters=3, kernel=2, stride=2, padding="same"), IMG),
    ("conv valid 3x3 stride 2 no bias", S.Conv2d(filters=4, kernel=3, stride=2, bias=False), IMG),
    ("conv pad 1 kernel 3x2 stride (2,1)", S.Conv2d(filters=2, kernel=(3, 2), stride=(2, 1), padding=1), IMG),
    ("conv one channel in", S.Conv2d(filters=5, kernel=3, stride=2), (1, 7, 5)),
    ("maxpool 2", S.MaxPool(size=2), IMG),
    ("maxpool 3 stride 2 (overlapping)", S.MaxPool(size=3, stride=2), IMG),
    ("maxpool 2x3 stride 1", S.MaxPool(size=(2, 3), stride=1), IMG),
    ("avgpool 2", S.AvgPool(size=2), IMG),
    ("avgpool 3 stride 2 (overlapping)", S.AvgPool(size=3, stride=2), IMG),
    ("avgpool 2x3 stride (1,2)", S.AvgPool(size=(2, 3), stride=(1, 2)), IMG),
    ("dense", S.Dense(units=4), (6,)),
    ("dense no bias", S.Dense(units=3, bias=False), (5,)),
    ("flatten", S.Flatten(), IMG),
    ("batchnorm image", S.BatchNorm(), IMG),
    ("batchnorm vector", S.BatchNorm(momentum=0.3), (6,)),
    ("batchnorm image, evaluation", S.BatchNorm(), IMG),
    ("batchnorm vector, evaluation", S.BatchNorm(), (6,)),
    ("sigmoid", S.Sigmoid(), IMG),
    ("tanh", S.Tanh(), IMG),
    ("relu", S.ReLU(), IMG),
    ("leaky_relu", S.LeakyReLU(slope=0.1), IMG),
    ("elu", S.ELU(alpha=0.7), IMG),
    ("maxout image", S.Maxout(pieces=2), (4, 7, 5)),
    ("maxout vector", S.Maxout(pieces=3), (6,)),
    ("softmax (identity: the loss applies it)", S.Softmax(), (6,)),
]


@pytest.mark.parametrize("name,layer,in_shape", CASES, ids=[c[0] for c in CASES])
def test_layer_matches_autograd_and_finite_differences(name, layer, in_shape):
    training = "evaluation" not in name  # only batchnorm (and dropout, below) behaves differently
    rec, L, mod = make(layer, in_shape)
    L.training = training
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, *in_shape))
    y = L.forward(x.copy())
    g = rng.normal(size=y.shape)  # an upstream gradient dL/dy; the loss is sum(y * g)
    dx = L.backward(g)
    yt, dxt, gt = torch_grads(mod, x, g, training)

    # 1) forward and backward agree with PyTorch
    assert y.shape == yt.shape
    assert rel_err(y, yt) <= TOL, "forward"
    assert rel_err(dx, dxt) <= TOL, "dL/dx vs autograd"
    assert set(L.grads) == set(gt)
    for k in gt:
        assert rel_err(L.grads[k], gt[k]) <= TOL, f"dL/d{k} vs autograd"

    # 2) and with finite differences of the NumPy forward itself
    def f():
        return float((L.forward(xv) * g).sum())

    xv = x.copy()
    assert rel_err(dx, numeric_grad(f, xv)) <= TOL, "dL/dx vs finite differences"
    for k, p in L.params.items():
        assert rel_err(L.grads[k], numeric_grad(f, p)) <= TOL, f"dL/d{k} vs finite differences"


def test_batchnorm_running_statistics_match_torch():
    rec, L, mod = make(S.BatchNorm(momentum=0.2), IMG)
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(3, *IMG))
    for _ in range(3):
        L.training = True
        L.forward(x)
        mod.train()
        mod(torch.from_numpy(x))
    assert rel_err(L.buffers["running_mean"], mod.running_mean.numpy()) <= TOL
    assert rel_err(L.buffers["running_var"], mod.running_var.numpy()) <= TOL  # unbiased, as torch


def test_maxpool_ties_go_to_the_first_maximum_like_torch():
    # a flat background (all ties) is common in MNIST: the gradient must not be counted 4 times
    rec, L, mod = make(S.MaxPool(size=2), (1, 4, 4))
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0  # two equal maxima in the first window
    L.forward(x)
    g = np.ones((1, 1, 2, 2))
    _, dxt, _ = torch_grads(mod, x, g, False)
    assert np.array_equal(L.backward(g), dxt)
    assert L.backward(g).sum() == 4.0


def test_dropout_is_inverted_masks_gradients_and_is_off_in_evaluation():
    rec, L, _ = make(S.Dropout(rate=0.25), IMG)
    x = np.random.default_rng(3).normal(size=(200, *IMG))
    L.rng = np.random.default_rng(0)
    L.training = True
    y = L.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    assert np.allclose(y[kept], x[kept] / 0.75)  # survivors scaled by 1/(1-p)
    g = np.random.default_rng(4).normal(size=x.shape)
    assert np.allclose(L.backward(g), g * kept / 0.75)

    def f():  # the same mask for every evaluation: re-seed before each forward
        L.rng = np.random.default_rng(0)
        return float((L.forward(xv) * g).sum())

    xv = x[:3].copy()
    g = g[:3]
    f()
    assert rel_err(L.backward(g), numeric_grad(f, xv)) <= TOL
    L.training = False
    assert L.forward(x) is x and L.backward(g) is g


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(smoothing):
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, size=(7, 5))
    y = rng.integers(0, 5, 7)
    loss, dz = cross_entropy(z, y, smoothing)
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    lt = F.cross_entropy(zt, torch.from_numpy(y), label_smoothing=smoothing)
    lt.backward()
    assert abs(loss - lt.item()) <= TOL * abs(lt.item())
    assert rel_err(dz, zt.grad.numpy()) <= TOL

    def f():
        return cross_entropy(zv, y, smoothing)[0]

    zv = z.copy()
    assert rel_err(dz, numeric_grad(f, zv)) <= TOL


NET = S.Spec(input_shape=(2, 7, 5), layers=[
    S.Conv2d(filters=4, kernel=3, stride=2, padding="same", bias=False), S.BatchNorm(), S.ELU(),
    S.Conv2d(filters=6, kernel=2, padding="same"), S.Maxout(pieces=2), S.MaxPool(size=2, stride=1),
    S.AvgPool(size=(1, 2)), S.LeakyReLU(), S.Flatten(), S.Dense(units=8, bias=False), S.BatchNorm(), S.Tanh(),
    S.Dense(units=6), S.Sigmoid(), S.Dense(units=3), S.Softmax(),
])


def test_whole_network_backprop_matches_autograd():
    """Every parameter's gradient of the training loss, through a net that chains every layer kind.
    (No bias right before a batchnorm: its true gradient is 0 and both engines give rounding noise.)"""
    rng = np.random.default_rng(6)
    w = {k: rng.normal(0, 0.5, v.shape) for k, v in NET.init_weights(0).items()}
    for k in w:
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2, w[k].shape)
    x = rng.normal(size=(3, *NET.input_shape))
    y = np.array([0, 2, 1])
    eng = NumpyEngine(NET, w, dtype=np.float64)
    eng._mode(True)
    loss, dz = cross_entropy(eng.forward(x), y, 0.1)
    dx = eng.backward(dz, need_input_grad=True)

    net = TorchNet(NET).double()
    sd = net.state_dict()
    for k in sd:
        if _key(k) is not None:  # (batch norm's step counter is no weight)
            sd[k] = torch.from_numpy(w[_key(k)])
    net.load_state_dict(sd)
    net.train()
    xt = torch.from_numpy(x).requires_grad_(True)
    lt = F.cross_entropy(net(xt), torch.from_numpy(y), label_smoothing=0.1)
    lt.backward()
    assert abs(loss - lt.item()) <= TOL * abs(lt.item())
    assert rel_err(dx, xt.grad.numpy()) <= TOL
    for k, p in net.named_parameters():
        name, param = _key(k).split(".")
        layer = next(l for l in eng.layers if l.name == name)
        assert rel_err(layer.grads[param], p.grad.numpy()) <= TOL, k


def test_input_gradient_matches_autograd():
    rng = np.random.default_rng(7)
    spec = S.Spec(input_shape=(1, 7, 5), layers=[S.Conv2d(filters=3, kernel=3, stride=2, padding="same"),
                                                 S.Tanh(), S.Flatten(), S.Dense(units=4), S.Softmax()])
    w = {k: rng.normal(0, 0.5, v.shape) for k, v in spec.init_weights(0).items()}
    x = rng.normal(size=(3, 1, 7, 5))
    target = np.array([1, 3, 0])
    g = NumpyEngine(spec, w, dtype=np.float64).input_gradient(x, target)
    net = TorchNet(spec).double()
    net.load_state_dict({k: torch.from_numpy(w[_key(k)]) for k in net.state_dict()})
    xt = torch.from_numpy(x).requires_grad_(True)
    net(xt).gather(1, torch.from_numpy(target).view(-1, 1)).sum().backward()
    assert rel_err(g, xt.grad.numpy()) <= TOL
