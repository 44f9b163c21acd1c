"""What several commands share: the environment turned into arguments, data loading, threads.

This is the one place below `cli.py` that reads $TEGAKI_DATA_DIR and $XDG_CACHE_HOME; every
command module imports from here, none from `tegaki.cli`.
"""

from __future__ import annotations

import os
import sys

from tegaki.errors import TegakiError

LOOK_ENGINES = ("torch", "numpy")  # the engines that expose every layer's output and input gradients
_THREAD_LIMITS = []  # threadpoolctl's controller, kept alive while the limit holds


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def data_kwargs(args) -> dict:
    from tegaki.data.sources import default_cache_dir

    return {"data_dir": getattr(args, "data_dir", None), "env_dir": os.environ.get("TEGAKI_DATA_DIR") or None,
            "cache_dir": default_cache_dir(os.environ)}


def load_data(args, name: str, fallback: bool = False, **kw):
    from tegaki.data.sources import load_dataset

    return load_dataset(name, fallback=fallback, log=err, progress_stream=sys.stderr, **data_kwargs(args), **kw)


def check_threads(n: int | None) -> None:
    if n is not None and n < 1:
        raise TegakiError(f"--threads must be at least 1, got {n}")


def apply_threads(n: int | None) -> None:
    """--threads N: torch's intra-op threads and the BLAS/OpenMP pools (NumPy engine) both N."""
    check_threads(n)
    if n is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    _THREAD_LIMITS.append(threadpool_limits(n))


def add_data_engine_args(p) -> None:
    """--dataset, --data-dir and --engine, as inspect, report and probe take them."""
    p.add_argument("--dataset", help="default: the dataset the run was trained on")
    p.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    p.add_argument("--engine", choices=LOOK_ENGINES, default="torch",
                   help="engine that runs the network (default torch; onnx computes logits only)")


def load_predictor(args):
    from tegaki.predict import Predictor

    return Predictor.load(args.run, engine=args.engine)


def load_test_data(args, run, name: str | None = None):
    """The dataset to measure or look at: `name`, else --dataset, else the one the run was trained on."""
    name = name or getattr(args, "dataset", None) or run.meta.get("config", {}).get("dataset") or "mnist"
    ds = load_data(args, name, all_test=True) if name.startswith("folder:") else load_data(args, name)
    if len(ds.classes) != len(run.classes):
        raise TegakiError(f"{ds.name} has {len(ds.classes)} classes, the model {len(run.classes)}; "
                          "choose a dataset with the run's classes")
    return ds


def slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s).strip("_")[:60]
