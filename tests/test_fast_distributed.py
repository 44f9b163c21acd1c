"""Training in 2 processes (DistributedDataParallel, gloo) matches one process; only rank 0 writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_idx_subset
from tegaki.distributed import Dist, strip_nproc

SPEC = """
input = [1, 28, 28]
[train]
optimizer = "momentum"
lr = 0.1
batch_size = 100
epochs = 2
schedule = "onecycle"
[[layers]]
type = "conv2d"
filters = 8
kernel = 5
[[layers]]
type = "maxpool"
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 10
"""


@pytest.fixture(scope="module")
def subset(tmp_path_factory, mnist):
    """4,000 training and 1,000 test digits of the real MNIST as an idx: folder."""
    d = tmp_path_factory.mktemp("subset")
    write_idx_subset(d, mnist, 4000, 1000)
    (d / "small.toml").write_text(SPEC)
    return d


def test_shards_partition_each_batch():
    idx = np.arange(10, 35)
    parts = [Dist(rank=r, world=3).shard(idx) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == idx.tolist()
    assert [len(p) for p in parts] == [9, 8, 8]
    assert Dist().shard(idx) is idx
    assert strip_nproc(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["train", "--epochs", "1"]


def test_two_processes_match_one(subset, cli, tmp_path):
    common = ["train", "--spec", subset / "small.toml", "--dataset", f"idx:{subset}", "--valid-size", "1000",
              "--device", "cpu"]
    one = cli(*common, "--out", tmp_path / "one")
    assert one.code == 0, one.err
    two = cli(*common, "--out", tmp_path / "two", "--nproc", "2")
    assert two.code == 0, two.err
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # the same global batches and averaged gradients: the same model up to float summation order
    # and per-rank batch-norm statistics
    assert m1["test_accuracy"] > 0.85
    assert abs(m1["test_accuracy"] - m2["test_accuracy"]) <= 0.01, (m1["test_accuracy"], m2["test_accuracy"])
    assert abs(m1["valid_accuracy"] - m2["valid_accuracy"]) <= 0.01
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no other run folder
    meta = json.loads((tmp_path / "two" / "model.json").read_text())
    assert "--nproc" in meta["command"]


def test_nproc_errors(cli, subset, tmp_path):
    r = cli("train", "--spec", subset / "small.toml", "--dataset", f"idx:{subset}", "--nproc", "0",
            "--out", tmp_path / "r")
    assert r.code == 2 and "--nproc" in r.err
    assert not (tmp_path / "r").exists()
