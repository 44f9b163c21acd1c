"""Batch-norm refresh (tegaki/batchnorm.py, `bn_refresh`): after it, each batch-norm layer's running
statistics are exactly the mean and variance of its input over the images, as evaluation computes that
input in one ordinary forward pass (the reference, taken independently of the layer-by-layer refresh);
the two engines agree; training ends with it, before the test set is measured; Ctrl-C during it loses
nothing; bad uses are one line."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import digits_like

from tegaki import batchnorm
from tegaki.data.dataset import validation_split
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.torch_engine import TorchEngine
from tegaki.errors import TegakiError
from tegaki.run import load_run
from tegaki.spec import Spec
from tegaki.train import TrainConfig, read_checkpoint, train

NORM = {"mean": 0.13, "std": 0.31}

# a residual block, then dropout feeding a batch norm (the variance shift the refresh removes)
LAYERS = [
    {"type": "conv2d", "filters": 4, "kernel": 5, "name": "c1"},
    {"type": "batchnorm", "name": "b1"},
    {"type": "relu", "name": "r1"},
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "name": "c2"},
    {"type": "add", "inputs": ["r1", "c2"], "name": "a1"},
    {"type": "maxpool", "size": 2, "name": "p1"},
    {"type": "batchnorm", "name": "b2"},
    {"type": "relu", "name": "r2"},
    {"type": "flatten", "name": "f1"},
    {"type": "dropout", "rate": 0.3, "name": "o1"},
    {"type": "dense", "units": 16, "name": "d1"},
    {"type": "batchnorm", "name": "b3"},
    {"type": "relu", "name": "r3"},
    {"type": "dense", "units": 10, "name": "d2"},
    {"type": "softmax", "name": "s1"},
]
SOURCES = [("b1", "c1"), ("b2", "p1"), ("b3", "d1")]  # each batch norm and the layer it normalises, by hand


def spec(train: dict | None = None) -> Spec:
    return Spec.from_dict({"name": "bnnet", "input": [1, 28, 28], "layers": LAYERS, **({"train": train} if train else {})})


def population_gap(engine, x) -> float:
    """The largest relative gap between a batch norm's stored statistics and the mean and variance of its input
    over `x`, all inputs taken from one ordinary evaluation pass."""
    acts = engine.activations(x)
    w = engine.get_weights()
    gap = 0.0
    for name, src in SOURCES:
        a = acts[src].astype(np.float64)
        axes = (0, 2, 3) if a.ndim == 4 else (0,)
        mean, var = a.mean(axis=axes), a.var(axis=axes)
        scale = np.sqrt(var) + 1e-12
        gap = max(gap, float(np.max(np.abs(w[f"{name}.running_mean"] - mean) / scale)),
                  float(np.max(np.abs(w[f"{name}.running_var"] - var) / var)))
    return gap


def calls_per_layer(n: int, chunk: int) -> int:
    return -(-n // chunk)


def test_the_layers_and_what_they_normalise():
    assert batchnorm.layers(spec()) == SOURCES


@pytest.mark.parametrize("make", [TorchEngine, NumpyEngine], ids=["torch", "numpy"])
def test_after_a_refresh_each_layer_holds_its_inputs_population_statistics(make):
    images, _ = digits_like(300, seed=1)
    engine = make(spec(), spec().init_weights(3))
    x = engine.prepare(images, None, NORM)[0]
    assert population_gap(engine, x) > 0.1  # before: the initial statistics (0 and 1) are far off
    assert batchnorm.refresh(engine, x, chunk=64) == 3
    assert population_gap(engine, x) < 1e-5  # each layer refreshed after the ones before it


def test_the_refresh_does_not_depend_on_the_chunk_size_or_the_engine():
    images, _ = digits_like(200, seed=2)
    w = spec().init_weights(4)
    stats = []
    for make, chunk in ((TorchEngine, 200), (TorchEngine, 7), (NumpyEngine, 33)):
        engine = make(spec(), w)
        batchnorm.refresh(engine, engine.prepare(images, None, NORM)[0], chunk=chunk)
        stats.append({k: v for k, v in engine.get_weights().items() if k.endswith(("running_mean", "running_var"))})
    for other in stats[1:]:
        for k, v in stats[0].items():
            np.testing.assert_allclose(other[k], v, rtol=2e-5, atol=1e-6, err_msg=k)


def test_only_the_statistics_change_and_an_interrupted_refresh_changes_nothing(monkeypatch):
    assert calls_per_layer(100, 40) == 3
    images, _ = digits_like(100, seed=5)
    engine = TorchEngine(spec(), spec().init_weights(6))
    before = engine.get_weights()
    x = engine.prepare(images, None, NORM)[0]
    calls = {"n": 0}
    original = TorchEngine.activations

    def stop_on_the_fifth(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(TorchEngine, "activations", stop_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        batchnorm.refresh(engine, x, chunk=40)  # 3 chunks per layer: stopped in the second layer's pass, the first set
    assert all(np.array_equal(v, before[k]) for k, v in engine.get_weights().items())
    monkeypatch.setattr(TorchEngine, "activations", original)
    batchnorm.refresh(engine, x, chunk=40)
    after = engine.get_weights()
    changed = sorted(k for k in after if not np.array_equal(after[k], before[k]))
    assert changed == sorted(f"{n}.{s}" for n, _ in SOURCES for s in ("running_mean", "running_var"))


def test_a_batch_norm_on_the_input_or_on_a_named_layer_and_the_float64_engine():
    """A batch norm first (it normalises the input itself) and one that names an earlier layer, not the previous."""
    layers = [{"type": "batchnorm", "name": "b0"},
              {"type": "conv2d", "filters": 3, "kernel": 3, "name": "c1"},
              {"type": "relu", "name": "r1"},
              {"type": "batchnorm", "inputs": ["c1"], "name": "b1"},
              {"type": "add", "inputs": ["r1", "b1"], "name": "a1"},
              {"type": "flatten", "name": "f1"}, {"type": "dense", "units": 10, "name": "d1"},
              {"type": "softmax", "name": "s1"}]
    s = Spec.from_dict({"input": [1, 28, 28], "layers": layers})
    assert batchnorm.layers(s) == [("b0", "input"), ("b1", "c1")]
    images, _ = digits_like(120, seed=8)
    for engine in (TorchEngine(s, s.init_weights(1)), NumpyEngine(s, s.init_weights(1), dtype=np.float64)):
        x = engine.prepare(images, None, NORM)[0]
        batchnorm.refresh(engine, x, chunk=50)
        w, acts = engine.get_weights(), engine.activations(x)
        pixels = np.asarray(x if isinstance(x, np.ndarray) else x.numpy(), np.float64)
        tol = 1e-12 if engine.precision == "fp64" else 1e-5
        for name, a in (("b0", pixels), ("b1", acts["c1"].astype(np.float64))):
            np.testing.assert_allclose(w[f"{name}.running_mean"], a.mean(axis=(0, 2, 3)), rtol=tol, atol=tol)
            np.testing.assert_allclose(w[f"{name}.running_var"], a.var(axis=(0, 2, 3)), rtol=tol)


def test_chunks_never_exceed_the_engines_inference_batch(monkeypatch):
    images, _ = digits_like(90, seed=9)
    engine = TorchEngine(spec(), spec().init_weights(2))
    engine.batch_cap = 16  # as for a network whose maps would not fit a bigger batch
    sizes = []
    original = TorchEngine.activations

    def record(self, x, only=None):
        sizes.append(len(x))
        return original(self, x, only)

    monkeypatch.setattr(TorchEngine, "activations", record)
    batchnorm.refresh(engine, engine.prepare(images, None, NORM)[0])
    assert max(sizes) == 16 and len(sizes) == 3 * calls_per_layer(90, 16)


@pytest.fixture(scope="module")
def small(mnist_small):
    return replace(mnist_small, train_images=mnist_small.train_images[:1500],
                   train_labels=mnist_small.train_labels[:1500],
                   test_images=mnist_small.test_images[:500], test_labels=mnist_small.test_labels[:500])


def config(**kw) -> TrainConfig:
    return TrainConfig.for_spec(spec(), epochs=2, optimizer="momentum", lr=0.05, batch_size=100, valid_size=300,
                                seed=2, device="cpu", augment="affine", **kw)


@pytest.fixture(scope="module")
def refreshed_run(tmp_path_factory, small):
    out = tmp_path_factory.mktemp("bn") / "run"
    lines = []
    result = train(spec(), small, config(bn_refresh=True), out, log=lines.append)
    return out, result, lines


def test_training_ends_with_the_refresh_on_the_undistorted_training_split(refreshed_run, small, tmp_path):
    out, result, lines = refreshed_run
    assert any(l.startswith("batch norm: recomputing the statistics of 3 layers on the 1,200 training images") for l in lines)
    assert any(l.startswith("batch norm: statistics recomputed (") for l in lines)
    assert isinstance(result.metrics["bn_refresh_seconds"], float)
    run = load_run(out)
    assert run.meta["config"]["bn_refresh"] is True
    tr, _ = validation_split(small.train_labels, 300, 2)
    engine = TorchEngine(run.spec, run.weights)
    assert population_gap(engine, engine.prepare(small.train_images[tr], None, run.norm)[0]) < 1e-5
    # the test set was measured after the refresh: the saved run scores what the metrics say
    logits = engine.evaluate(engine.prepare(small.test_images, small.test_labels, run.norm))[2]
    assert result.metrics["test_mistakes"] == int((logits.argmax(1) != small.test_labels).sum())
    # the same run without it: the same weights, only other statistics (the refresh is the last step)
    plain = train(spec(), small, config(), tmp_path / "plain", log=lambda m: None)
    assert plain.metrics["bn_refresh_seconds"] is None
    a, b = load_run(tmp_path / "plain").weights, run.weights
    differ = sorted(k for k in a if not np.array_equal(a[k], b[k]))
    assert differ == sorted(f"{n}.{s}" for n, _ in SOURCES for s in ("running_mean", "running_var"))


def test_the_refresh_follows_the_best_epochs_or_the_averaged_weights(small, tmp_path):
    """With --patience the best epoch's weights, with --ema their average, are what is refreshed and saved."""
    tr, _ = validation_split(small.train_labels, 300, 2)
    for options in ({"patience": 1, "monitor": "accuracy"}, {"ema": 0.9}):
        train(spec(), small, config(bn_refresh=True, **options), tmp_path / str(len(options)), log=lambda m: None)
        run = load_run(tmp_path / str(len(options)))
        engine = TorchEngine(run.spec, run.weights)
        assert population_gap(engine, engine.prepare(small.train_images[tr], None, run.norm)[0]) < 1e-5, options


def test_ctrl_c_during_the_refresh_keeps_the_last_epoch_and_a_resume_ends_the_same(refreshed_run, small, tmp_path,
                                                                                   monkeypatch):
    out = tmp_path / "r"
    original = TorchEngine.activations

    def ctrl_c(self, x, only=None):
        if only is not None:  # the refresh's passes, not validation
            raise KeyboardInterrupt
        return original(self, x, only)

    monkeypatch.setattr(TorchEngine, "activations", ctrl_c)
    lines = []
    stopped = train(spec(), small, config(bn_refresh=True), out, log=lines.append)
    assert stopped.interrupted and "checkpoint after epoch 2" in lines[-1]
    assert not (out / "model.json").exists()
    monkeypatch.setattr(TorchEngine, "activations", original)
    state = read_checkpoint(out)
    done = train(Spec.from_dict(state["spec"]), small, TrainConfig(**state["config"]), out, log=lambda m: None,
                 resume=state)
    assert not done.interrupted
    a, b = load_run(out).weights, load_run(refreshed_run[0]).weights
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_a_network_without_batch_norm_refuses_it(cli):
    with pytest.raises(TegakiError, match="bn_refresh recomputes batch-norm statistics, and 'plain' has no batchnorm layer; drop it"):
        TrainConfig.for_spec(Spec.from_dict({"name": "plain", "input": [1, 28, 28], "layers": [
            {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}]}), bn_refresh=True)
    r = cli("train", "--preset", "lenet", "--bn-refresh", "--epochs", "1")
    assert r.code != 0 and r.err.strip() == ("tegaki: error: --bn-refresh recomputes batch-norm statistics, and 'lenet' has "
                                             "no batchnorm layer; drop it")
    assert TrainConfig.for_spec(spec(), bn_refresh=False).bn_refresh is False


def test_a_resume_keeps_the_runs_own_choice(cli, refreshed_run):
    r = cli("train", "--resume", str(refreshed_run[0]), "--no-bn-refresh")
    assert r.code != 0 and "drop --no-bn-refresh (only" in r.err
    r = cli("train", "--resume", str(refreshed_run[0]), "--bn-refresh")
    assert r.code != 0 and "drop --bn-refresh (only" in r.err


def test_fit_in_python_takes_it_too():
    import tegaki as tg

    images, labels = digits_like(400, seed=7)
    model = tg.Sequential(spec())
    model.fit(images, labels, epochs=1, batch_size=50, verbose=0, augment="affine", bn_refresh=True)
    engine = TorchEngine(model.spec, model.run.weights)
    assert population_gap(engine, engine.prepare(images, None, model.run.norm)[0]) < 1e-5


def test_ctrl_c_during_fits_refresh_says_the_statistics_are_trainings(monkeypatch, capsys):
    import tegaki as tg

    images, labels = digits_like(200, seed=8)
    model = tg.Sequential(spec())
    original = TorchEngine.activations

    def ctrl_c(self, x, only=None):
        if only is not None:
            raise KeyboardInterrupt
        return original(self, x, only)

    monkeypatch.setattr(TorchEngine, "activations", ctrl_c)
    history = model.fit(images, labels, epochs=1, batch_size=50, verbose=1, bn_refresh=True)
    assert history.interrupted
    said = capsys.readouterr().out
    assert "stopped after 1 finished epoch" in said and "the batch-norm refresh did not finish" in said
    assert model.predict(images[:3]).shape == (3,)  # still usable
