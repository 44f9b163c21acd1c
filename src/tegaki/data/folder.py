"""`folder:PATH` datasets: the user's own images, one sub-folder per class, made MNIST-like.

    PATH/0/*.png  PATH/1/*.png ... PATH/9/*.png          (a seeded 20% is the test set;
                                                           for evaluation, all of it)
    PATH/train/0/... and PATH/test/0/...                 (explicit splits)

Class names are the sub-folder names; when they are all digits they map to labels 0..9 so the
images can be scored by a model trained on MNIST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tegaki.data.preprocess import to_mnist
from tegaki.data.dataset import DIGITS, Dataset, stratified_split
from tegaki.errors import TegakiError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _read_classes(root: Path, classes: list[str] | None) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        names = [p.name for p in subdirs]
        classes = list(DIGITS) if names and all(n in DIGITS for n in names) else names
    if not classes:
        raise TegakiError(f"{root}: no class sub-folders; put images in {root}/0/, {root}/1/, ...")
    images, labels, skipped = [], [], []
    for d in subdirs:
        if d.name not in classes:
            raise TegakiError(f"{d}: class {d.name!r} is not among {classes}")
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():  # a pipe named x.png would block
                continue
            try:
                p = to_mnist(f)
            except TegakiError as e:
                skipped.append(str(e))
                continue
            if p.empty:
                skipped.append(f"{f}: no digit (empty image)")
                continue
            images.append(p.image)
            labels.append(classes.index(d.name))
    if not images:
        raise TegakiError(f"{root}: no readable images in its class sub-folders")
    return classes, np.stack(images), np.asarray(labels, np.int64), skipped


def load_folder(path: str, seed: int = 0, test_fraction: float = 0.2, all_test: bool = False,
                log=lambda m: None) -> Dataset:
    """Load a folder dataset; with `all_test` (for evaluation) every image is in the test set."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise TegakiError(f"folder:{path}: no such folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, xtr, ytr, s1 = _read_classes(root / "train", None)
        _, xte, yte, s2 = _read_classes(root / "test", classes)
        skipped = s1 + s2
    else:
        classes, x, y, skipped = _read_classes(root, None)
        # a seeded stratified hold-out is the test set (or every image, for evaluation)
        n_test = max(1, int(round(len(y) * test_fraction))) if len(y) > 1 else 0
        tr, te = stratified_split(y, n_test, seed) if n_test else (np.arange(len(y)), np.arange(len(y)))
        if all_test:
            te = np.arange(len(y))
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    for s in skipped:
        log(f"skipped {s}")
    provenance = {"dataset": f"folder:{root}", "source": str(root), "files": {}, "verified": False,
                  "images": int(len(ytr) + len(yte)), "skipped": len(skipped)}
    if not (root / "train").is_dir() and not all_test:
        provenance["split_seed"] = seed  # which images are the test set (a distillation checks its teachers')
    return Dataset(f"folder:{root}", xtr, ytr, xte, yte, classes, provenance)
