"""Pictures (matplotlib, no display needed): learning curves, confusion matrix, galleries.

Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tegaki.fileio import atomic_write_bytes  # noqa: E402


def save(fig, path: Path, dpi: int = 110) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def has_validation(history: list[dict]) -> bool:
    """Whether every epoch of a history has validation figures (not so for --valid-size 0)."""
    return bool(history) and all(r.get("valid_loss") is not None for r in history)


def learning_curves(history: list[dict], path: Path, title: str = "") -> Path:
    ep = [r["epoch"] for r in history]
    style = "o-" if len(ep) <= 30 else "-"  # markers hide a long run's curve
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    kinds = {"train": "train", "valid": "validation"} if has_validation(history) else {"train": "train"}
    losses = [r[f"{k}_loss"] for r in history for k in kinds]
    for k, label in kinds.items():
        a.plot(ep, [r[f"{k}_loss"] for r in history], style, label=label)
    if min(losses) > 0 and max(losses) / min(losses) > 20:
        a.set_yscale("log")  # a long run's loss spans decades; on a linear axis its end is a flat line
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy loss"), a.set_title("loss"), a.legend(), a.grid(alpha=0.3)
    for k, label in kinds.items():
        b.plot(ep, [100 * r[f"{k}_acc"] for r in history], style, label=label)
    if len(ep) >= 10:  # zoom past the first tenth of the run, where the interesting differences are
        late = [100 * r[f"{k}_acc"] for r in history[len(ep) // 10:] for k in kinds]
        lo, hi = min(late), max(late)
        b.set_ylim(lo - 0.15 * (hi - lo) - 0.05, min(100.0, hi + 0.15 * (hi - lo)) + 0.05)
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.set_title("accuracy"), b.legend(), b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "confusion matrix") -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    # log scale so that the few mistakes stay visible beside the large diagonal
    im = ax.imshow(np.log10(cm + 1), cmap="Blues")
    for i in range(k):
        for j in range(k):
            v = cm[i, j]
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > cm.max() / 4 else ("black" if v else "#bbb"))
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="log10(count + 1)")
    return save(fig, path)


def gallery(images: np.ndarray, captions: list[str], path: Path, cols: int = 10, title: str = "",
            cmap: str = "gray") -> Path:
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.15, rows * 1.35 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions):
        ax.imshow(img, cmap=cmap)
        ax.set_title(cap, fontsize=7)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def misclassified(images, labels, preds, probs, classes, path: Path, limit: int = 40) -> Path:
    caps = [f"true {classes[t]}\npred {classes[p]} {probs[i, p]:.0%}" for i, (t, p) in
            enumerate(zip(labels[:limit], preds[:limit]))]
    return gallery(images[:limit], caps, path, title="misclassified test digits (most confident first)")
