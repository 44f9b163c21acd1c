"""The run folder: the unit everything after training consumes.

    model.safetensors        final (best) weights, "<layer>.<param>" -> float32 array
    initial.safetensors      the weights before training (for "filters before and after")
    model.json               spec, preprocessing, class names, data provenance, seed, versions, command
    history.csv              one row per epoch
    metrics.json             test accuracy and error, seconds, epochs, dataset ...
    checkpoint.safetensors   while training: the last finished epoch's weights, optimiser and loop state
                             (JSON in its metadata), for --resume; removed when the run completes

Every file is written atomically; nothing here uses pickle, so loading a run never runs code.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from tegaki.engines.inputs import normalise  # noqa: F401 - run.normalise, for callers of the old name
from tegaki.errors import TegakiError
from tegaki.fileio import atomic_write_bytes, atomic_write_text, write_json
from tegaki.spec import Spec

FORMAT = "tegaki-run/1"


@dataclass
class Run:
    path: Path | None
    spec: Spec
    weights: dict[str, np.ndarray]
    meta: dict
    metrics: dict = field(default_factory=dict)

    @property
    def norm(self) -> dict:
        return self.meta["preprocessing"]["normalize"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def initial_weights(self) -> dict[str, np.ndarray] | None:
        if self.path is None or not (self.path / "initial.safetensors").is_file():
            return None
        return load_weights(self.path / "initial.safetensors")

    def history(self) -> list[dict]:
        return read_history(self.path / "history.csv") if self.path else []


def save_weights(path: Path, weights: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    atomic_write_bytes(path, st_save(arrays, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_weights(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise TegakiError(f"{path}: missing; the run folder is incomplete (was training interrupted?)")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise TegakiError(f"{path}: not a valid safetensors file ({str(e)[:100]}); retrain or restore it") from None


def versions() -> dict:
    import torch

    from tegaki import __version__

    return {"tegaki": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "platform": platform.platform()}


def norm_for(spec: Spec, train_images: np.ndarray) -> dict:
    """The input normalisation the spec asks for, measured on the training images."""
    if spec.normalize == "unit":
        return {"mean": 0.0, "std": 1.0}
    x = train_images.astype(np.float64) / 255.0
    return {"mean": round(float(x.mean()), 6), "std": round(float(x.std()), 6)}


def make_meta(spec: Spec, classes: list[str], norm: dict, provenance: dict, seed: int, config: dict,
              command: list[str] | None = None) -> dict:
    return {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "classes": list(classes),
        "preprocessing": {"input": "MNIST-style 28x28, white ink on black, uint8",
                          "scale": 1 / 255, "normalize": norm},
        "data": provenance,
        "seed": seed,
        "config": config,
        "versions": versions(),
        "command": command if command is not None else sys.argv,
    }


def write_history(path: Path, rows: list[dict]) -> None:
    if not rows:
        atomic_write_text(path, "")
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]


def save_run(path: Path, spec: Spec, weights, meta: dict, history: list[dict], metrics: dict,
             initial: dict | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if initial is not None:
        save_weights(path / "initial.safetensors", initial)
    write_history(path / "history.csv", history)
    write_json(path / "metrics.json", metrics)
    save_weights(path / "model.safetensors", weights, {"format": FORMAT})
    write_json(path / "model.json", meta)  # written last: a folder with model.json is complete


def load_run(ref: str | Path) -> Run:
    path = Path(ref)
    if not path.exists():
        raise TegakiError(f"{path}: no such run folder; give the folder 'tegaki train' printed")
    if not path.is_dir():
        raise TegakiError(f"{path}: a run is a folder (with model.json and model.safetensors), not a file")
    mj = path / "model.json"
    if not mj.is_file():
        hint = " (training may still be running or was interrupted; try --resume)" if (
            path / "checkpoint.safetensors").is_file() else ""
        raise TegakiError(f"{path}: not a complete run folder: model.json is missing{hint}")
    try:
        meta = json.loads(mj.read_text())
        spec = Spec.from_dict(meta["spec"], where=str(mj))
        meta["classes"], meta["preprocessing"]["normalize"]["mean"]  # noqa: B018 - presence check
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TegakiError(f"{mj}: corrupt run description ({type(e).__name__}: {e}); retrain") from None
    weights = load_weights(path / "model.safetensors")
    spec.check_weights(weights, where=str(path / "model.safetensors"))
    metrics = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except json.JSONDecodeError:
            raise TegakiError(f"{path / 'metrics.json'}: corrupt JSON; retrain or delete the file") from None
    return Run(path, spec, weights, meta, metrics)
