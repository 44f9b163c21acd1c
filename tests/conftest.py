"""Shared fixtures: the real MNIST (when present), a small trained run, an in-process CLI."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tegaki.cli import main
from tegaki.data.sources import load_dataset
from tegaki.spec import load_preset
from tegaki.train import TrainConfig, train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_root() -> Path:
    # absolute: the README's command gives a relative TEGAKI_DATA_DIR, and some tests change directory
    return Path(os.environ.get("TEGAKI_DATA_DIR") or SHARED_DATA).resolve()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    d = data_root() / "mnist"
    if not d.is_dir():
        pytest.skip(f"real MNIST not found at {d} (set TEGAKI_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The full, checksum-verified MNIST (60k train, 10k test)."""
    return load_dataset("mnist", data_dir=mnist_dir)


@pytest.fixture(scope="session")
def mnist_small(mnist):
    """20,000 training and 2,000 test images of the real MNIST (first ones of each file)."""
    return replace(mnist, train_images=mnist.train_images[:20000], train_labels=mnist.train_labels[:20000],
                   test_images=mnist.test_images[:2000], test_labels=mnist.test_labels[:2000])


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, mnist_small) -> Path:
    """A LeNet trained for one epoch with Adam on 16k real MNIST digits (about 96-98% accurate)."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    spec = load_preset("lenet")
    cfg = TrainConfig.for_spec(spec, epochs=1, optimizer="adam", lr=1e-3, batch_size=128, patience=None,
                               valid_size=4000, device="cpu", seed=0)
    train(spec, mnist_small, cfg, out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module's tests (small models train faster so, and timings vary less)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_python_blocks(path: Path) -> dict:
    """Run a Markdown file's ```python blocks in order in one namespace, as a reader would (a warning
    that the input looks unlike MNIST is an error here: the docs use MNIST itself)."""
    import re
    import warnings

    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    ns: dict = {"_blocks": len(blocks)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        for code in blocks:
            exec(compile(code, str(path), "exec"), ns)
    return ns


class CLIResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `tegaki ARGS...` in-process; returns .code, .out, .err."""
    import torch

    monkeypatch.setenv("TEGAKI_DATA_DIR", str(data_root()))
    # in-process commands keep the test's thread count (the measured default is tested on its own)
    monkeypatch.setenv("TEGAKI_THREADS", str(torch.get_num_threads()))

    def run(*args: str) -> CLIResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            code = e.code
        cap = capsys.readouterr()
        return CLIResult(code, cap.out, cap.err)

    return run


def interrupt_at(monkeypatch, calls: int) -> None:
    """Make the torch engine's `calls`-th training step raise KeyboardInterrupt, as Ctrl-C would."""
    from tegaki.engines.torch_engine import TorchEngine

    original = TorchEngine.train_step
    count = {"n": 0}

    def step(self, *args):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(TorchEngine, "train_step", step)


def write_idx_subset(d: Path, ds, n_train: int | None = None, n_test: int | None = None, suffix: str = "") -> Path:
    """The first n_train training and n_test test images of `ds` (all by default) as the four IDX
    files of an `idx:` folder (`suffix=".gz"` compresses them)."""
    from tegaki.data.idx import write_idx

    d.mkdir(parents=True, exist_ok=True)
    for kind, images, labels, n in (("train", ds.train_images, ds.train_labels, n_train),
                                    ("t10k", ds.test_images, ds.test_labels, n_test)):
        write_idx(d / f"{kind}-images-idx3-ubyte{suffix}", images[:n])
        write_idx(d / f"{kind}-labels-idx1-ubyte{suffix}", labels[:n].astype(np.uint8))
    return d


def digits_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 28x28 uint8 images whose class is a bright bar's position (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 255
    return x, y.astype(np.int64)
