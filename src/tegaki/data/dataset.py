"""The Dataset record every source returns, its checks, and seeded splits.

A dataset is plain arrays (uint8 images N x H x W, int64 labels) plus its class names and its
provenance (where the files came from and their checksums). Nothing here knows where the arrays
came from or about models: `sources.py` finds and reads them, `fallbacks.py` makes the offline
ones, and both hand them to `validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tegaki.errors import TegakiError


class DataNotFound(TegakiError):
    """The dataset is nowhere on this machine and could not be downloaded."""


DIGITS = tuple(str(i) for i in range(10))

#: the most classes a labels file may use (labels 0..MAX_CLASSES-1); MNIST and its relatives use 10
MAX_CLASSES = 1000


@dataclass
class Dataset:
    name: str
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, 28, 28) uint8
    test_labels: np.ndarray  # (M,) int64
    classes: list[str]
    provenance: dict = field(default_factory=dict)


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_labels(y: np.ndarray, where: str) -> np.ndarray:
    """`y` as int64 labels in 0..MAX_CLASSES-1, or a TegakiError naming `where` and the first bad value.

    Integer dtypes are taken as they are; float labels only when every one is finite and whole
    (a label of 0.7 is not silently the class 0).
    """
    y = np.asarray(y)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if not bad.any():
            bad = y != np.round(y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TegakiError(f"{where}: label {_show(float(y[i]))} at index {i} is not a whole number; "
                              "labels must be integers 0, 1, 2 ...: the file is corrupt or not a labels file")
    elif y.dtype.kind not in "iu":
        raise TegakiError(f"{where}: labels of type {y.dtype} (expected integers); the file is not a labels file")
    if y.size:
        out = (y < 0) | (y >= MAX_CLASSES)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise TegakiError(f"{where}: label {_show(y[i].item())} at index {i} is outside 0..{MAX_CLASSES - 1}; "
                              "the file is corrupt or not a labels file")
    return y.astype(np.int64, copy=False)


def validate(ds: Dataset, where: str) -> Dataset:
    """Check shapes, dtypes and label range; return `ds` with labels as int64."""
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if x.ndim != 3 or x.dtype != np.uint8:
            raise TegakiError(f"{where}: {split} images must be uint8 N x H x W, got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise TegakiError(f"{where}: {len(x)} {split} images but {y.shape} labels; the files do not belong together")
        y = check_labels(y, f"{where}: {split} labels")
        if len(y) and (y.min() < 0 or y.max() >= len(ds.classes)):
            raise TegakiError(f"{where}: {split} labels out of range ({int(y.min())}..{int(y.max())}, "
                              f"expected 0..{len(ds.classes) - 1})")
        setattr(ds, f"{split}_labels", y)
    return ds


def validation_split(labels: np.ndarray, valid_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, valid): a stratified split of `valid_size` items, at most a fifth of the set."""
    return stratified_split(labels, min(valid_size, len(labels) // 5), seed)


def stratified_split(labels: np.ndarray, n_valid: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, valid) with `n_valid` items taken from each class in proportion, seeded."""
    n = len(labels)
    if n_valid <= 0:
        return np.arange(n), np.arange(0)
    if n_valid >= n:
        raise TegakiError(f"validation split of {n_valid} leaves nothing to train on ({n} training items); "
                          "ask for a smaller validation split")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * n_valid / n).astype(int)
    # hand out the remainder to the classes with the largest fractional parts
    rest = n_valid - quota.sum()
    frac = counts * n_valid / n - quota
    quota[np.argsort(-frac, kind="stable")[:rest]] += 1
    valid = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(labels == c)
        valid.append(rng.choice(idx, size=q, replace=False))
    valid = np.sort(np.concatenate(valid))
    mask = np.ones(n, bool)
    mask[valid] = False
    return np.flatnonzero(mask), valid
