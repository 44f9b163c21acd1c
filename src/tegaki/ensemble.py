"""Ensembles and test-time augmentation (TTA): average class probabilities over models and views.

    views = tta_views(x, background)                  # the input and a few small fixed distortions
    probs = average_proba(engines, x, tta=True)       # (N, classes), mean over models and views
    result = train_ensemble(spec, ds, cfg, out, members=5, tta=True)

`train_ensemble` trains `members` ordinary runs (out/member-1 ... member-N; a single one is `out`
itself, for TTA alone) that differ in their
seed (initial weights, shuffling, dropout, augmentation) but share ONE validation split, so the
ensemble's validation accuracy is honest; it then measures the validation and test sets with
every combination (single models, ensemble, with and without TTA) and writes out/ensemble.json.
The TTA views are fixed (no randomness): shifts of one pixel in four directions and rotations of
+-8 degrees, each alongside the untouched image.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tegaki.data.augment import affine_matrices, warp
from tegaki.fileio import write_json
from tegaki.numerics import softmax

# (rotation degrees, shift x, shift y) of each view; the first is the identity
VIEWS = ((0, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (8, 0, 0), (-8, 0, 0))


def tta_views(x: np.ndarray, background: float, views=VIEWS) -> list[np.ndarray]:
    """Fixed distortions of a normalised batch (N, C, H, W); the first view is x itself."""
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    n = len(xt)
    out = []
    for rot, sx, sy in views:
        if (rot, sx, sy) == (0, 0, 0):
            out.append(np.asarray(x, np.float32))
            continue
        theta = affine_matrices(torch.full((n,), math.radians(rot)), torch.ones(n, 2), torch.zeros(n),
                                torch.tensor([[float(sx), float(sy)]]).expand(n, 2))
        out.append(warp(xt, theta, None, background).numpy())
    return out


def average_proba(engines: list, x: np.ndarray, background: float = 0.0, tta: bool = False) -> np.ndarray:
    """Mean softmax over models (engines with .logits) and, with tta, over the TTA views."""
    xs = tta_views(x, background) if tta else [x]
    total = None
    for e in engines:
        for v in xs:
            p = softmax(e.logits(v).astype(np.float64))  # (N, classes)
            total = p if total is None else total + p
    return total / (len(engines) * len(xs))


def train_ensemble(spec, ds, cfg, out: Path, members: int, tta: bool = False, log: Callable = print,
                   command=None, train_one=None) -> dict:
    """Train `members` runs with seeds cfg.seed, cfg.seed+1, ... on one validation split; measure
    every combination on the validation and test sets; write out/ensemble.json; return it."""
    from tegaki.train import train

    train_one = train_one or train
    out = Path(out)
    split_seed = cfg.validation_seed
    runs = []
    for i in range(members):
        mcfg = replace(cfg, seed=cfg.seed + i, split_seed=split_seed)
        log(f"\nensemble member {i + 1}/{members} (seed {mcfg.seed})")
        r = train_one(spec, ds, mcfg, out if members == 1 else out / f"member-{i + 1}", log=log, command=command)
        if r.interrupted:
            return {"interrupted": True}
        runs.append(r)
    result = measure_ensemble([r.path for r in runs], ds, split_seed, cfg.valid_size, tta)
    write_json(out / "ensemble.json", result)
    return result


def measure_ensemble(runs: list, ds, split_seed: int, valid_size: int, tta: bool = False) -> dict:
    """Accuracies of trained runs (Run objects or run folders), alone and averaged, with and without
    TTA, on the validation split of `split_seed` (which the runs should share; valid_size 0: none)
    and on the test set. Each run normalises the images with its own statistics."""
    from tegaki.data.dataset import validation_split
    from tegaki.predict import Predictor
    from tegaki.run import Run, load_run

    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    predictors = [Predictor(run) for run in loaded]
    _, va = validation_split(ds.train_labels, valid_size, split_seed)
    sets = {"test": (ds.test_images, ds.test_labels)}
    if len(va):
        sets["valid"] = (ds.train_images[va], ds.train_labels[va])
    result = {"members": [str(run.path) for run in loaded], "seeds": [run.meta.get("seed") for run in loaded],
              "tta_views": [list(v) for v in VIEWS]}
    for name, (images, y) in sets.items():
        plain, views = [], []  # each run's class probabilities (N, classes)
        for pred in predictors:
            x = pred.prepare(images)
            plain.append(average_proba([pred.engine], x))
            if tta:
                views.append(average_proba([pred.engine], x, -pred.norm["mean"] / pred.norm["std"], tta=True))

        def acc(p):
            return float((p.argmax(1) == y).mean())

        res = {"single": [acc(p) for p in plain], "ensemble": acc(sum(plain) / len(plain)),
               "overlap": error_overlap([p.argmax(1) for p in plain], y)}
        if tta:
            res["single_tta"] = [acc(p) for p in views]
            res["ensemble_tta"] = acc(sum(views) / len(views))
        result[name] = res
    return result


def error_overlap(predictions: list[np.ndarray], y: np.ndarray) -> dict:
    """How much the members' mistakes coincide, which bounds what averaging them can fix: for each
    pair (i, j), the images both get wrong ("shared") and that count over the images either gets
    wrong ("jaccard": 1 = the very same mistakes, 0 = none in common)."""
    wrong = [np.asarray(p) != y for p in predictions]
    pairs = []
    for i in range(len(wrong)):
        for j in range(i + 1, len(wrong)):
            both, either = int((wrong[i] & wrong[j]).sum()), int((wrong[i] | wrong[j]).sum())
            pairs.append({"pair": [i + 1, j + 1], "shared": both, "jaccard": both / either if either else 1.0})
    return {"mistakes": [int(w.sum()) for w in wrong], "pairs": pairs,
            "wrong_by_all": int(np.logical_and.reduce(wrong).sum()) if wrong else 0}


def overlap_text(result: dict, where: str = "test") -> str:
    """The members' mistakes and how many they share, a line per pair."""
    ov = (result.get(where) or {}).get("overlap")
    if not ov or not ov["pairs"]:
        return ""
    lines = [f"mistakes on {where}: " + ", ".join(f"member {i + 1} {m}" for i, m in enumerate(ov["mistakes"]))
             + f"; made by every member: {ov['wrong_by_all']}"]
    lines += [f"  members {p['pair'][0]} and {p['pair'][1]}: {p['shared']} shared "
              f"(Jaccard {p['jaccard']:.2f})" for p in ov["pairs"]]
    return "\n".join(lines)


def ensemble_table(result: dict) -> str:
    """The accuracies of an ensemble.json as a small text table."""
    cols = [c for c in ("valid", "test") if c in result]
    lines = [f"{'':26s}" + "".join(f"{c:>10s}" for c in cols)]

    def row(label, key, i=None):
        vals = []
        for c in cols:
            v = result[c].get(key)
            vals.append(v[i] if isinstance(v, list) else v)
        if all(v is not None for v in vals):
            lines.append(f"{label:26s}" + "".join(f"{v:10.2%}" for v in vals))

    for i in range(len(result["members"])):
        row(f"member {i + 1}", "single", i)
        row(f"member {i + 1} + TTA", "single_tta", i)
    row(f"ensemble of {len(result['members'])}", "ensemble")
    row(f"ensemble of {len(result['members'])} + TTA", "ensemble_tta")
    return "\n".join(lines)
