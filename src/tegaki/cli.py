"""The `tegaki` command: parse arguments, call the library, print.

Nothing below this layer reads argv or the environment: this file turns $TEGAKI_DATA_DIR and
$XDG_CACHE_HOME into arguments. Every user mistake ends as one line on stderr and exit status 2.
Further commands (inspect, report, probe, predict, serve, export) live in tegaki/commands/, one
module each with `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from tegaki import __version__
from tegaki.errors import TegakiError

DEFAULT_PRESET = "fast"
# options a resumed run keeps from its checkpoint
RESUME_FIXED = ("preset", "spec", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "label_smoothing",
                "patience", "monitor", "valid_size", "split_seed", "seed", "engine", "out", "augment",
                "augment_strength", "precision", "compile", "ensemble", "tta")
COMMAND_MODULES = ("inspect", "report", "probe", "predict", "serve", "export", "ensemble")


def data_kwargs(args) -> dict:
    from tegaki.data.sources import default_cache_dir

    return {"data_dir": getattr(args, "data_dir", None), "env_dir": os.environ.get("TEGAKI_DATA_DIR") or None,
            "cache_dir": default_cache_dir(os.environ)}


_THREAD_LIMITS = []  # threadpoolctl's controller, kept alive while the limit holds


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


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_data(args, name: str, fallback: bool = False, **kw):
    from tegaki.data.sources import load_dataset

    return load_dataset(name, fallback=fallback, log=err, progress_stream=sys.stderr, **data_kwargs(args), **kw)


# data ------------------------------------------------------------------------------------------
def cmd_data(args) -> int:
    from tegaki.data import sources

    if args.action == "list":
        for r in sources.list_datasets():
            print(f"{r['name']:<16} {r['description']}")
        return 0
    if not args.name:
        raise TegakiError(f"'tegaki data {args.action}' needs a dataset name, e.g. mnist (see 'tegaki data list')")
    if args.action == "fetch":
        if args.name not in sources.SOURCES:
            if args.name in sources.FALLBACKS or args.name.startswith(("folder:", "idx:")):
                raise TegakiError(f"{args.name} is not downloaded: it is already on this machine or comes with a "
                                  f"package; see 'tegaki data info {args.name}'")
            sources.locate(args.name)  # raises: unknown dataset
        ds = load_data(args, args.name)
        state = "checksums verified" if ds.provenance.get("verified") else "not verified"
        print(f"{args.name}: {len(ds.train_labels):,} train and {len(ds.test_labels):,} test images, {state}; "
              f"{ds.provenance.get('source')}")
        return 0
    ds = load_data(args, args.name, fetch=False) if args.name in sources.SOURCES else load_data(args, args.name)
    import numpy as np

    print(f"dataset   {ds.name}")
    print(f"source    {ds.provenance.get('source')}")
    print(f"train     {ds.train_images.shape[0]:,} images {ds.train_images.shape[1]}x{ds.train_images.shape[2]}")
    print(f"test      {ds.test_images.shape[0]:,} images")
    print(f"classes   {', '.join(ds.classes)}")
    print("per class (train / test):")
    tr = np.bincount(ds.train_labels, minlength=len(ds.classes))
    te = np.bincount(ds.test_labels, minlength=len(ds.classes))
    for i, c in enumerate(ds.classes):
        print(f"  {c:<12} {tr[i]:6d} / {te[i]:5d}")
    if ds.provenance.get("files"):
        print(f"files ({'checksums verified' if ds.provenance.get('verified') else 'not verified'}):")
    for f, c in ds.provenance.get("files", {}).items():
        print(f"  {f}: sha256 {c.get('sha256')}")
    return 0


# summary ---------------------------------------------------------------------------------------
def cmd_summary(args) -> int:
    from tegaki.spec import resolve_spec

    spec = resolve_spec(args.ref)
    print(spec.summary())
    if spec.description:
        print(f"\n{spec.description}")
    if spec.train:
        print("recipe: " + ", ".join(f"{k}={v}" for k, v in spec.train.items()))
    return 0


# train -----------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from tegaki import distributed
    from tegaki.spec import Spec, load_preset
    from tegaki.train import TrainConfig, lr_for, read_checkpoint, train

    check_threads(args.threads)  # before --nproc starts N processes that would each fail
    if args.ensemble is not None and (args.ensemble < 1 or args.resume or (args.nproc or 1) > 1):
        raise TegakiError("--ensemble N needs N >= 1 and works without --resume and --nproc")
    if args.nproc is not None and args.nproc != 1:  # N copies of this command, one per process
        return distributed.launch(args.nproc, getattr(args, "argv", sys.argv[1:]), dict(os.environ))
    resume = None
    if args.resume:
        fixed = [f"--{k.replace('_', '-')}" for k in RESUME_FIXED if getattr(args, k, None) is not None]
        if fixed:
            raise TegakiError(f"--resume continues a run with its own settings; drop {', '.join(fixed)} "
                              "(only --epochs, --device and --data-dir may be given)")
        out = Path(args.resume)
        resume = read_checkpoint(out)
        spec = Spec.from_dict(resume["spec"], where=str(out / "checkpoint.safetensors"))
        cfg_d = dict(resume["config"])
        if args.epochs:
            if args.epochs < resume["epoch"]:
                raise TegakiError(f"{out} has already trained {resume['epoch']} epochs; --epochs must be at least that")
            cfg_d["epochs"] = args.epochs
        if args.device:
            cfg_d["device"] = args.device
        try:
            cfg = TrainConfig(**cfg_d)
        except TypeError as e:
            raise TegakiError(f"{out}: checkpoint written by another version of tegaki ({e}); start a new run") from None
        dataset = resume["dataset"]
        dist = distributed.setup(os.environ, cfg.device)
    else:
        if args.spec and args.preset:
            raise TegakiError("give --preset or --spec, not both")
        spec = Spec.from_file(args.spec) if args.spec else load_preset(args.preset or DEFAULT_PRESET)
        dataset = args.dataset
        lr, note = lr_for(spec.train, args.optimizer, args.lr)
        cfg = TrainConfig.for_spec(
            spec, epochs=args.epochs, batch_size=args.batch_size, lr=lr, optimizer=args.optimizer,
            schedule=args.schedule, seed=args.seed, device=args.device, patience=args.patience,
            monitor=args.monitor, split_seed=args.split_seed,
            valid_size=args.valid_size, engine=args.engine, weight_decay=args.weight_decay,
            label_smoothing=args.label_smoothing, dataset=dataset, augment=args.augment,
            augment_strength=args.augment_strength, precision=args.precision, compile=args.compile)
        dist = distributed.setup(os.environ, cfg.device)  # one process of several under torchrun or --nproc
        if note and dist.is_main:
            err(note)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dist.agree(time.time())))  # rank 0's
        out = Path(args.out) if args.out else Path("runs") / f"{stamp}-{spec.name}"
        if (out / "model.json").exists() or (out / "checkpoint.safetensors").exists():
            raise TegakiError(f"--out {out} already holds a run; choose another --out, or --resume it")
        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            raise TegakiError(f"--out {out} already exists and is not an empty folder; choose a new --out")
    if not dist.is_main:
        sys.stdout = open(os.devnull, "w")  # rank 0 speaks for all
    apply_threads(args.threads)  # after distributed.setup, which shares the cores out otherwise
    t0 = time.perf_counter()
    extra = {"seed": cfg.seed} if dataset.startswith("folder:") else {}
    # no fallback when resuming: a run continues on the data it started with, or not at all
    ds = load_data(args, dataset, fallback=(dataset == "mnist" and not args.data_dir and resume is None), **extra)
    cfg.dataset = ds.name
    load_seconds = time.perf_counter() - t0
    print(f"data: {ds.name} from {ds.provenance.get('source')} ({load_seconds:.1f} s)")
    command = ["tegaki", *getattr(args, "argv", sys.argv[1:])]
    if os.environ.get("TEGAKI_LAUNCH_ARGV"):  # started by --nproc: record the command the user typed
        command = ["tegaki", *json.loads(os.environ["TEGAKI_LAUNCH_ARGV"])]
    if args.ensemble or args.tta:  # several models and/or test-time augmentation: see tegaki/ensemble.py
        from tegaki.ensemble import ensemble_table, train_ensemble

        res = train_ensemble(spec, ds, cfg, out, args.ensemble or 1, tta=args.tta, command=command)
        if res.get("interrupted"):
            return 130
        print(f"\n{ensemble_table(res)}\n\nruns saved in {out}; accuracies in {out / 'ensemble.json'}")
        return 0
    result = train(spec, ds, cfg, out, resume=resume, command=command,
                   dist=dist if dist.world > 1 else None, log=print if dist.is_main else (lambda m: None))
    dist.close()
    if not dist.is_main:
        return 130 if result.interrupted else 0
    if result.interrupted:
        err("tegaki: interrupted")
        return 130
    m = result.metrics
    print(f"\nrun saved to {out}")
    print(f"test accuracy {m['test_accuracy']:.2%} (error {m['test_error']:.2%}) on {m['test_size']:,} {ds.name} "
          f"test images; {m['epochs']} epochs, {m['train_seconds']:.1f} s of training")
    if ds.name != dataset:
        err(f"note: trained on {ds.name}, not {dataset} (see the message above)")
    print("next: tegaki evaluate " + str(out) + "   (report, confusion matrix, mistakes)")
    print("      tegaki train --preset lenet --epochs 3 --optimizer adam --lr 0.001 --batch-size 128")
    print("      tegaki summary lenet    (other presets: " + ", ".join(_presets()) + ")")
    return 0


def _presets() -> list[str]:
    from tegaki.spec import preset_names

    return preset_names()


# evaluate --------------------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from tegaki import plots
    from tegaki.evaluate import confusion_text, evaluate, report_text
    from tegaki.fileio import write_json
    from tegaki.predict import Predictor

    apply_threads(args.threads)
    pred = Predictor.load(args.run, engine=args.engine)
    run = pred.run
    name = args.dataset or run.meta.get("config", {}).get("dataset") or "mnist"
    ds = load_data(args, name, all_test=True) if name.startswith("folder:") else load_data(args, name)
    if len(ds.classes) != len(run.classes):
        raise TegakiError(f"{ds.name} has {len(ds.classes)} classes, the model {len(run.classes)}")
    ev = evaluate(pred, ds.test_images, ds.test_labels, run.classes)
    same = name == run.meta.get("config", {}).get("dataset")
    out = Path(args.out) if args.out else (run.path if same else run.path / f"eval-{_slug(ds.name)}")
    print(f"{run.spec.name} on {ds.name} ({len(ds.test_labels):,} test images, engine {args.engine})")
    print(f"accuracy {ev.accuracy:.2%}   error {1 - ev.accuracy:.2%}\n")
    print(report_text(ev.cm, run.classes))
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print(confusion_text(ev.cm, run.classes))
    write_json(out / "evaluation.json", {"dataset": ds.name, "engine": args.engine, **ev.metrics()})
    files = [plots.confusion(ev.cm, run.classes, out / "confusion.png",
                             f"{run.spec.name} on {ds.name}: {ev.accuracy:.2%}")]
    wrong = ev.misclassified()
    if len(wrong):
        files.append(plots.misclassified(ds.test_images[wrong], ev.labels[wrong], ev.predictions[wrong],
                                         ev.probabilities[wrong], run.classes, out / "misclassified.png"))
    hist = run.history()
    if hist:
        files.append(plots.learning_curves(hist, out / "learning_curves.png", run.spec.name))
    print("\nwrote " + ", ".join(str(f) for f in files) + f", {out / 'evaluation.json'}")
    return 0


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s).strip("_")[:60]


# main ------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is ONE line on stderr (and exit status 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from tegaki.engines import ENGINES, TRAINABLE
    from tegaki.train import MONITORS, OPTIMIZERS, SCHEDULES

    p = Parser(prog="tegaki", description="tegaki: a workbench for handwritten-digit recognition")
    p.add_argument("--version", action="version", version=f"tegaki {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("data", help="list, fetch or describe datasets")
    d.add_argument("action", choices=["list", "fetch", "info"])
    d.add_argument("name", nargs="?", help="mnist, fashion-mnist, kmnist, sklearn-digits or folder:PATH")
    d.add_argument("--data-dir", help="a folder holding the four IDX files")
    d.set_defaults(func=cmd_data)

    s = sub.add_parser("summary", help="print a network's layers, shapes and parameter counts")
    s.add_argument("ref", help="a preset name, a spec file (.toml/.json) or a run folder")
    s.set_defaults(func=cmd_summary)

    t = sub.add_parser("train", help="train a network and write a run folder")
    t.add_argument("--preset", help=f"a named network and recipe (default {DEFAULT_PRESET}; see 'tegaki summary')")
    t.add_argument("--spec", help="a spec file (.toml or .json) instead of a preset")
    t.add_argument("--dataset", default="mnist", help="mnist (default), fashion-mnist, kmnist, folder:PATH")
    t.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    t.add_argument("--epochs", type=int, help="passes over the training set (default: the preset's)")
    t.add_argument("--batch-size", type=int, help="examples per step (default: the preset's)")
    t.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the preset's")
    t.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default: constant)")
    t.add_argument("--weight-decay", type=float, help="L2 penalty (default 0)")
    t.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0)")
    t.add_argument("--patience", type=int, help="early stopping: epochs without a better validation score")
    t.add_argument("--monitor", choices=MONITORS, help="the validation score for early stopping and the weights "
                   "kept: loss or accuracy (default: the preset's, else loss)")
    t.add_argument("--augment", metavar="KINDS", help="distort training batches: affine, elastic, thickness "
                   "joined by + (e.g. affine+elastic), or none (default: the preset's)")
    t.add_argument("--augment-strength", type=float, help="scale of the distortions (default 1; 0 = none)")
    t.add_argument("--valid-size", type=int, help="validation examples carved from training (default 10000)")
    t.add_argument("--seed", type=int, help="seed for split, weights, shuffling and dropout (default 0)")
    t.add_argument("--split-seed", type=int, help="seed of the validation split alone (default: --seed); runs "
                   "with one split seed can be compared and averaged honestly on their validation set")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    t.add_argument("--engine", choices=TRAINABLE, help="torch (default) or numpy")
    t.add_argument("--out", help="the run folder (default runs/<time>-<preset>)")
    t.add_argument("--threads", type=int, help="CPU threads for torch and NumPy (default: all cores, or a "
                   "share of them per --nproc process); fewer helps on a machine busy with other work")
    t.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="torch engine: bf16 mixed precision, "
                   "or auto = bf16 where the CPU/GPU computes it natively (default: the preset's, else fp32)")
    t.add_argument("--compile", action="store_true", default=None, help="torch engine: compile the training step "
                   "with torch.compile (pays off on long runs; compiling takes a minute)")
    t.add_argument("--ensemble", type=int, metavar="N", help="train N models (seeds seed..seed+N-1, one "
                   "validation split) and measure their averaged predictions")
    t.add_argument("--tta", action="store_true", default=None, help="also measure test-time augmentation "
                   "(averaging over shifted and rotated views of each image)")
    t.add_argument("--nproc", type=int, help="train in N processes with DistributedDataParallel (gloo on CPUs, "
                   "NCCL on GPUs; see docs/distributed.md)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, per-class report, confusion matrix and mistakes of a run")
    e.add_argument("run", help="a run folder")
    e.add_argument("--dataset", help="default: the dataset the run was trained on")
    e.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    e.add_argument("--engine", choices=ENGINES, default="torch")
    e.add_argument("--out", help="where to write the pictures (default: the run folder)")
    e.add_argument("--threads", type=int, help="CPU threads for torch and NumPy (default: all cores)")
    e.set_defaults(func=cmd_evaluate)

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"tegaki.commands.{name}")
        except ModuleNotFoundError as ex:
            if ex.name == f"tegaki.commands.{name}" or ex.name == "tegaki.commands":
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the run as its command
    try:
        return args.func(args) or 0
    except TegakiError as e:
        err(f"tegaki: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("tegaki: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a folder that cannot be written, a full disk ...
        err(f"tegaki: error: {e.strerror or e}{f': {e.filename}' if getattr(e, 'filename', None) else ''}")
        return 2
