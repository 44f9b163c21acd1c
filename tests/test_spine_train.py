"""The training loop: reproducibility, Ctrl-C and resume, early stopping, schedules, the run folder."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import interrupt_at, write_idx_subset
from tegaki import figures
from tegaki import spec as S
from tegaki.engines.torch_engine import TorchEngine
from tegaki.errors import TegakiError
from tegaki.run import load_run, load_weights
from tegaki.spec import Spec, load_preset
from tegaki.train import TrainConfig, ema_update, lr_at, read_checkpoint, train

TIMING = {"train_seconds", "seconds_per_epoch", "setup_seconds", "test_seconds"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny networks gain nothing from more, and lose a lot on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small(mnist):
    """2,000 training and 500 test images of the real MNIST."""
    return replace(mnist, train_images=mnist.train_images[:2000], train_labels=mnist.train_labels[:2000],
                   test_images=mnist.test_images[:500], test_labels=mnist.test_labels[:500])


def tiny_cnn() -> Spec:
    # a convolution, dropout and batchnorm: every source of randomness and state the loop must seed
    return Spec(input_shape=(1, 28, 28), name="tiny", layers=[
        S.Conv2d(4, 5, stride=2), S.BatchNorm(), S.ReLU(), S.Dropout(0.3), S.Flatten(), S.Dense(10), S.Softmax()])


def quiet(msg):
    pass


def run(spec, ds, out, **cfg):
    cfg = TrainConfig.for_spec(spec, **{"device": "cpu", "valid_size": 400, **cfg})
    return train(spec, ds, cfg, out, log=quiet)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_metrics(small, tmp_path):
    kw = dict(epochs=2, optimizer="adam", lr=3e-3, batch_size=64, seed=3)
    a = run(tiny_cnn(), small, tmp_path / "a", **kw)
    b = run(tiny_cnn(), small, tmp_path / "b", **kw)
    ma, mb = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "ab")
    assert {k: v for k, v in ma.items() if k not in TIMING} == {k: v for k, v in mb.items() if k not in TIMING}
    assert ma["test_accuracy"] > 0.7
    assert same_weights(load_weights(tmp_path / "a" / "model.safetensors"),
                        load_weights(tmp_path / "b" / "model.safetensors"))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.history]
    c = run(tiny_cnn(), small, tmp_path / "c", **{**kw, "seed": 4})
    assert c.metrics["test_loss"] != a.metrics["test_loss"]


def test_run_folder_contents(small, tmp_path):
    out = tmp_path / "run"
    spec = load_preset("ffnn")
    cfg = TrainConfig.for_spec(spec, epochs=1, device="cpu", valid_size=400, seed=5)
    res = train(spec, small, cfg, out, log=quiet, command=["tegaki", "train", "--preset", "ffnn"])
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "initial.safetensors", "metrics.json",
                                                      "model.json", "model.safetensors"]
    m = json.loads((out / "metrics.json").read_text())
    # accuracy is a fraction of the test set, and the error its complement, exactly
    assert m["test_accuracy"] == (500 - m["test_mistakes"]) / 500 and m["test_error"] == m["test_mistakes"] / 500
    assert 0.5 < m["test_accuracy"] <= 1 and m["epochs"] == 1 and m["train_seconds"] > 0
    assert m["dataset"] == "mnist" and (m["train_size"], m["valid_size"], m["test_size"]) == (1600, 400, 500)
    meta = json.loads((out / "model.json").read_text())
    assert Spec.from_dict(meta["spec"]).to_dict() == spec.to_dict()
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["preprocessing"]["normalize"] == {"mean": 0.0, "std": 1.0}  # ffnn takes x / 255
    assert meta["data"]["verified"] is True and meta["data"]["dataset"] == "mnist"
    assert all(len(f["sha256"]) == 64 for f in meta["data"]["files"].values())
    assert meta["seed"] == 5 and meta["config"]["lr"] == 0.4 and meta["config"]["batch_size"] == 50
    assert {"tegaki", "python", "numpy", "torch"} <= set(meta["versions"])
    assert meta["command"] == ["tegaki", "train", "--preset", "ffnn"]
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "train_acc", "valid_acc", "lr", "seconds"]
    assert len(rows) == 1 and float(rows[0]["valid_acc"]) == pytest.approx(res.history[0]["valid_acc"])
    # no pickle anywhere: weights are safetensors (an 8-byte header length, then JSON)
    for p in out.iterdir():
        head = p.read_bytes()[:16]
        assert not head.startswith(b"\x80"), p  # pickle's protocol marker
        if p.suffix == ".safetensors":
            assert head[8:9] == b"{"
    # the run loads back and predicts what the metrics say
    r = load_run(out)
    eng = TorchEngine(r.spec, r.weights)
    _, acc, _ = eng.evaluate(eng.prepare(small.test_images, small.test_labels, r.norm))
    assert acc == pytest.approx(m["test_accuracy"], abs=1e-6)


def test_early_stopping_restores_the_best_epoch(small, tmp_path):
    # random labels: the network memorises them, so the validation loss gets worse and stops it
    rng = np.random.default_rng(0)
    noise = replace(small, train_labels=rng.integers(0, 10, len(small.train_labels)).astype(np.int64))
    spec = load_preset("ffnn")
    res = run(spec, noise, tmp_path / "es", epochs=12, patience=2, lr=1.0)
    m = res.metrics
    losses = [r["valid_loss"] for r in res.history]
    best = int(np.argmin(losses)) + 1
    assert m["stopped_early"] and m["best_epoch"] == best and m["epochs"] == best + 2 < 12
    assert m["valid_loss"] == pytest.approx(min(losses), rel=1e-6)  # the best weights, re-measured
    # the saved weights are exactly those of a plain run stopped at the best epoch
    ref = run(spec, noise, tmp_path / "ref", epochs=best, lr=1.0)
    assert ref.metrics["valid_loss"] == pytest.approx(min(losses), rel=1e-6)
    assert same_weights(load_weights(tmp_path / "es" / "model.safetensors"),
                        load_weights(tmp_path / "ref" / "model.safetensors"))


def test_early_stopping_on_validation_accuracy(small, tmp_path):
    # --monitor accuracy (the LeNet tutorial's criterion): the kept epoch is the one with the best
    # validation accuracy (ties: the lower loss), found here from the history by hand
    res = run(load_preset("ffnn"), small, tmp_path / "acc", epochs=8, patience=3, lr=0.5, monitor="accuracy")
    h = res.history
    best = max(h, key=lambda r: (r["valid_acc"], -r["valid_loss"]))
    assert res.metrics["best_epoch"] == best["epoch"]
    assert res.metrics["valid_accuracy"] == pytest.approx(best["valid_acc"], abs=1e-6)
    stopped = res.metrics["stopped_early"]
    assert len(h) == (best["epoch"] + 3 if stopped else 8)
    assert all(r["valid_acc"] < best["valid_acc"] or r["valid_loss"] >= best["valid_loss"]
               for r in h if r["epoch"] > best["epoch"])


def test_no_validation_split(small, tmp_path):
    # --valid-size 0 (train on every training image): the history, the table and the curves show no
    # validation figures instead of repeating the training ones; early stopping follows the training loss
    lines = []
    spec = tiny_cnn()
    cfg = TrainConfig.for_spec(spec, device="cpu", valid_size=0, epochs=3, patience=1)
    res = train(spec, small, cfg, tmp_path / "all", log=lines.append)
    m, h = res.metrics, res.history
    assert m["train_size"] == 2000 and m["valid_size"] == 0 and m["valid_accuracy"] is None
    assert all(r["valid_loss"] is None and r["valid_acc"] is None for r in h)
    losses = [r["train_loss"] for r in h]
    assert m["best_epoch"] == int(np.argmin(losses)) + 1
    rows = [ln for ln in "\n".join(lines).splitlines() if ln.strip().startswith(("1 |", "2 |", "3 |"))]
    assert len(rows) == len(h) and all(ln.split("|")[2].strip() == "-" for ln in rows)
    saved = load_run(tmp_path / "all").history()
    assert [r["valid_loss"] for r in saved] == [None] * len(h)
    assert figures.save(figures.learning_curves(saved, "x"), tmp_path / "lc.png").stat().st_size > 1000  # train curves only


def test_better_follows_the_monitored_score():
    from tegaki.train import _better

    best = {"loss": 0.30, "acc": 0.95, "epoch": 4}
    assert _better("loss", 0.29, 0.90, best) and not _better("loss", 0.31, 0.99, best)
    assert _better("accuracy", 0.50, 0.96, best) and not _better("accuracy", 0.10, 0.94, best)
    assert _better("accuracy", 0.29, 0.95, best) and not _better("accuracy", 0.31, 0.95, best)
    assert _better("accuracy", 9.0, 0.5, {"loss": math.inf, "epoch": 0})  # the first epoch always counts


def test_changing_the_optimizer_without_lr_takes_its_usual_rate():
    from tegaki.train import lr_for

    lenet = load_preset("lenet").train  # SGD 0.1
    lr, note = lr_for(lenet, "adam", None)
    assert lr == 1e-3 and "using lr 0.001" in note and "0.1 for sgd" in note
    assert lr_for(lenet, "adam", 0.005) == (0.005, None)  # an explicit --lr wins
    assert lr_for(lenet, "sgd", None) == (None, None)  # same optimiser: the recipe's rate
    assert lr_for(lenet, None, None) == (None, None)
    assert lr_for(load_preset("fast").train, "adadelta", None)[0] == 1.0


def cfg_for(schedule, epochs=9, lr=0.2):
    return TrainConfig(schedule=schedule, epochs=epochs, lr=lr)


def test_schedules_against_hand_computed_values():
    c = cfg_for("constant")
    assert [lr_at(c, s, 90, s // 10) for s in (0, 45, 89)] == [0.2, 0.2, 0.2]
    # step: x0.1 every third of the run (9 epochs: 3, 3, 3; 10 epochs: 4, 4, 2)
    c = cfg_for("step")
    assert [lr_at(c, 0, 90, e) for e in range(9)] == pytest.approx([0.2] * 3 + [0.02] * 3 + [0.002] * 3)
    c = cfg_for("step", epochs=10)
    assert [lr_at(c, 0, 100, e) for e in range(10)] == pytest.approx([0.2] * 4 + [0.02] * 4 + [0.002] * 2)
    # cosine: lr/2 (1 + cos(pi t))
    c = cfg_for("cosine")
    assert lr_at(c, 0, 100, 0) == pytest.approx(0.2)
    assert lr_at(c, 25, 100, 0) == pytest.approx(0.2 * (0.5 + math.sqrt(2) / 4))
    assert lr_at(c, 50, 100, 0) == pytest.approx(0.1)
    assert lr_at(c, 100, 100, 0) == pytest.approx(0.0)
    # onecycle: from lr/25 up to lr over the first quarter, then cosine down to lr/2500
    c = cfg_for("onecycle")
    assert lr_at(c, 0, 100, 0) == pytest.approx(0.2 / 25)
    assert lr_at(c, 12.5, 100, 0) == pytest.approx(0.2 * (1 / 25 + 24 / 25 / 2))
    assert lr_at(c, 25, 100, 0) == pytest.approx(0.2)
    assert lr_at(c, 62.5, 100, 0) == pytest.approx(0.2 / 2500 + (0.2 - 0.2 / 2500) / 2)
    assert lr_at(c, 100, 100, 0) == pytest.approx(0.2 / 2500)


def test_schedule_is_what_the_loop_uses(small, tmp_path):
    res = run(load_preset("ffnn"), small, tmp_path / "s", epochs=3, schedule="step", lr=0.3)
    assert [r["lr"] for r in res.history] == pytest.approx([0.3, 0.03, 0.003])


@pytest.mark.parametrize("bad, message", [
    (dict(epochs=0), "^epochs must be at least 1"),
    (dict(lr=-1.0), "^lr must be a positive number"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(schedule="linear"), "unknown schedule 'linear'"),
    (dict(patience=0), "^patience must be at least 1"),
    (dict(monitor="f1"), "unknown monitor 'f1'; choose one of loss, accuracy"),
    (dict(lr="fast"), "^lr must be float, got .fast."),  # the caller's value, not the spec's
])
def test_bad_training_options(bad, message):
    with pytest.raises(TegakiError, match=message):
        TrainConfig.for_spec(load_preset("ffnn"), **bad)


def test_options_are_named_as_their_writer_spelled_them():
    """Python's keywords by their names, the command line's flags as flags, a spec file's key as its key."""
    with pytest.raises(TegakiError, match=r"^batch_size must be at least 1, got 0$"):
        TrainConfig.for_spec(load_preset("ffnn"), batch_size=0)
    with pytest.raises(TegakiError, match=r"^--batch-size must be at least 1, got 0$"):
        TrainConfig.for_spec(load_preset("ffnn"), cli=True, batch_size=0)
    spec = Spec.from_dict({"base": "ffnn", "name": "mine", "train": {"weight_decay": 2.0}})
    with pytest.raises(TegakiError, match=r"^spec 'mine': training option weight_decay must be a number in \[0, 1\]"):
        TrainConfig.for_spec(spec, cli=True, epochs=3)
    with pytest.raises(TegakiError, match=r"^weight_decay must be"):
        TrainConfig.for_spec(spec, epochs=3)


def test_an_optimizer_named_without_a_rate_gets_its_usual_rate():
    """A recipe that names an optimiser and no learning rate trains at that optimiser's usual rate (Adadelta at
    Adam's 0.001 reached 7% where 1.0 reached 88%), from a spec, from compile() and from the CLI's overrides."""
    import tegaki as tg
    from tegaki.train import USUAL_LR

    for opt in ("sgd", "momentum", "adam", "adadelta"):
        spec = Spec.from_dict({"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}], "train": {"optimizer": opt}})
        assert TrainConfig.for_spec(spec).lr == USUAL_LR[opt]
        bare = Spec.from_dict({"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]})
        assert TrainConfig.for_spec(bare, optimizer=opt).lr == USUAL_LR[opt]
    m = tg.Sequential([tg.Flatten(), tg.Dense(10)]).compile("adadelta")
    assert TrainConfig.for_spec(m.spec).lr == 1.0
    assert TrainConfig.for_spec(load_preset("lenet"), optimizer="adam").lr == 0.1  # a recipe's own rate stays
    with pytest.raises(TegakiError, match="^lr must be a positive number"):  # 0 is a rate, and a wrong one
        tg.Sequential([tg.Flatten(), tg.Dense(10)]).compile("sgd", lr=0)


def test_network_and_data_must_fit(small, tmp_path):
    spec = Spec(layers=[S.Flatten(), S.Dense(7), S.Softmax()])
    with pytest.raises(TegakiError, match="7 outputs but mnist has 10 classes"):
        run(spec, small, tmp_path / "x", epochs=1)
    assert not (tmp_path / "x").exists()


def test_interrupt_before_the_first_epoch_leaves_nothing(small, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 5)
    res = run(load_preset("ffnn"), small, tmp_path / "r", epochs=2)
    assert res.interrupted and not (tmp_path / "r").exists()


def test_ctrl_c_as_an_epoch_row_is_shown_finds_that_epoch_saved(small, tmp_path, monkeypatch):
    from tegaki.train import Progress

    def row(self, r):  # Ctrl-C the moment the first epoch's row appears
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "row", row)
    res = run(load_preset("ffnn"), small, tmp_path / "r", epochs=2)
    assert res.interrupted and [r["epoch"] for r in res.history] == [1]
    assert read_checkpoint(tmp_path / "r")["epoch"] == 1  # the epoch on screen is the one a resume continues from


@pytest.mark.parametrize("ema", [0.0, 0.9])  # with --ema the checkpoint carries the average too
def test_interrupt_and_resume_in_process_equals_an_uninterrupted_run(small, tmp_path, monkeypatch, ema):
    kw = dict(epochs=3, optimizer="adam", lr=2e-3, batch_size=100, seed=1, ema=ema)  # 16 steps an epoch
    ref = run(tiny_cnn(), small, tmp_path / "ref", **kw)
    interrupt_at(monkeypatch, 16 + 7)  # in the middle of epoch 2
    res = run(tiny_cnn(), small, tmp_path / "r", **kw)
    assert res.interrupted and [r["epoch"] for r in res.history] == [1]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoint.safetensors"]
    monkeypatch.undo()
    state = read_checkpoint(tmp_path / "r")
    cfg = TrainConfig(**state["config"])
    done = train(Spec.from_dict(state["spec"]), small, cfg, tmp_path / "r", log=quiet, resume=state)
    assert not done.interrupted and not (tmp_path / "r" / "checkpoint.safetensors").exists()
    assert {k: v for k, v in done.metrics.items() if k not in TIMING} == \
        {k: v for k, v in ref.metrics.items() if k not in TIMING}
    assert same_weights(load_weights(tmp_path / "r" / "model.safetensors"),
                        load_weights(tmp_path / "ref" / "model.safetensors"))


def test_ema_update_by_hand():
    e = {"w": np.array([1.0, 2.0], np.float32)}
    ema_update(e, {"w": np.array([3.0, 6.0], np.float32)}, 0.9, 0)  # step 0: d = min(0.9, 1/10) = 0.1
    np.testing.assert_allclose(e["w"], [0.1 * 1 + 0.9 * 3, 0.1 * 2 + 0.9 * 6], rtol=1e-6)
    e = {"w": np.array([1.0, 2.0], np.float32)}
    ema_update(e, {"w": np.array([3.0, 6.0], np.float32)}, 0.9, 100)  # later: d = the decay itself
    np.testing.assert_allclose(e["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 6], rtol=1e-6)


@pytest.mark.parametrize("engine", ["torch", "numpy"])  # the loop keeps the average, for either engine
def test_ema_saves_the_average_of_the_weights_the_plain_run_passes_through(small, tmp_path, engine):
    """One step an epoch and a constant rate: the first k epochs of any run are the same, so runs of 1, 2
    and 3 epochs give the weights after steps 1, 2, 3, and the --ema run must save their average."""
    kw = dict(optimizer="adam", lr=2e-3, batch_size=1600, seed=2, engine=engine)  # 1,600 training digits: one step
    run(tiny_cnn(), small, tmp_path / "r1", epochs=1, **kw)
    w = [load_weights(tmp_path / "r1" / name) for name in ("initial.safetensors", "model.safetensors")]
    for k in (2, 3):
        run(tiny_cnn(), small, tmp_path / f"r{k}", epochs=k, **kw)
        w.append(load_weights(tmp_path / f"r{k}" / "model.safetensors"))
    res = run(tiny_cnn(), small, tmp_path / "ema", epochs=3, ema=0.5, **kw)
    e = {n: v.astype(np.float64) for n, v in w[0].items()}
    for step, d in enumerate((1 / 10, 2 / 11, 3 / 12)):  # min(0.5, (1 + step) / (10 + step))
        e = {n: d * e[n] + (1 - d) * w[step + 1][n] for n in e}
    saved = load_weights(tmp_path / "ema" / "model.safetensors")
    assert all(np.allclose(saved[n], e[n], atol=1e-6) for n in e)
    assert not np.allclose(saved["conv1.weight"], w[3]["conv1.weight"], atol=1e-4)  # not the last weights
    # the average is what each epoch validates: the last row's accuracy is the saved model's
    assert res.history[-1]["valid_acc"] == pytest.approx(res.metrics["valid_accuracy"], abs=1e-9)


def test_ctrl_c_in_memory_with_ema_keeps_the_average(small, monkeypatch):
    """Ctrl-C in the first step of epoch 2 (one step an epoch): an in-memory model keeps the average after
    step 1, the weights a finished 1-epoch --ema run ends with, not the live weights of a plain run."""
    kw = dict(optimizer="adam", lr=2e-3, batch_size=1600, seed=2, ema=0.5)
    done = run(tiny_cnn(), small, None, epochs=1, **kw).run.weights
    live = run(tiny_cnn(), small, None, epochs=1, **{**kw, "ema": 0.0}).run.weights
    interrupt_at(monkeypatch, 2)
    res = run(tiny_cnn(), small, None, epochs=3, **kw)
    assert res.interrupted and len(res.history) == 1
    assert same_weights(res.run.weights, done)
    assert not np.allclose(res.run.weights["conv1.weight"], live["conv1.weight"], atol=1e-4)


def test_ema_is_checked_and_reaches_the_cli(cli, tmp_path):
    for bad in ("1", "-0.1", "nan"):
        r = cli("train", "--preset", "ffnn", "--ema", bad, "--out", tmp_path / "r")
        assert r.code != 0 and "--ema must be a number in [0, 1)" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    spec = Spec.from_dict({"base": "ffnn", "train": {"ema": 0.99}})
    assert TrainConfig.for_spec(spec).ema == 0.99 and TrainConfig.for_spec(spec, ema=0.0).ema == 0.0


# the real thing: `python -m tegaki train` in a subprocess, stopped with SIGINT ---------------------
@pytest.fixture(scope="module")
def idx_subset(small, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("subset")
    write_idx_subset(d, small)
    return f"idx:{d}"


def tegaki(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tegaki", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_ctrl_c_then_resume_on_the_command_line(idx_subset, tmp_path):
    common = ["train", "--preset", "ffnn", "--dataset", idx_subset, "--batch-size", "10", "--valid-size", "400"]
    out = tmp_path / "run"
    p = tegaki(*common, "--epochs", "30", "--out", out)
    t0 = time.monotonic()
    while not (out / "checkpoint.safetensors").exists():
        assert p.poll() is None and time.monotonic() - t0 < 120, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert f"continue with: tegaki train --resume {out}" in stdout
    assert stderr.strip().splitlines()[-1] == "tegaki: interrupted"
    assert sorted(x.name for x in out.iterdir()) == ["checkpoint.safetensors"]
    stopped_at = read_checkpoint(out)["epoch"]
    assert 1 <= stopped_at < 3
    # resume, finishing at epoch 3, and an uninterrupted 3-epoch run with the same seed
    r = tegaki("train", "--resume", out, "--epochs", "3")
    ref = tegaki(*common, "--epochs", "3", "--out", tmp_path / "ref")
    (o1, e1), (_, e2) = r.communicate(timeout=300), ref.communicate(timeout=300)
    assert r.returncode == 0 and ref.returncode == 0, e1 + e2
    assert f"resuming {out} after epoch {stopped_at}" in o1
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "ref"))
    assert {k: v for k, v in m1.items() if k not in TIMING} == {k: v for k, v in m2.items() if k not in TIMING}
    assert same_weights(load_weights(out / "model.safetensors"), load_weights(tmp_path / "ref" / "model.safetensors"))
    meta = json.loads((out / "model.json").read_text())
    assert meta["command"][:3] == ["tegaki", "train", "--preset"]  # the original command, and how it was resumed
    assert meta["resumed_with"] == ["tegaki", "train", "--resume", str(out), "--epochs", "3"]


def test_writes_are_atomic(tmp_path, monkeypatch):
    from tegaki import fileio

    target = tmp_path / "metrics.json"
    fileio.write_json(target, {"v": 1})

    def broken_replace(src, dst):
        raise KeyboardInterrupt  # Ctrl-C at the worst moment: the new file is complete but not yet renamed

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # and no temporary file left


def test_progress_bar_on_a_terminal(small, tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar, lines = Tty(), []
    spec = load_preset("ffnn")
    cfg = TrainConfig.for_spec(spec, epochs=1, device="cpu", valid_size=400)
    train(spec, small, cfg, tmp_path / "r", log=lines.append, bar_stream=bar)
    assert "epoch 1/1 [" in bar.getvalue() and "32/32" in bar.getvalue()  # 1,600 / 50 steps, the last drawn
    assert any(line.split("|")[0].strip() == "1" for line in lines)  # the table row went to the log
    quiet_bar = io.StringIO()
    train(spec, small, cfg, tmp_path / "q", log=lines.append, bar_stream=quiet_bar)
    assert quiet_bar.getvalue() == ""  # no bar when the stream is not a terminal


def _rewrite_state(cp, change) -> None:
    """Rewrite a checkpoint's loop state (the JSON in its safetensors metadata) with `change` applied."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(cp), "np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
        state = json.loads(f.metadata()["state"])
    change(state)
    save_file(arrays, str(cp), metadata={"state": json.dumps(state)})


@pytest.mark.parametrize("change, words", [
    (lambda s: s.update(history="x"), "corrupt checkpoint (ValueError: history is not a list)"),
    (lambda s: s.update(epoch=-1), "epoch does not match the history"),
    (lambda s: s.update(epoch="1"), "epoch does not match the history"),
    (lambda s: s.update(best=None), "best is not a dict"),
    (lambda s: s.update(config=[1]), "config is not a dict"),
    (lambda s: s.pop("optimizer"), "optimizer is not a dict"),
    (lambda s: s["optimizer"].update(kind="x", lr="fast", param_groups=3, step=[]), "corrupt optimiser state"),
])
def test_a_damaged_checkpoint_state_is_one_line_and_the_checkpoint_stays(small, tmp_path, monkeypatch, change,
                                                                          words):
    kw = dict(epochs=2, optimizer="adam", lr=2e-3, batch_size=100, seed=1)
    interrupt_at(monkeypatch, 16 + 3)  # in epoch 2: the checkpoint of epoch 1 stays
    assert run(tiny_cnn(), small, tmp_path / "r", **kw).interrupted
    monkeypatch.undo()
    cp = tmp_path / "r" / "checkpoint.safetensors"
    _rewrite_state(cp, change)
    with pytest.raises(TegakiError) as e:
        state = read_checkpoint(tmp_path / "r")
        train(Spec.from_dict(state["spec"]), small, TrainConfig(**state["config"]), tmp_path / "r", log=quiet,
              resume=state)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert cp.is_file()
