"""The run folder: the unit everything after training consumes.

    model.safetensors        final (best) weights, "<layer>.<param>" -> float32 array
    initial.safetensors      the weights before training (for "filters before and after")
    model.json               spec, preprocessing, class names, data provenance, seed, versions, command,
                             calibration (temperature and "not a digit" thresholds, tegaki/calibration.py)
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
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

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


MAX_WEIGHT_BYTES = 2 * 2**30  # a weights or checkpoint file larger than this is refused from its header
MAX_HEADER_BYTES = 10_000_000
MAX_ABS_WEIGHT = 1e6  # trained weights are tiny next to this; larger ones overflow float32 in a few layers


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file -> arrays. The header is read and checked first, so a file larger than its
    declared tensors (or a huge sparse file behind a symlink) is refused before it is read."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise TegakiError(f"{path}: a folder (or other non-file) where the weights file should be; "
                          "move it away, or retrain")
    if not path.is_file():
        raise TegakiError(f"{path}: missing; the run folder is incomplete (was training interrupted?)")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(size - 8, MAX_HEADER_BYTES):
                raise ValueError("no valid header")
            header_bytes = f.read(n)
            header = json.loads(header_bytes)
            if not isinstance(header, dict) or not all(isinstance(v, dict) for v in header.values()):
                raise ValueError("its header is not a JSON object of tensors")
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            need = 8 + n + max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
            if size != need or need > MAX_WEIGHT_BYTES:
                raise ValueError(f"{size:,} bytes, but its header declares {need:,}")
            data = head + header_bytes + f.read()
        if any(v.get("dtype") == "BF16" for v in tensors.values()):
            return _load_with_bf16(data, 8 + n, tensors)
        return st_load(data)
    except (SafetensorError, ValueError, OSError, KeyError, TypeError, IndexError, OverflowError,
            RecursionError) as e:
        raise TegakiError(f"{path}: not a valid safetensors file ({str(e)[:100]}); retrain or restore it") from None


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _load_with_bf16(data: bytes, start: int, tensors: dict) -> dict[str, np.ndarray]:
    """bfloat16 tensors (NumPy has no such type) widened exactly to float32; the others as stored."""
    out = {}
    for k, v in tensors.items():
        a, b = (start + int(i) for i in v["data_offsets"])
        shape = tuple(int(i) for i in v["shape"])
        raw = data[a:b]
        if v["dtype"] == "BF16":  # the high 16 bits of a float32
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, np.dtype(_DTYPES[v["dtype"]]).newbyteorder("<"))
        out[k] = x.reshape(shape).copy()
    return out


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
    norm = {"mean": round(float(x.mean()), 6), "std": round(float(x.std()), 6)}
    if norm["std"] == 0:  # nothing to standardise by, and nothing to learn from
        raise TegakiError(f"every training image is the same flat grey ({round(norm['mean'] * 255)} everywhere): "
                          "nothing to learn from; check the images (blank? wrong file?)")
    return norm


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
    """history.csv's rows as numbers; a cell that is not a number reads as None, a row without an epoch
    number is skipped (the history is for pictures and tables; a damaged one must not stop them)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [{k: _number(v) for k, v in r.items() if isinstance(k, str)} for r in csv.DictReader(f)]
    except (UnicodeDecodeError, csv.Error, OSError):
        return []
    return [r for r in rows if r.get("epoch") is not None]


def _number(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def save_run(path: Path, spec: Spec, weights, meta: dict, history: list[dict], metrics: dict,
             initial: dict | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if initial is not None:
        save_weights(path / "initial.safetensors", initial)
    write_history(path / "history.csv", history)
    write_json(path / "metrics.json", metrics)
    save_weights(path / "model.safetensors", weights, {"format": FORMAT})
    write_json(path / "model.json", meta)  # written last: a folder with model.json is complete


BUNDLED = "bundled"  # the name every command accepts for the model that ships with tegaki


def bundled_model_path() -> Path | None:
    from importlib import resources

    p = Path(str(resources.files("tegaki").joinpath("model")))
    return p if (p / "model.json").is_file() else None


def run_path(ref: str | Path) -> Path:
    """A run folder's path: `ref`, or the bundled model's for the name "bundled" (unless a folder of
    that name is here)."""
    if not isinstance(ref, (str, os.PathLike)):
        raise TegakiError(f"give a run folder (a path) or 'bundled', got {type(ref).__name__} {str(ref)[:40]!r}")
    path = Path(ref)
    if str(ref) == BUNDLED and not path.exists():
        bundled = bundled_model_path()
        if bundled is None:
            raise TegakiError("no bundled model is installed with this tegaki; give a run folder")
        return bundled
    return path


def is_bundled(path: Path | None) -> bool:
    b = bundled_model_path()
    return bool(path is not None and b is not None and Path(path).resolve() == b.resolve())


def members_hint(ref) -> str:
    """For a folder that is not a run: the hint, when `train --ensemble` wrote it, to give its members instead."""
    first = Path(ref) / "member-1"
    return f"; an ensemble's folder is not a run: give its members ({first} ...)" if first.is_dir() else ""


def load_run(ref: str | Path) -> Run:
    """Read a run folder and check every value in it, so nothing later meets a NaN weight, a zero
    standard deviation or a class list of the wrong length (each is one TegakiError here)."""
    path = run_path(ref)
    if not path.exists():
        raise TegakiError(f"{path}: no such run folder; give the folder 'tegaki train' printed (or 'bundled')")
    if not path.is_dir():
        raise TegakiError(f"{path}: a run is a folder (with model.json and model.safetensors), not a file")
    mj = path / "model.json"
    if mj.exists() and not mj.is_file():
        raise TegakiError(f"{mj}: a folder (or other non-file) where the run's description should be; "
                          "move it away, or retrain")
    if not mj.is_file():
        hint = " (training may still be running or was interrupted; try --resume)" if (
            path / "checkpoint.safetensors").is_file() else ""
        raise TegakiError(f"{path}: not a complete run folder: model.json is missing{hint}")
    meta = _read_json(mj, "run description; retrain")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt is not None and fmt != FORMAT:  # runs carry it since the first release; a newer tegaki may write more
        raise TegakiError(f"{mj}: format {str(fmt)[:40]!r} is not one this tegaki reads ({FORMAT}); "
                          "upgrade tegaki, or retrain")
    try:
        spec = Spec.from_dict(meta["spec"], where=str(mj))
        meta["classes"], meta["preprocessing"]["normalize"]["mean"]  # noqa: B018 - presence check
    except (KeyError, TypeError) as e:
        raise TegakiError(f"{mj}: corrupt run description ({type(e).__name__}: {e}); retrain") from None
    meta["classes"] = check_classes(meta["classes"], spec.num_classes, mj)
    for key in ("data", "config", "versions"):  # informative: a damaged one is dropped, not fatal
        if not isinstance(meta.get(key, {}), dict):
            meta[key] = {}
    if not (isinstance(meta.get("command"), list) and all(isinstance(a, str) for a in meta["command"])):
        meta["command"] = []
    check_norm(meta["preprocessing"]["normalize"], mj)
    if "calibration" in meta:  # runs made before calibration existed have none: plain softmax
        meta["calibration"] = check_calibration(meta["calibration"], mj, spec.num_classes)
    weights = load_weights(path / "model.safetensors")
    spec.check_weights(weights, where=str(path / "model.safetensors"))
    check_values(weights, path / "model.safetensors")
    metrics = {}
    if (path / "metrics.json").is_file():
        metrics = lenient_metrics(_read_json(path / "metrics.json", "JSON; retrain or delete the file"))
    return Run(path, spec, weights, meta, metrics)


def _read_json(path: Path, what: str):
    from tegaki.spec import parse_text, read_text_file

    return parse_text(read_text_file(path, "run file"), "json", str(path), what)


MAX_CLASS_NAME = 100


def check_classes(classes, n: int, where) -> list[str]:
    """Class names: n distinct, non-empty strings of printable characters, at most 100 each."""
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise TegakiError(f"{where}: 'classes' must be a list of strings; retrain or repair the file")
    if len(classes) != n:
        raise TegakiError(f"{where}: {len(classes)} class names for a network with {n} outputs; "
                          "retrain or repair the file")
    for c in classes:
        if not c.strip() or len(c) > MAX_CLASS_NAME or not c.isprintable():
            raise TegakiError(f"{where}: class name {c[:40]!r} must be 1 to {MAX_CLASS_NAME} printable "
                              "characters; repair the file")
    if len(set(classes)) != len(classes):
        raise TegakiError(f"{where}: class names repeat; each class needs its own name")
    return classes


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_norm(norm, where) -> None:
    ok = isinstance(norm, dict) and _finite(norm.get("mean")) and _finite(norm.get("std"))
    # training measures the std to 6 decimals: below 1e-6 it is not one of tegaki's, and would blow inputs up
    if not ok or not 1e-6 <= norm["std"] <= 1e6 or abs(norm["mean"]) > 1e6:
        raise TegakiError(f"{where}: the input normalisation must have a finite mean and a standard deviation "
                          f"from 1e-6 to 1e6, got {str(norm)[:80]}; retrain or repair the file")


T_MIN, T_MAX = 0.05, 20.0  # a calibration temperature outside this range is a damaged file, not a model


def check_calibration(record, where, num_classes: int | None = None) -> dict:
    """model.json's "calibration" (tegaki/calibration.py), checked: a finite temperature in [T_MIN, T_MAX]
    and, when there are out-of-distribution thresholds, finite ones in order, and Mahalanobis means
    and precision of finite numbers, K x K for K classes. Else one TegakiError."""
    fix = "recalibrate the run (tegaki.calibration.calibrate) or remove 'calibration' from model.json"
    if not isinstance(record, dict):
        raise TegakiError(f"{where}: 'calibration' must be an object; {fix}")
    t = record.get("temperature")
    if not (_finite(t) and T_MIN <= t <= T_MAX):
        raise TegakiError(f"{where}: the calibration temperature must be a finite number in "
                          f"[{T_MIN}, {T_MAX}], got {str(t)[:40]}; {fix}")
    ood = record.get("ood")
    if ood is not None:
        keys = ("not_a_digit_below", "not_sure_below", "not_sure_confidence")
        if not (isinstance(ood, dict) and all(_finite(ood.get(k)) for k in keys)
                and ood["not_a_digit_below"] <= ood["not_sure_below"] and 0 <= ood["not_sure_confidence"] <= 1):
            raise TegakiError(f"{where}: the calibration's 'ood' thresholds must be finite numbers with "
                              f"not_a_digit_below <= not_sure_below and not_sure_confidence in [0, 1]; {fix}")
        if ood.get("score") == "mahalanobis":
            k = num_classes or len(ood.get("means") or [])
            if not all(_square(ood.get(m), k) for m in ("means", "precision")):
                raise TegakiError(f"{where}: the calibration's Mahalanobis 'means' and 'precision' must each be "
                                  f"{k} lists of {k} finite numbers (one per class); {fix}")
    return record


def _square(rows, k: int) -> bool:
    return (isinstance(rows, list) and len(rows) == k and k > 0
            and all(isinstance(r, list) and len(r) == k and all(_finite(v) for v in r) for r in rows))


def check_values(weights: dict[str, np.ndarray], where) -> None:
    for k, w in weights.items():
        if not np.issubdtype(w.dtype, np.floating):
            raise TegakiError(f"{where}: {k} holds {w.dtype} values, not floating point; retrain")
        if not w.size:
            continue
        finite, largest = bool(np.isfinite(w).all()), float(np.abs(w).max())
        if not finite or largest > MAX_ABS_WEIGHT:
            bad = "NaN or infinite" if not finite else f"as large as {largest:.3g}"
            raise TegakiError(f"{where}: weights {k} are {bad}; the run is damaged or diverged: retrain")


def lenient_metrics(metrics) -> dict:
    """metrics.json is informative only: keep the entries of the right kind, drop the rest."""
    if not isinstance(metrics, dict):
        return {}
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (str, bool)) or v is None:
            if not (k in NUMERIC_METRICS and isinstance(v, str)):
                out[k] = v
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = v
    return out


NUMERIC_METRICS = {"test_accuracy", "test_error", "test_loss", "test_mistakes", "valid_accuracy", "valid_loss",
                   "epochs", "best_epoch", "train_seconds", "seconds_per_epoch", "setup_seconds", "test_seconds",
                   "seed", "train_size", "valid_size", "test_size"}
