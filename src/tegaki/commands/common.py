"""What several commands share: the environment turned into arguments, data loading, threads.

This is the one place below `cli.py` that reads $TEGAKI_DATA_DIR and $XDG_CACHE_HOME; every
command module imports from here, none from `tegaki.cli`.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

from tegaki.errors import TegakiError

# where tegaki was started: a relative $TEGAKI_DATA_DIR means relative to here, even after a chdir
START_DIR = Path.cwd()

LOOK_ENGINES = ("torch", "numpy")  # the engines that expose every layer's output and input gradients


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def data_kwargs(args) -> dict:
    from tegaki.data.sources import default_cache_dir

    return {"data_dir": getattr(args, "data_dir", None), "env_dir": from_start(os.environ.get("TEGAKI_DATA_DIR")),
            "cache_dir": default_cache_dir(os.environ)}


def from_start(path: str | None) -> Path | None:
    """A path from the environment, resolved against the directory tegaki was started in."""
    return (START_DIR / path) if path else None


def load_data(args, name: str, fallback: bool = False, **kw):
    from tegaki.data.sources import load_dataset

    return load_dataset(name, fallback=fallback, log=err, progress_stream=sys.stderr, **data_kwargs(args), **kw)


def check_threads(n: int | None) -> None:
    if n is not None and n < 1:
        raise TegakiError(f"--threads must be at least 1, got {n}")


def apply_threads(n: int | None) -> int:
    """--threads N: torch's intra-op threads and the BLAS/OpenMP pools (NumPy engine) both N;
    without it $TEGAKI_THREADS, then $OMP_NUM_THREADS (when it is a whole number), else the cores other
    programs leave idle (tegaki/threads.py). Says so when that is fewer than all of them, and returns the count."""
    from tegaki import threads

    check_threads(n)
    if n is None and os.environ.get("TEGAKI_THREADS"):
        n = _env_threads(os.environ["TEGAKI_THREADS"])
    if n is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = int(os.environ["OMP_NUM_THREADS"]) or None  # the OpenMP convention, as torch reads it
    used = threads.use(n)
    if n is None and used < threads.cores():  # on stdout: information, so that an error stays stderr's one line
        print(f"threads: {used} of {threads.cores()} cores (the others are busy; --threads N to choose)", flush=True)
    return used


def _env_threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise TegakiError(f"TEGAKI_THREADS must be a whole number of threads, at least 1, got {text!r}")
    return n


THREADS_HELP = "CPU threads for torch and NumPy (default: the cores other programs leave idle)"


def add_data_engine_args(p) -> None:
    """--dataset, --data-dir, --engine and --threads, as inspect and report take them."""
    p.add_argument("--dataset", help="default: the dataset the run was trained on")
    p.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    p.add_argument("--engine", choices=LOOK_ENGINES, default="torch",
                   help="engine that runs the network (default torch; onnx computes logits only)")
    p.add_argument("--threads", type=int, help=THREADS_HELP)


def load_predictor(args):
    from tegaki.predict import Predictor

    return Predictor.load(args.run, engine=args.engine)


def load_test_data(args, run, name: str | None = None):
    """The dataset to measure or look at: `name`, else --dataset, else the one the run was trained on."""
    trained_on = trained_dataset(run)
    name = name or getattr(args, "dataset", None) or trained_on or "mnist"
    folder = (run.meta.get("data") or {}).get("folder")
    if (name == trained_on and not getattr(args, "data_dir", None) and isinstance(folder, str)
            and not name.startswith("folder:") and Path(folder).is_dir()):
        try:  # the folder the run was trained from, first: no download for data that is on disk
            from tegaki.data.sources import load_dataset

            ds = load_dataset(name, data_dir=folder, fetch=False, log=err)
        except TegakiError:
            pass  # moved or changed since: look where the dataset is usually found
        else:
            return _measurable(ds, run)
    if not name.startswith("folder:"):
        return _measurable(load_data(args, name), run)
    if trained_on is not None and _same_folder(name, trained_on):
        # the folder the run learned from: measure only the images its training held out (training's split,
        # seeded by the run's seed), never the ones it was trained on
        seed = (run.meta.get("config") or {}).get("seed", 0)
        ds = load_data(args, name, seed=seed if isinstance(seed, int) else 0)
        err(f"{ds.name}: the run was trained on this folder; measuring the {len(ds.test_labels):,} images "
            "its training held out")
    else:
        ds = load_data(args, name, all_test=True)  # a folder of new images: all of them
    return _measurable(ds, run)


def _same_folder(a: str, b: str, kinds: tuple[str, ...] = ("folder:",)) -> bool:
    """Whether two folder:PATH (or, with kinds, idx:PATH) dataset names are the same folder, however spelt."""
    kind = next((k for k in kinds if a.startswith(k)), None)
    if kind is None or not b.startswith(kind):
        return False
    try:
        return Path(a[len(kind):]).expanduser().resolve() == Path(b[len(kind):]).expanduser().resolve()
    except (OSError, RuntimeError):
        return a == b


def same_dataset(a: str, b: str) -> bool:
    """Whether two dataset names mean the same data: equal, or the same folder:/idx: folder spelt differently
    (folder:~/digits and the folder:/home/me/digits that loading it reports)."""
    return a == b or _same_folder(a, b, ("folder:", "idx:"))


def check_writable(out: Path, what: str = "--out") -> None:
    """Refuse, before any work, an output place that cannot be written (its nearest existing folder is read-only
    or not ours): the work would be done, printed, then lost."""
    p = Path(out).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    folder = p if p.is_dir() else p.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TegakiError(f"cannot write {out}: {folder} is not writable here (read-only?); choose another folder "
                          f"with {what}")


def trained_dataset(run) -> str | None:
    """The name of the dataset the run was trained on (None for arrays given to Sequential.fit)."""
    name = run.meta.get("config", {}).get("dataset")
    return None if name == "arrays" or not isinstance(name, str) else name


def _measurable(ds, run):
    """The test set, if the run can be measured on it: the same classes (by name: a folder whose class folders
    sort in another order has its labels renumbered to the run's), images of the network's size, some."""
    if len(ds.classes) != len(run.classes):
        raise TegakiError(f"{ds.name} has {len(ds.classes)} classes, the model {len(run.classes)}; "
                          "choose a dataset with the run's classes")
    mine, theirs = [str(c) for c in ds.classes], [str(c) for c in run.classes]
    if sorted(mine) != sorted(theirs):
        raise TegakiError(f"{ds.name}'s classes ({', '.join(mine[:4])} ...) are not the model's "
                          f"({', '.join(theirs[:4])} ...); choose a dataset with the run's classes")
    if mine != theirs:  # the same names in another order: renumber the labels as the model numbers its outputs
        from dataclasses import replace

        import numpy as np

        order = np.array([theirs.index(c) for c in mine])
        ds = replace(ds, test_labels=order[np.asarray(ds.test_labels)], classes=list(run.classes),
                     train_labels=order[np.asarray(ds.train_labels)] if len(ds.train_labels) else ds.train_labels)
    if not run.spec.takes_images(ds.test_images.shape[1:]):
        raise TegakiError(f"{ds.name} images are {'x'.join(map(str, ds.test_images.shape[1:]))}, the model takes "
                          f"{'x'.join(map(str, run.spec.input_shape[-2:]))}; choose a dataset of the images it was "
                          "trained on")
    if len(ds.test_labels) == 0:
        raise TegakiError(f"{ds.name} has no test images; choose a dataset with some")
    return ds


def check_reads_pictures(run) -> None:
    """predict and serve turn pictures into MNIST-style 28x28 digits: a network that takes another size cannot
    read them (evaluate measures it on its own data)."""
    if not run.spec.takes_images((28, 28)):
        h, w = run.spec.input_shape[-2:]
        raise TegakiError(f"{run.path}: this network takes {h}x{w} images, and pictures are read as MNIST's 28x28 "
                          "digits; it can be measured with 'tegaki evaluate' on its own data, not given pictures")


def default_out(run, kind: str, name: str | None = None) -> Path:
    """Where a command writes about `run` without --out: the run folder (or `name` inside it), except
    for the bundled model, whose outputs go to ./<kind>-bundled rather than into the installed package."""
    from tegaki.run import is_bundled

    if is_bundled(run.path):
        return Path(f"{kind}-bundled" + (f"-{name}" if name else ""))
    return run.path / name if name else run.path


def slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s).strip("_")[:60]


def pad(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns: wide characters (CJK, most emoji) take two columns and
    combining marks none, so a table of file names lines up whatever script they are in."""
    return text + " " * max(0, width - columns(text))


def columns(text: str) -> int:
    """How many terminal columns `text` takes."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
