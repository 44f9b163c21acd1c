"""The NumPy engine against the PyTorch engine: same outputs, same training steps, same runs.

float32 throughout (the engines' training precision): logits within 1e-5 for every preset, and
the weights after a few optimiser steps within 1e-5, for every optimiser.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tegaki import spec as S
from tegaki.engines import make_engine
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.torch_engine import TorchEngine, TorchNet, _key
from tegaki.errors import TegakiError
from tegaki.spec import load_preset, preset_names


def random_weights(spec: S.Spec, seed: int = 1) -> dict[str, np.ndarray]:
    """The preset's own initialisation, with any all-zero tensor (lenet's output layer) made random,
    so that every layer matters to the logits."""
    w = spec.init_weights(seed)
    rng = np.random.default_rng(seed)
    for k, v in w.items():
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif not v.any():
            w[k] = rng.normal(0, 0.1, v.shape).astype(np.float32)
    return w


def batch(spec: S.Spec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *spec.input_shape[-2:]), dtype=np.uint8)
    return images, rng.integers(0, spec.num_classes, n)


NORM = {"mean": 0.1307, "std": 0.3081}


@pytest.mark.parametrize("preset", preset_names())
def test_engines_give_the_same_logits_for_every_preset(preset):
    spec = load_preset(preset)
    w = random_weights(spec)
    images, _ = batch(spec, 16)
    t = make_engine("torch", spec, w)
    n = make_engine("numpy", spec, w)
    x = n.prepare(images, None, NORM)[0]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, t.prepare(images, None, NORM)[0].numpy())  # the same normalisation
    np.testing.assert_allclose(n.logits(x), t.logits(x), rtol=0, atol=1e-5)
    # every layer's activation too (what inspection pictures are made of), to float32 rounding of
    # sums of hundreds of terms: ffnn's hidden pre-activations reach 40 in size
    at, an = t.activations(x), n.activations(x)
    assert list(at) == list(an)
    for k in at:
        np.testing.assert_allclose(an[k], at[k], rtol=0, atol=1e-5 * max(1.0, np.abs(at[k]).max()), err_msg=k)


@pytest.mark.parametrize("preset", ["lenet", "keras-lecture"])
def test_engines_give_the_same_input_gradients(preset):
    """Saliency maps (d logit / d pixel) come out the same whichever engine draws them."""
    spec = load_preset(preset)
    w = random_weights(spec)
    images, labels = batch(spec, 6)
    x = NumpyEngine(spec, w).prepare(images, None, NORM)[0]
    gt = make_engine("torch", spec, w).input_gradient(x, labels)
    gn = make_engine("numpy", spec, w).input_gradient(x, labels)
    assert gn.shape == gt.shape == x.shape
    np.testing.assert_allclose(gn, gt, rtol=0, atol=1e-5 * np.abs(gt).max())


def no_dropout(spec: S.Spec) -> S.Spec:
    """The same network with dropout rates set to 0: the engines draw different random masks."""
    d = spec.to_dict()
    for layer in d["layers"]:
        if layer["type"] == "dropout":
            layer["rate"] = 0.0
    return S.Spec.from_dict(d)


BN_NET = S.Spec(input_shape=(1, 28, 28), layers=[
    S.Conv2d(filters=6, kernel=5, stride=2, padding="same", bias=False), S.BatchNorm(), S.ReLU(),
    S.MaxPool(size=3, stride=2), S.Flatten(), S.Dense(units=32, bias=False), S.BatchNorm(), S.ELU(),
    S.Dense(units=10), S.Softmax()], name="bn-net")

STEP_SPECS = {p: no_dropout(load_preset(p)) for p in ("ffnn", "lenet", "keras-lecture", "nolearn")}
STEP_SPECS["bn-net"] = BN_NET
LR = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0}


def torch_optimizer(name, params, lr):
    """torch.optim as the torch engine configures it (momentum 0.9, weight decay 1e-3)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=1e-3)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adadelta": torch.optim.Adadelta}[name](
        params, lr=lr, weight_decay=1e-3)


def train_both(spec, w, optimizer, lr, steps, dtype=np.float32):
    """Both engines from the same weights through the same batches; their weights and last gradients.

    float32: the torch engine itself. float64: a plain torch.optim loop on the torch engine's
    network in double precision (the torch engine trains in float32 only)."""
    n = NumpyEngine(spec, w, dtype=dtype)
    images, labels = batch(spec, 8 * steps, seed=3)
    x, y = n.prepare(images, labels, NORM)  # the same input arrays for both
    n.configure(optimizer, lr, momentum=0.9, weight_decay=1e-3, label_smoothing=0.1)
    if dtype == np.float32:
        t = TorchEngine(spec, w)
        t.configure(optimizer, lr, momentum=0.9, weight_decay=1e-3, label_smoothing=0.1)
        tdata = t.prepare(images, labels, NORM)
        net = t.net
    else:
        net = TorchNet(spec).double()
        net.load_state_dict({k: torch.from_numpy(w[_key(k)])
                             for k in net.state_dict() if not k.endswith("num_batches_tracked")}, strict=False)
        opt = torch_optimizer(optimizer, net.parameters(), lr)
    for step in range(steps):
        idx = np.arange(step * 8, step * 8 + 8)
        lr_now = lr * (1 - 0.2 * step)  # a changing learning rate, as schedules make
        n.set_lr(lr_now)
        n.train_step(*n.take((x, y), idx))
        if dtype == np.float32:
            t.set_lr(lr_now)
            t.train_step(*t.take(tdata, idx))
        else:
            for g in opt.param_groups:
                g["lr"] = lr_now
            net.train()
            opt.zero_grad()
            loss = F.cross_entropy(net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]), label_smoothing=0.1)
            loss.backward()
            opt.step()
    if dtype == np.float32:
        assert abs(t.read_stats()[0] - n.read_stats()[0]) <= 1e-5 and t.read_stats()[1] == n.read_stats()[1]
    wt = {_key(k): v.detach().double().numpy().copy()
          for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    grads_t = {_key(k): p.grad.double().numpy() for k, p in net.named_parameters()}
    return wt, n.get_weights(), grads_t


def assert_moved(w0, w1):
    assert any(not np.allclose(w1[k], w0[k]) for k in w0), "nothing changed: the comparison would prove nothing"


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("name", list(STEP_SPECS))
def test_sgd_steps_give_the_same_weights(name, optimizer):
    """float32, three steps (so that the momentum buffer matters), every weight within 1e-5."""
    spec = STEP_SPECS[name]
    lr = 0.4 if name == "ffnn" and optimizer == "sgd" else LR[optimizer]  # ffnn: its own recipe
    w = spec.init_weights(2) if name == "lenet" else random_weights(spec, seed=2)  # lenet: its zero output layer
    wt, wn, _ = train_both(spec, w, optimizer, lr, steps=3)
    assert_moved(w, wt)
    for k in wt:
        np.testing.assert_allclose(wn[k], wt[k], rtol=0, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adadelta"])
@pytest.mark.parametrize("name", ["ffnn", "lenet", "bn-net"])
def test_adam_step_gives_the_same_weights(name, optimizer):
    """float32, one step: every weight within 1e-5, except where the gradient is zero to float32
    rounding (below 1/1000 of the tensor's largest). Adam divides by |g|, so there rounding noise
    can move the step by up to lr; such entries must stay rare (<= 0.1%). The float64 test below
    checks them too."""
    spec = STEP_SPECS[name]
    w = random_weights(spec, seed=2)
    wt, wn, gt = train_both(spec, w, optimizer, LR[optimizer], steps=1)
    assert_moved(w, wt)
    off = 0
    for k in gt:
        diff = np.abs(wn[k] - wt[k])
        noise = (gt[k] != 0) & (np.abs(gt[k]) < 1e-3 * np.abs(gt[k]).max())
        assert diff[~noise].max(initial=0) <= 1e-5, k
        off += int((diff > 1e-5).sum())
    assert off <= 1e-3 * sum(v.size for v in gt.values())
    for k in set(wt) - set(gt):  # batchnorm running statistics
        np.testing.assert_allclose(wn[k], wt[k], rtol=0, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("optimizer", list(LR))
@pytest.mark.parametrize("name", ["lenet", "bn-net"])
def test_training_steps_agree_exactly_in_float64(name, optimizer):
    """float64, three steps, every weight within 1e-9: the optimisers' arithmetic is torch's,
    bias corrections and the place of eps included."""
    spec = STEP_SPECS[name]
    w = {k: v.astype(np.float64) for k, v in random_weights(spec, seed=2).items()}
    wt, wn, _ = train_both(spec, w, optimizer, LR[optimizer], steps=3, dtype=np.float64)
    assert_moved(w, wt)
    for k in wt:
        np.testing.assert_allclose(wn[k], wt[k], rtol=0, atol=1e-9, err_msg=k)


def test_optimizer_state_round_trip_resumes_exactly():
    spec = STEP_SPECS["bn-net"]
    images, labels = batch(spec, 16, seed=4)
    a = NumpyEngine(spec, random_weights(spec))
    a.configure("adam", 1e-2)
    data = a.prepare(images, labels, NORM)
    for i in range(2):
        a.train_step(*a.take(data, np.arange(8 * i, 8 * i + 8)))
    arrays, meta = a.optimizer_state()
    meta = json.loads(json.dumps(meta))  # as the checkpoint stores it
    b = NumpyEngine(spec, a.get_weights())
    b.configure("adam", 1e-2)
    b.load_optimizer_state(arrays, meta)
    for e in (a, b):
        e.train_step(*e.take(data, np.arange(8)))
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[k], v, err_msg=k)
    c = NumpyEngine(spec, a.get_weights())
    c.configure("sgd", 0.1)
    with pytest.raises(TegakiError, match="another engine or optimiser"):
        c.load_optimizer_state(arrays, meta)


def test_dropout_is_seeded_and_off_in_evaluation():
    spec = load_preset("nolearn")
    w = spec.init_weights(0)
    images, labels = batch(spec, 8)
    outs = []
    for _ in range(2):
        e = NumpyEngine(spec, w)
        e.configure("sgd", 0.1)
        e.seed(7)
        data = e.prepare(images, labels, NORM)
        e.train_step(*data)
        outs.append(e.get_weights())
        assert np.array_equal(e.logits(data[0]), e.logits(data[0]))  # evaluation: deterministic
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])


def test_network_learns_3_bit_binary_to_decimal():
    """The source document's sanity check: 3 bits in, the number they spell out (0-7) out."""
    spec = S.Spec(input_shape=(3,), layers=[S.Dense(units=8, init="uniform"), S.Sigmoid(),
                                             S.Dense(units=8, init="uniform"), S.Softmax()], normalize="unit")
    bits = np.array([[(n >> 2) & 1, (n >> 1) & 1, n & 1] for n in range(8)], np.uint8) * 255  # 0 or 255
    labels = np.arange(8)
    e = NumpyEngine(spec, spec.init_weights(0))
    e.configure("sgd", 2.0)
    data = e.prepare(bits, labels, {"mean": 0.0, "std": 1.0})
    assert data[0].tolist()[5] == [1.0, 0.0, 1.0]
    loss0 = e.evaluate(data)[0]
    for _ in range(3000):
        e.train_step(*data)
    loss, acc, logits = e.evaluate(data)
    assert acc == 1.0 and logits.argmax(1).tolist() == list(range(8))
    assert loss < 0.1 < loss0


def test_batchnorm_with_a_batch_of_one_is_a_clear_error():
    e = NumpyEngine(BN_NET, BN_NET.init_weights(0))
    e.configure("sgd", 0.1)
    images, labels = batch(BN_NET, 4)
    data = e.prepare(images, labels, NORM)
    e.train_step(*e.take(data, np.arange(2)))  # a conv batchnorm sees N*H*W values: fine
    with pytest.raises(TegakiError, match="train with a larger batch size"):
        e.train_step(*e.take(data, np.arange(1)))  # the dense batchnorm sees one value per feature


# runs move between engines ---------------------------------------------------------------
def accuracy_of(out: str) -> float:
    return float(out.split("accuracy ")[1].split("%")[0])


def test_torch_run_evaluates_the_same_on_the_numpy_engine(lenet_run, cli, tmp_path):
    rt = cli("evaluate", lenet_run, "--engine", "torch", "--out", tmp_path / "t")
    rn = cli("evaluate", lenet_run, "--engine", "numpy", "--out", tmp_path / "n")
    assert rt.code == 0 and rn.code == 0, rn.err
    assert "engine numpy" in rn.out
    assert abs(accuracy_of(rn.out) - accuracy_of(rt.out)) <= 0.02 and accuracy_of(rn.out) > 95.0
    cm_t = json.loads((tmp_path / "t" / "evaluation.json").read_text())["confusion_matrix"]
    cm_n = json.loads((tmp_path / "n" / "evaluation.json").read_text())["confusion_matrix"]
    assert np.abs(np.array(cm_t) - np.array(cm_n)).sum() <= 2  # at most one near-tie may flip


def test_numpy_trained_run_evaluates_the_same_on_the_torch_engine(mnist_dir, cli, tmp_path):
    out = tmp_path / "ffnn"
    r = cli("train", "--engine", "numpy", "--preset", "ffnn", "--epochs", "1", "--out", out)
    assert r.code == 0, r.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "numpy" and metrics["test_accuracy"] > 0.88
    for engine in ("torch", "numpy"):
        re = cli("evaluate", out, "--engine", engine, "--out", tmp_path / engine)
        assert re.code == 0, re.err
        assert abs(accuracy_of(re.out) - 100 * metrics["test_accuracy"]) <= 0.02


def test_shared_loop_schedule_interrupt_and_resume_with_the_numpy_engine(mnist_small, tmp_path):
    """The numpy engine in train.py's loop: a cosine schedule, early-stopping bookkeeping, a
    checkpoint after each epoch, and a resume that ends exactly where an uninterrupted run ends."""
    from tegaki.run import load_weights
    from tegaki.train import TrainConfig, read_checkpoint, train

    from dataclasses import replace

    ds = replace(mnist_small, train_images=mnist_small.train_images[:6000],
                 train_labels=mnist_small.train_labels[:6000])
    spec = load_preset("ffnn")
    cfg = TrainConfig.for_spec(spec, engine="numpy", epochs=2, optimizer="momentum", lr=0.1, schedule="cosine",
                               patience=5, valid_size=1000, seed=3)
    whole = train(spec, ds, cfg, tmp_path / "whole", log=lambda m: None)
    assert whole.metrics["engine"] == "numpy" and whole.metrics["test_accuracy"] > 0.8
    assert whole.history[1]["lr"] < whole.history[0]["lr"] < cfg.lr  # the cosine schedule ran

    def stop_after_epoch_1(line: str) -> None:  # the loop logs a table row per epoch, after its checkpoint
        if line.strip().startswith("1 |"):
            raise KeyboardInterrupt

    part = train(spec, ds, cfg, tmp_path / "part", log=stop_after_epoch_1)
    assert part.interrupted
    state = read_checkpoint(tmp_path / "part")
    assert state["epoch"] == 1
    resumed = train(spec, ds, cfg, tmp_path / "part", log=lambda m: None, resume=state)
    assert not resumed.interrupted
    a, b = load_weights(tmp_path / "whole" / "model.safetensors"), load_weights(tmp_path / "part" / "model.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed.metrics["test_accuracy"] == whole.metrics["test_accuracy"]
