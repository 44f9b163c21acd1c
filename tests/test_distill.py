"""Distillation: learning teachers' softened probabilities beside the labels (--teacher, TrainConfig.teachers).

The loss (Hinton et al.'s, written out in numpy_layers.distill_loss) is checked against autograd and finite
differences, the two engines take the same distilled steps, the targets are the teachers' averaged softened
probabilities, a teacher that saw the validation images is named, a resume refuses a changed teacher, and bad
teachers or options are one line each."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import interrupt_at, write_idx_subset

from tegaki.data.dataset import validation_split
from tegaki.engines.numpy_engine import NumpyEngine
from tegaki.engines.numpy_layers import cross_entropy, distill_loss
from tegaki.engines.torch_engine import TorchEngine
from tegaki.errors import TegakiError
from tegaki.numerics import softmax
from tegaki.predict import Predictor
from tegaki.spec import load_preset
from tegaki.export import weights_digest
from tegaki.run import load_weights, save_weights
from tegaki.train import TrainConfig, read_checkpoint, teacher_targets, train

NORM = {"mean": 0.13, "std": 0.31}


def dirichlet_targets(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(k, 0.5), size=n)


def test_cross_entropy_against_a_distribution_matches_autograd():
    rng = np.random.default_rng(1)
    z, q = rng.normal(0, 3, size=(6, 10)), dirichlet_targets(6, 10, 2)
    loss, dz = cross_entropy(z, np.zeros(6, np.int64), 0.3, targets=q)  # labels and smoothing are unused
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    lt = F.cross_entropy(zt, torch.from_numpy(q))
    lt.backward()
    assert abs(loss - lt.item()) <= 1e-12 * abs(lt.item())
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=0, atol=1e-15)
    eps, i, j = 1e-6, 4, 7  # one entry by central differences
    zp, zm = z.copy(), z.copy()
    zp[i, j] += eps
    zm[i, j] -= eps
    numeric = (cross_entropy(zp, None, targets=q)[0] - cross_entropy(zm, None, targets=q)[0]) / (2 * eps)
    assert abs(numeric - dz[i, j]) <= 1e-8


def test_one_hot_targets_are_the_labels():
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(5, 4)), rng.integers(0, 4, 5)
    q = np.full((5, 4), 0.1 / 4)
    q[np.arange(5), y] += 0.9
    plain, soft = cross_entropy(z, y, 0.1), cross_entropy(z, y, targets=q)
    assert plain[0] == pytest.approx(soft[0], rel=1e-12)
    np.testing.assert_allclose(plain[1], soft[1], atol=1e-15)


@pytest.mark.parametrize("weight, temperature", [(0.7, 3.0), (1.0, 0.5)])
def test_the_distillation_loss_matches_autograd(weight, temperature):
    rng = np.random.default_rng(4)
    z, y, q = rng.normal(0, 2, size=(5, 10)), rng.integers(0, 10, 5), dirichlet_targets(5, 10, 6)
    loss, dz = distill_loss(z, y, 0.1, q, weight, temperature)
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    hard = F.cross_entropy(zt, torch.from_numpy(y), label_smoothing=0.1)
    qt = torch.from_numpy(q)
    soft = (qt * (qt.log() - F.log_softmax(zt / temperature, dim=1))).sum(1).mean()  # KL(teachers || network)
    lt = (1 - weight) * hard + weight * temperature ** 2 * soft  # Hinton et al. 2015, written independently
    lt.backward()
    assert abs(loss - lt.item()) <= 1e-12 * abs(lt.item())
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=0, atol=1e-14)
    eps = 1e-6
    zp, zm = z.copy(), z.copy()
    zp[2, 3] += eps
    zm[2, 3] -= eps
    numeric = (distill_loss(zp, y, 0.1, q, weight, temperature)[0] - distill_loss(zm, y, 0.1, q, weight, temperature)[0])
    assert abs(numeric / (2 * eps) - dz[2, 3]) <= 1e-8


def test_at_temperature_1_it_learns_the_mixed_target():
    """Hand-derived: at T = 1 the gradient is that of the cross-entropy against 0.4 label + 0.6 teachers, and the
    loss is that cross-entropy less 0.6 x the teachers' entropy (KL, not cross-entropy, for the soft part)."""
    rng = np.random.default_rng(8)
    z, y, q = rng.normal(size=(4, 10)), rng.integers(0, 10, 4), dirichlet_targets(4, 10, 9)
    mixed = np.full((4, 10), 0.01)
    mixed[np.arange(4), y] += 0.9
    mixed = 0.4 * mixed + 0.6 * q
    loss, dz = distill_loss(z, y, 0.1, q, 0.6, 1.0)
    ref_loss, ref_dz = cross_entropy(z, y, targets=mixed)
    entropy = -(q * np.log(q)).sum() / 4
    assert loss == pytest.approx(ref_loss - 0.6 * entropy, rel=1e-12)
    np.testing.assert_allclose(dz, ref_dz, atol=1e-15)
    assert distill_loss(np.log(q), y, 0.0, q, 1.0, 1.0)[0] == pytest.approx(0.0, abs=1e-12)  # matched: no loss


def test_both_engines_take_the_same_distilled_steps():
    spec = load_preset("lenet")
    w = spec.init_weights(4)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8), rng.integers(0, 10, 24)
    q = dirichlet_targets(24, 10, 5).astype(np.float32)
    n, t, plain = NumpyEngine(spec, w), TorchEngine(spec, w), TorchEngine(spec, w)
    for e in (n, t, plain):
        e.configure("momentum", 0.05, label_smoothing=0.1, distill_weight=0.7, distill_temperature=2.0)
    nd, td, pd = n.prepare(images, labels, NORM, q), t.prepare(images, labels, NORM, q), plain.prepare(images, labels, NORM)
    assert len(nd) == len(td) == 3 and len(pd) == 2
    for step in range(3):
        idx = np.arange(8 * step, 8 * step + 8)
        n.train_step(*n.take(nd, idx))
        t.train_step(*t.take(td, idx))
        plain.train_step(*plain.take(pd, idx))
    wn, wt, wp = n.get_weights(), t.get_weights(), plain.get_weights()
    for k in wt:
        np.testing.assert_allclose(wn[k], wt[k], rtol=0, atol=1e-5, err_msg=k)
    assert max(float(np.abs(wt[k] - wp[k]).max()) for k in wt) > 1e-3, "the targets changed nothing"
    assert abs(n.read_stats()[0] - t.read_stats()[0]) <= 1e-5
    assert n.read_stats()[1] == t.read_stats()[1]  # accuracy still counts the labels


@pytest.fixture(scope="module")
def teacher(lenet_run):
    return lenet_run  # trained on mnist_small with valid_size 4000, split seed 0


@pytest.fixture(scope="module")
def second_teacher(mnist_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("teachers") / "ffnn"
    spec = load_preset("ffnn")
    train(spec, mnist_small, TrainConfig.for_spec(spec, epochs=1, valid_size=4000, device="cpu"), out, log=lambda m: None)
    return out


def test_targets_are_the_teachers_softened_probabilities(teacher, second_teacher, mnist_small):
    tr, va = np.arange(1, 601, 2), np.arange(0)
    cfg = TrainConfig(teachers=[str(teacher), second_teacher], distill_weight=0.3, distill_temperature=2.0)
    lines = []
    got, records = teacher_targets(cfg, mnist_small, tr, va, lines.append)
    images = mnist_small.train_images[tr]
    p1 = softmax(Predictor.load(teacher).logits(images).astype(np.float64) / 2.0)
    p2 = softmax(Predictor.load(second_teacher).logits(images).astype(np.float64) / 2.0)
    assert np.abs(p1 - p2).max() > 0.1  # two teachers that differ: an average that used one would fail below
    np.testing.assert_allclose(got, (p1 + p2) / 2, atol=1e-6)
    agree = (((p1 + p2) / 2).argmax(1) == mnist_small.train_labels[tr]).mean()
    assert lines == [f"distillation: 2 teachers, weight 0.3, temperature 2; their average agrees with {agree:.2%} "
                     "of the training labels (the training loss is now the distillation loss)"]
    assert records == [{"run": str(t.resolve()), "sha256": weights_digest(load_weights(t / "model.safetensors"))}
                       for t in (teacher, second_teacher)]
    assert teacher_targets(TrainConfig(), mnist_small, tr, va) == (None, [])
    quiet = []  # weight 0: nothing to learn from them, so they are not asked
    assert teacher_targets(TrainConfig(teachers=[teacher], distill_weight=0.0), mnist_small, tr, va, quiet.append) \
        == (None, [])
    assert quiet == ["distillation weight 0: the teachers are not asked (the labels alone are learnt)"]


def test_a_teacher_that_saw_the_validation_images_is_named(teacher, mnist_small):
    y = mnist_small.train_labels
    tr0, va0 = validation_split(y, 4000, 0)
    tr1, va1 = validation_split(y, 4000, 1)
    cfg = TrainConfig(teachers=[str(teacher)])
    same, other = [], []
    teacher_targets(cfg, mnist_small, tr0[:50], va0, same.append)
    teacher_targets(cfg, mnist_small, tr1[:50], va1, other.append)
    assert not any("validation" in s for s in same)
    seen = len(va1) - len(np.intersect1d(va1, va0))
    assert 0 < seen < len(va1)
    assert f"was trained on {seen:,} of the 4,000 validation images" in other[0]
    assert teacher_targets(cfg, mnist_small, tr1[:50], va1, other.append)[1][0]["validation_images_seen"] == seen
    arrays = replace(mnist_small, provenance={"dataset": "arrays"})  # from Python arrays: which images is unknown
    silent = []
    teacher_targets(cfg, arrays, tr1[:50], va1, silent.append)
    assert not any("validation" in s for s in silent)
    fewer = replace(mnist_small, train_images=mnist_small.train_images[:10000], train_labels=y[:10000])
    _, va_fewer = validation_split(fewer.train_labels, 2000, 1)
    elsewhere = []  # the teacher split 20,000 digits: which of these 10,000 it saw is not known from its split
    teacher_targets(cfg, fewer, np.arange(20), va_fewer, elsewhere.append)
    assert not any("validation" in s for s in elsewhere)


def test_distilled_training_end_to_end_on_the_command_line(cli, teacher, tmp_path):
    out = tmp_path / "student"
    r = cli("train", "--preset", "ffnn", "--epochs", "1", "--teacher", teacher, "--distill-weight", "1",
            "--valid-size", "5000", "--out", out)
    assert r.code == 0, r.err
    assert "distillation: 1 teacher, weight 1, temperature 1" in r.out
    assert "was trained on" not in r.out  # the teacher's data were the first 20,000 digits: its split means nothing here
    config = json.loads((out / "model.json").read_text())["config"]
    assert config["teachers"] == [str(teacher.resolve())] and config["distill_weight"] == 1.0
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.85
    meta = json.loads((out / "model.json").read_text())
    assert meta["teachers"][0]["run"] == str(teacher.resolve()) and "validation_images_seen" not in meta["teachers"][0]
    meta["teachers"][0]["validation_images_seen"] = 7  # as a teacher that had seen some would be recorded
    (out / "model.json").write_text(json.dumps(meta))
    r = cli("report", out, "--tsne-sample", "10", "--out", tmp_path / "r.html")
    assert r.code == 0, r.err
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert (f"<td>distilled from</td><td>{teacher.resolve()} (weight 1.0, temperature 1.0); "
            f"{teacher.resolve()} trained on 7 of the validation images, so the validation figures are optimistic</td>"
            in page)


@pytest.mark.parametrize("args, words", [
    (["--teacher", "no/such/run"], "no/such/run"),
    (["--teacher", "TEACHER", "--distill-weight", "1.5"], "--distill-weight must be a number in [0, 1], got 1.5"),
    (["--teacher", "TEACHER", "--distill-temperature", "0"], "--distill-temperature must be a number in [0.01, 100]"),
    (["--distill-weight", "0.8"], "--distill-weight shapes distillation, which needs teachers; give them with --teacher"),
    (["--teacher", "TEACHER", "--teacher", "TEACHER"], "twice; give each teacher once"),
    (["--teacher", ""], "--teacher got an empty name"),
    (["--teacher", "ENSEMBLE"], "an ensemble's folder is not a run: give its members"),
])
def test_bad_teachers_and_options_are_one_line(cli, teacher, tmp_path, args, words):
    (tmp_path / "ens" / "member-1").mkdir(parents=True)
    args = [str(teacher) if a == "TEACHER" else str(tmp_path / "ens") if a == "ENSEMBLE" else a for a in args]
    r = cli("train", "--preset", "ffnn", "--epochs", "1", *args, "--out", tmp_path / "x")
    assert r.code not in (0, None) and words in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (tmp_path / "x").exists()


def test_teachers_in_python(teacher, mnist_small):
    assert TrainConfig(teachers=teacher).teachers == [str(teacher.resolve())]  # one run folder, as a path
    assert TrainConfig(teachers="bundled").teachers == ["bundled"]
    for bad in ([], [3], 3):
        with pytest.raises(TegakiError, match="teachers must be a run folder or a list of them"):
            TrainConfig(teachers=bad)
    with pytest.raises(TegakiError, match="teachers got an empty name"):
        TrainConfig(teachers=[""])
    with pytest.raises(TegakiError, match="distill_weight shapes distillation, which needs teachers; give them with "
                                          "teachers="):
        TrainConfig.for_spec(load_preset("ffnn"), distill_weight=0.5)
    fashion = replace(mnist_small, classes=[f"c{i}" for i in range(10)], name="other")
    with pytest.raises(TegakiError, match=r"tells apart 10 classes \(0, 1, 2, 3 ...\), other has 10 classes \(c0, c1, c2, c3 ...\); give teachers "):
        teacher_targets(TrainConfig(teachers=[teacher]), fashion, np.arange(10), np.arange(0))


def test_a_resume_refuses_a_teacher_whose_weights_changed(teacher, mnist_small, tmp_path, monkeypatch):
    import shutil

    from tegaki.spec import Spec

    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    data = replace(mnist_small, train_images=mnist_small.train_images[:1200], train_labels=mnist_small.train_labels[:1200],
                   test_images=mnist_small.test_images[:200], test_labels=mnist_small.test_labels[:200])
    spec = load_preset("ffnn")
    cfg = TrainConfig(epochs=2, batch_size=100, valid_size=200, teachers=[own], distill_weight=0.6,
                      distill_temperature=2.0, device="cpu")
    ref = train(spec, data, cfg, tmp_path / "ref", log=lambda m: None)
    interrupt_at(monkeypatch, 14)  # Ctrl-C in the second epoch (10 steps an epoch)
    assert train(spec, data, cfg, tmp_path / "r", log=lambda m: None).interrupted
    monkeypatch.undo()
    state = read_checkpoint(tmp_path / "r")
    assert state["teachers"] == json.loads((tmp_path / "ref" / "model.json").read_text())["teachers"]
    good = load_weights(own / "model.safetensors")
    changed = {k: v + (1e-3 if k.endswith("weight") else 0) for k, v in good.items()}
    save_weights(own / "model.safetensors", changed)
    with pytest.raises(TegakiError, match="is not the run this training started with"):
        train(Spec.from_dict(state["spec"]), data, TrainConfig(**state["config"]), tmp_path / "r", log=lambda m: None,
              resume=state)
    save_weights(own / "model.safetensors", good)
    done = train(Spec.from_dict(state["spec"]), data, TrainConfig(**state["config"]), tmp_path / "r",
                 log=lambda m: None, resume=read_checkpoint(tmp_path / "r"))
    a, b = load_weights(tmp_path / "r" / "model.safetensors"), load_weights(tmp_path / "ref" / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a) and done.metrics["test_accuracy"] == ref.metrics["test_accuracy"]


def test_sigterm_while_the_teachers_answer_is_one_line(cli, teacher, tmp_path, monkeypatch):
    def stopped(*args, **kwargs):  # a real SIGTERM while the first teacher loads: the command's own handler
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("the SIGTERM handler did not stop the command")

    monkeypatch.setattr(Predictor, "load", stopped)
    r = cli("train", "--preset", "ffnn", "--epochs", "1", "--teacher", teacher, "--out", tmp_path / "x")
    assert r.code == 143 and r.err.strip() == "tegaki: stopped by SIGTERM"
    assert not (tmp_path / "x").exists()


def test_a_resume_finds_a_moved_teacher_by_its_weights(cli, teacher, mnist_small, tmp_path, monkeypatch):
    import shutil

    data = write_idx_subset(tmp_path / "data", mnist_small, 1200, 200)
    own = tmp_path / "teacher"
    shutil.copytree(teacher, own)
    common = ["--preset", "ffnn", "--epochs", "2", "--batch-size", "100", "--valid-size", "200", "--dataset",
              f"idx:{data}", "--distill-weight", "0.6", "--distill-temperature", "2"]
    assert cli("train", *common, "--teacher", own, "--out", tmp_path / "ref").code == 0
    interrupt_at(monkeypatch, 14)  # Ctrl-C in the second epoch (10 steps an epoch)
    assert cli("train", *common, "--teacher", own, "--out", tmp_path / "r").code == 130
    monkeypatch.undo()
    own.rename(tmp_path / "moved")
    r = cli("train", "--resume", tmp_path / "r")
    assert r.code == 2 and "if it moved, resume with --teacher NEW_FOLDER" in r.err
    r = cli("train", "--resume", tmp_path / "r", "--teacher", tmp_path / "moved", "--teacher", teacher)
    assert r.code == 2 and "this run learnt from 1 teacher(s); give --teacher once for each" in r.err
    r = cli("train", "--resume", tmp_path / "r", "--teacher", teacher.parent / "no-such")
    assert r.code == 2 and "no such run folder" in r.err
    r = cli("train", "--resume", tmp_path / "r", "--teacher", tmp_path / "moved")
    assert r.code == 0, r.err
    a, b = load_weights(tmp_path / "r" / "model.safetensors"), load_weights(tmp_path / "ref" / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the same run as one never interrupted
    config = json.loads((tmp_path / "r" / "model.json").read_text())["config"]
    assert config["teachers"] == [str((tmp_path / "moved").resolve())]


def test_a_teacher_that_held_out_another_test_set_of_a_folder_is_refused(cli, mnist_small, tmp_path):
    from PIL import Image

    root = tmp_path / "digits"
    counts = {}  # 6 real digits of each class, as PNG files in class folders
    for img, label in zip(mnist_small.train_images, mnist_small.train_labels):
        if counts.get(int(label), 0) < 6:
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / str(label) / f"{counts.get(int(label), 0)}.png")
            counts[int(label)] = counts.get(int(label), 0) + 1
    base = ["--preset", "ffnn", "--epochs", "1", "--dataset", f"folder:{root}", "--valid-size", "0"]
    assert cli("train", *base, "--seed", "0", "--out", tmp_path / "t").code == 0
    r = cli("train", *base, "--seed", "1", "--teacher", tmp_path / "t", "--out", tmp_path / "s")
    assert r.code == 2 and "held out another test set" in r.err and "train with --seed 0" in r.err, r.err
    assert not (tmp_path / "s").exists()
    assert cli("train", *base, "--seed", "0", "--teacher", tmp_path / "t", "--out", tmp_path / "s").code == 0


def test_the_teachers_answer_once_for_the_members_of_an_ensemble(teacher, mnist_small, monkeypatch):
    calls = []
    original = Predictor.logits

    def counted(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(Predictor, "logits", counted)
    cfg = TrainConfig(teachers=[teacher], distill_temperature=3.0)
    first, _ = teacher_targets(cfg, mnist_small, np.arange(100, 400), np.arange(0), lambda m: None)
    again, _ = teacher_targets(cfg, mnist_small, np.arange(100, 400), np.arange(0), lambda m: None)
    assert calls == [300] and np.array_equal(first, again)  # the same images: asked once
    other, _ = teacher_targets(cfg, mnist_small, np.arange(99, 399), np.arange(0), lambda m: None)
    assert calls == [300, 300] and not np.array_equal(first, other)  # other images: asked again
    teacher_targets(replace(cfg, distill_temperature=2.0), mnist_small, np.arange(99, 399), np.arange(0), lambda m: None)
    assert calls == [300, 300, 300]  # another temperature: other answers
