"""The plain reference layers (Conv2dReference, MaxPoolReference) and the speed-tuned ones beside
them compute the same forward and backward passes, on random shapes, strides and paddings, and
both agree with PyTorch autograd; a NumPy engine built from the reference layers trains exactly
like the fast one; the optimiser's state_dict round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tegaki import spec as S
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.numpy_layers import (Conv2d, Conv2dReference, MaxPool, MaxPoolReference, build_layer,
                                         cross_entropy)
from tegaki.engines.numpy_optim import make_optimizer
from tegaki.engines.torch_engine import TorchNet, build_module, _key
from tegaki.errors import TegakiError

TOL = 1e-10  # float64 throughout: the same sums in another order


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def conv_case(seed: int):
    """A random conv record and input shape: kernels and strides of either form, every padding."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2)) if seed % 2 else int(rng.integers(1, 5))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2)) if seed % 3 == 0 else int(rng.integers(1, 3))
    padding = ["valid", "same", int(rng.integers(0, 3))][seed % 3]
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 10)), int(rng.integers(5, 10)))
    rec = S.Conv2d(filters=int(rng.integers(1, 5)), kernel=kernel, stride=stride, padding=padding,
                   bias=bool(seed % 4))
    return S.Spec(input_shape=shape, layers=[rec]).layers[0], shape, int(rng.integers(1, 4))


def torch_pass(rec, shape, params, x, dy):
    """PyTorch's output, dL/dx and dL/dparams for the same record and weights (autograd, float64)."""
    mod = build_module(rec, shape).double()
    sd = mod.state_dict()
    mod.load_state_dict({k: torch.from_numpy(params[k.split(".")[-1]].copy()) for k in sd})
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = mod(xt)
    (y * torch.from_numpy(dy)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), {k.split(".")[-1]: p.grad.numpy() for k, p in mod.named_parameters()}


@pytest.mark.parametrize("seed", range(12))
def test_conv_reference_fast_and_autograd_agree(seed):
    rec, shape, n = conv_case(seed)
    ref, fast = build_layer(rec, shape, np.float64, reference=True), build_layer(rec, shape, np.float64)
    assert type(ref) is Conv2dReference and type(fast) is Conv2d
    rng = np.random.default_rng(100 + seed)
    for k, v in ref.params.items():
        v[...] = fast.params[k][...] = rng.normal(size=v.shape)
    x = rng.normal(size=(n, *shape))
    y_ref, y_fast = ref.forward(x), fast.forward(x)
    assert y_ref.shape == y_fast.shape == (n, *rec.out_shape(shape))
    dy = rng.normal(size=y_ref.shape)
    dx_ref, dx_fast = ref.backward(dy), fast.backward(dy)
    y_t, dx_t, grads_t = torch_pass(rec, shape, ref.params, x, dy)
    for a, b in ((y_ref, y_fast), (y_ref, y_t), (dx_ref, dx_fast), (dx_ref, dx_t)):
        assert a.shape == b.shape and rel_err(a, b) <= TOL
    for k in ref.params:
        assert rel_err(ref.grads[k], fast.grads[k]) <= TOL and rel_err(ref.grads[k], grads_t[k]) <= TOL, k


def test_conv_reference_by_hand():
    """A 1-channel 3x3 image, a 2x2 kernel, stride 1, no padding: every number written out."""
    layer = Conv2dReference(S.Conv2d(filters=1, kernel=2, name="c"), (1, 3, 3), np.float64)
    layer.params["weight"][...] = [[[[1, 2], [3, 4]]]]
    layer.params["bias"][...] = 10
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)  # 0 1 2 / 3 4 5 / 6 7 8
    # y[0,0] = 0*1 + 1*2 + 3*3 + 4*4 + 10 = 37; then 47 (shift right), 67 (down), 77
    assert layer.forward(x).tolist() == [[[[37, 47], [67, 77]]]]
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    assert dx.tolist() == [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]]  # how many windows met each pixel, weighted
    assert layer.grads["weight"].tolist() == [[[[8, 12], [20, 24]]]]  # sums of the 2x2 windows' inputs
    assert layer.grads["bias"].tolist() == [4]


def pool_case(seed: int):
    rng = np.random.default_rng(seed)
    size = tuple(int(k) for k in rng.integers(1, 4, 2)) if seed % 2 else int(rng.integers(2, 4))
    stride = None if seed % 3 == 0 else int(rng.integers(1, 3))  # stride < size: overlapping windows
    shape = (int(rng.integers(1, 4)), int(rng.integers(4, 9)), int(rng.integers(4, 9)))
    return S.Spec(input_shape=shape, layers=[S.MaxPool(size=size, stride=stride)]).layers[0], shape


@pytest.mark.parametrize("seed", range(12))
def test_maxpool_reference_fast_and_autograd_agree(seed):
    rec, shape = pool_case(seed)
    ref, fast = build_layer(rec, shape, np.float64, reference=True), build_layer(rec, shape, np.float64)
    assert type(ref) is MaxPoolReference and type(fast) is MaxPool
    rng = np.random.default_rng(200 + seed)
    x = rng.integers(0, 4, size=(3, *shape)).astype(np.float64)  # few values: ties in many windows
    y_ref, y_fast = ref.forward(x), fast.forward(x)
    dy = rng.normal(size=y_ref.shape)
    dx_ref, dx_fast = ref.backward(dy), fast.backward(dy)
    y_t, dx_t, _ = torch_pass(rec, shape, {}, x, dy)
    assert np.array_equal(y_ref, y_fast) and np.array_equal(y_ref, y_t)
    assert rel_err(dx_ref, dx_fast) <= TOL and rel_err(dx_ref, dx_t) <= TOL


def test_maxpool_reference_by_hand():
    layer = MaxPoolReference(S.MaxPool(size=2, name="p"), (1, 2, 4), np.float64)
    x = np.array([[[[1, 5, 2, 2], [3, 0, 2, 1]]]], np.float64)
    assert layer.forward(x).tolist() == [[[[5, 2]]]]
    # the winner takes the gradient; on the tie (2, 2, 2) the first one in row order does
    assert layer.backward(np.array([[[[7.0, 9.0]]]])).tolist() == [[[[0, 7, 9, 0], [0, 0, 0, 0]]]]


def lenetish_layers() -> list[S.Layer]:
    return [S.Conv2d(filters=3, kernel=3, padding="same"), S.MaxPool(size=2), S.Tanh(),
            S.Conv2d(filters=4, kernel=(3, 2), stride=(1, 2)), S.MaxPool(size=3, stride=1), S.ReLU(),
            S.Flatten(), S.Dense(units=5), S.Softmax()]


LENETISH = S.Spec(input_shape=(1, 14, 12), layers=lenetish_layers())


def test_reference_engine_trains_exactly_like_the_fast_one():
    rng = np.random.default_rng(3)
    w = {k: rng.normal(0, 0.4, v.shape) for k, v in LENETISH.init_weights(0).items()}
    x, y = rng.normal(size=(6, 1, 14, 12)), rng.integers(0, 5, 6)
    fast = NumpyEngine(LENETISH, w, dtype=np.float64)
    ref = NumpyEngine(LENETISH, w, dtype=np.float64, reference=True)
    assert [type(l).__name__ for l in ref.layers][:2] == ["Conv2dReference", "MaxPoolReference"]
    for e in (fast, ref):
        e.configure("adam", 0.01)
        for _ in range(3):
            e.train_step(x, y)
    for k, v in fast.get_weights().items():
        assert rel_err(v, ref.get_weights()[k]) <= 1e-9, k
    assert rel_err(fast.logits(x), ref.logits(x)) <= 1e-9


def test_input_gradient_after_training_steps_matches_autograd():
    """Training turns off dL/dinput of the first conv; a saliency map afterwards still goes all the way."""
    rng = np.random.default_rng(4)
    spec = S.Spec(input_shape=(1, 14, 12), layers=[S.Tanh(), *lenetish_layers()])  # a layer below the first conv
    w = {k: rng.normal(0, 0.4, v.shape) for k, v in spec.init_weights(0).items()}
    eng = NumpyEngine(spec, w, dtype=np.float64)
    eng.configure("sgd", 0.0)  # lr 0: the weights stay w
    x, target = rng.normal(size=(2, 1, 14, 12)), np.array([4, 1])
    eng.train_step(x, np.array([0, 1]))
    assert eng.layers[eng.first].need_dx is False
    g = eng.input_gradient(x, target)
    net = TorchNet(spec).double()
    net.load_state_dict({k: torch.from_numpy(w[_key(k)]) for k in net.state_dict()})
    xt = torch.from_numpy(x).requires_grad_(True)
    net(xt).gather(1, torch.from_numpy(target).view(-1, 1)).sum().backward()
    assert rel_err(g, xt.grad.numpy()) <= 1e-10
    eng.train_step(x, np.array([0, 1]))  # and training after it still skips the bottom layer's dL/dinput
    assert eng.layers[eng.first].need_dx is False


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "adadelta"])
def test_optimizer_state_dict_round_trip(name):
    rng = np.random.default_rng(5)
    grads = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(4)]
    a_params = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    b_params = [p.copy() for p in a_params]
    a = make_optimizer(name, a_params, 0.05)
    for g in grads[:2]:
        a.step(g)
    arrays, meta = a.state_dict()
    assert meta["optimizer"] == type(a).__name__ and meta["step"] == 2
    assert set(arrays) == {f"opt.{i}.{k}" for i in range(2) for k in type(a).state_keys}
    b = make_optimizer(name, b_params, 0.05)
    for p, q in zip(b_params, a_params):
        p[...] = q
    b.load_state_dict(arrays, meta)
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    for p, q in zip(a_params, b_params):
        assert np.array_equal(p, q)
    other = "adam" if name != "adam" else "sgd"
    with pytest.raises(TegakiError, match="another engine or optimiser"):
        make_optimizer(other, [p.copy() for p in a_params], 0.05).load_state_dict(arrays, meta)


def test_cross_entropy_is_the_loss_the_engines_use():
    # one example, logits (0, 0): loss log 2, gradient (softmax - onehot) = (0.5 - 1, 0.5)
    loss, dz = cross_entropy(np.zeros((1, 2)), np.array([0]))
    assert abs(loss - np.log(2)) < 1e-15 and dz.tolist() == [[-0.5, 0.5]]
