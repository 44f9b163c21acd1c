"""`tegaki train`: train a network and write a run folder (or resume one, or train an ensemble)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tegaki.commands.common import apply_threads, check_threads, err, load_data, same_dataset
from tegaki.errors import TegakiError

DEFAULT_PRESET = "fast"
# options a resumed run keeps from its checkpoint
RESUME_FIXED = ("preset", "spec", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "label_smoothing",
                "patience", "monitor", "valid_size", "split_seed", "seed", "engine", "out", "augment",
                "augment_strength", "precision", "compile", "ensemble", "tta", "ema", "distill_weight",
                "distill_temperature", "bn_refresh")  # --teacher may name a teacher's new folder (its weights are checked)


def register(subparsers) -> None:
    from tegaki.engines import TRAINABLE
    from tegaki.train import MONITORS, OPTIMIZERS, SCHEDULES

    t = subparsers.add_parser("train", help="train a network and write a run folder")
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
    t.add_argument("--ema", type=float, metavar="DECAY", help="keep a moving average of the weights (e.g. 0.999), "
                   "validated each epoch and saved instead of the last weights (default: the preset's, else none)")
    t.add_argument("--bn-refresh", action=argparse.BooleanOptionalAction, default=None, help="after the last "
                   "epoch, recompute batch-norm statistics on the training images, undistorted and without dropout, as "
                   "evaluation sees them (default: the preset's, else off)")
    t.add_argument("--teacher", action="append", metavar="RUN", help="distillation: also learn this run's "
                   "probabilities on each training image (repeat for several; their average is taken)")
    t.add_argument("--distill-weight", type=float, metavar="W", help="the teachers' share of the loss, "
                   "0 to 1 (default 0.5; the labels have the rest)")
    t.add_argument("--distill-temperature", type=float, metavar="T", help="soften the teachers' and the network's "
                   "probabilities for distillation: softmax(logits / T) (default 1)")
    t.add_argument("--valid-size", type=int, help="validation examples carved from training (default 10000)")
    t.add_argument("--seed", type=int, help="seed for split, weights, shuffling and dropout (default 0)")
    t.add_argument("--split-seed", type=int, help="seed of the validation split alone (default: --seed); runs "
                   "with one split seed can be compared and averaged honestly on their validation set")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    t.add_argument("--engine", choices=TRAINABLE, help="torch (default) or numpy")
    t.add_argument("--out", help="the run folder (default runs/<time>-<preset>)")
    t.add_argument("--threads", type=int, help="CPU threads for torch and NumPy (default: the cores other "
                   "programs leave idle, or a share of all of them per --nproc process)")
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


def cmd_train(args) -> int:
    from tegaki import distributed

    check_threads(args.threads)  # before --nproc starts N processes that would each fail
    if args.ensemble is not None and (args.ensemble < 1 or args.resume or (args.nproc or 1) > 1):
        raise TegakiError("--ensemble N needs N >= 1 and works without --resume and --nproc")
    if args.nproc is not None and args.nproc != 1:  # N copies of this command, one per process
        return distributed.launch(args.nproc, getattr(args, "argv", sys.argv[1:]), dict(os.environ))
    spec, cfg, dataset, out, resume, dist = _resumed(args) if args.resume else _fresh(args)
    if not dist.is_main:
        sys.stdout = open(os.devnull, "w")  # rank 0 speaks for all
    if args.threads is not None or dist.world == 1:  # distributed.setup shares the cores out otherwise
        apply_threads(args.threads)
    if cfg.engine == "torch":
        from tegaki.engines.torch_engine import pick_device

        pick_device(cfg.device)  # --device cuda on a machine without one: say so before loading data
    t0 = time.perf_counter()
    extra = {"seed": cfg.seed} if dataset.startswith("folder:") else {}
    # no fallback when resuming: a run continues on the data it started with, or not at all
    ds = load_data(args, dataset, fallback=(dataset == "mnist" and not args.data_dir and resume is None), **extra)
    cfg.dataset = ds.name
    print(f"data: {ds.name} from {ds.provenance.get('source')} ({time.perf_counter() - t0:.1f} s)")
    command = ["tegaki", *getattr(args, "argv", sys.argv[1:])]
    if os.environ.get("TEGAKI_LAUNCH_ARGV"):  # started by --nproc: record the command the user typed
        command = ["tegaki", *json.loads(os.environ["TEGAKI_LAUNCH_ARGV"])]
    with _sigterm_as_interrupt():
        if args.ensemble or args.tta:  # several models and/or test-time augmentation: see tegaki/ensemble.py
            return _ensemble(args, spec, ds, cfg, out, command)
        return _single(spec, ds, cfg, out, resume, command, dist, dataset)


def _resumed(args):
    """--resume RUN: the run's own spec and settings; only --epochs, --device, --data-dir, --threads change,
    and --teacher, to name where a distilled run's teachers are now (their weights must be the same)."""
    from tegaki import distributed
    from tegaki.train import resume_config, teacher_folders

    fixed = [f"--{'no-' if getattr(args, k) is False else ''}{k.replace('_', '-')}" for k in RESUME_FIXED
             if getattr(args, k, None) is not None]  # as typed: --no-bn-refresh is a False
    if fixed:
        raise TegakiError(f"--resume continues a run with its own settings; drop {', '.join(fixed)} "
                          "(only --epochs, --device, --data-dir, --threads and --teacher may be given)")
    spec, cfg, resume = resume_config(Path(args.resume), args.epochs, args.device)
    if args.teacher:  # the teachers' folders moved: the same runs, found elsewhere (teacher_targets checks them)
        n = len(cfg.teachers or [])
        if len(args.teacher) != n:
            raise TegakiError(f"this run learnt from {n} teacher(s); give --teacher once for each, in the order "
                              f"it started with: {' '.join(cfg.teachers or [])}" if n else
                              "this run learnt from no teachers; drop --teacher")
        cfg.teachers = teacher_folders(args.teacher)
    return spec, cfg, resume["dataset"], Path(args.resume), resume, distributed.setup(os.environ, cfg.device)


def _fresh(args):
    """A new run: the preset or spec file, the options over its recipe, and an unused --out."""
    from tegaki import distributed
    from tegaki.spec import Spec, load_preset
    from tegaki.train import TrainConfig, lr_for, prepare_out

    if args.spec and args.preset:
        raise TegakiError("give --preset or --spec, not both")
    spec = Spec.from_file(args.spec) if args.spec else load_preset(args.preset or DEFAULT_PRESET)
    lr, note = lr_for(spec.train, args.optimizer, args.lr)
    cfg = TrainConfig.for_spec(
        spec, cli=True, epochs=args.epochs, batch_size=args.batch_size, lr=lr, optimizer=args.optimizer,
        schedule=args.schedule, seed=args.seed, device=args.device, patience=args.patience,
        monitor=args.monitor, split_seed=args.split_seed, valid_size=args.valid_size, engine=args.engine,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, dataset=args.dataset,
        augment=args.augment, augment_strength=args.augment_strength, precision=args.precision,
        compile=args.compile, ema=args.ema, teachers=args.teacher, distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature, bn_refresh=args.bn_refresh)
    dist = distributed.setup(os.environ, cfg.device)  # one process of several under torchrun or --nproc
    if note and dist.is_main:
        err(note)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dist.agree(time.time())))  # rank 0's
    return spec, cfg, args.dataset, prepare_out(args.out, spec.name, stamp), None, dist


class _sigterm_as_interrupt:
    """While training, SIGTERM (a scheduler, `kill`, a container stopping) stops like Ctrl-C: the last
    epoch's checkpoint stays, one line says so, and the exit status is 143 (128 + SIGTERM)."""

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        import signal

        from tegaki.errors import Terminated

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean stop short
        if os.environ.get("RANK", "0") != "0":  # a helper process of --nproc: rank 0 keeps the checkpoint
            os._exit(143)
        raise Terminated()

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _ensemble(args, spec, ds, cfg, out, command) -> int:
    from tegaki.ensemble import ensemble_table, overlap_text, train_ensemble

    res = train_ensemble(spec, ds, cfg, out, args.ensemble or 1, tta=args.tta, command=command)
    if res.get("interrupted"):
        return 130
    overlap = overlap_text(res)
    print(f"\n{ensemble_table(res)}\n" + (f"\n{overlap}\n" if overlap else "")
          + f"\nruns saved in {out}; accuracies in {out / 'ensemble.json'}")
    return 0


def _single(spec, ds, cfg, out, resume, command, dist, dataset) -> int:
    from tegaki.train import plural, train

    result = train(spec, ds, cfg, out, resume=resume, command=command,
                   dist=dist if dist.world > 1 else None, log=print if dist.is_main else (lambda m: None))
    if result.interrupted:
        status = 143 if result.terminated else 130
        if dist.is_main:
            err("tegaki: stopped by SIGTERM" if result.terminated else "tegaki: interrupted")
        if dist.world > 1:  # the other processes may be inside a collective that will never complete:
            sys.stdout.flush()  # no goodbye barrier; the checkpoint of the last finished epoch is on disk
            os._exit(status)
        return status
    dist.close()
    if not dist.is_main:
        return 0
    m = result.metrics
    print(f"\nrun saved to {out}")
    print(f"test accuracy {m['test_accuracy']:.2%} (error {m['test_error']:.2%}) on {m['test_size']:,} {ds.name} "
          f"test images; {plural(m['epochs'], 'epoch')}, {m['train_seconds']:.1f} s of training")
    if not same_dataset(ds.name, dataset):  # a fallback took its place
        err(f"note: trained on {ds.name}, not {dataset} (see the message above)")
    print("next: tegaki evaluate " + str(out) + "   (report, confusion matrix, mistakes)")
    if spec.name == "lenet":  # the suggestion below is what was just done: look inside instead
        print(f"      tegaki inspect {out} --index 0   (filters, feature maps, saliency)")
    else:
        print("      tegaki train --preset lenet --epochs 3 --optimizer adam --lr 0.001 --batch-size 128")
    print("      tegaki summary          (every preset, one line each)")
    return 0
