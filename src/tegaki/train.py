"""The training loop, shared by every engine.

    config = TrainConfig.for_spec(spec, epochs=3, optimizer="adam", lr=1e-3)
    result = train(spec, dataset, config, out_dir=Path("runs/x"))

The loop owns everything that is not arithmetic: the seeded validation split, shuffling (the
same order for every engine and device), the learning-rate schedule, early stopping on the
validation loss with the best weights restored, the per-epoch table, checkpoints after every
epoch (so Ctrl-C or a kill loses at most one epoch, and `resume` picks up from there), and the
run folder. Engines only do forward, backward and the optimiser step (engines/__init__.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from tegaki import calibration
from tegaki.data.dataset import Dataset, validation_split
from tegaki.engines import ENGINES, TRAINABLE, make_engine
from tegaki.errors import TegakiError, Terminated  # noqa: F401 (Terminated: where callers have found it)
from tegaki.fileio import TMP_GLOB
from tegaki.export import weights_digest
from tegaki.run import load_weights, make_meta, norm_for, save_run, save_weights
from tegaki.spec import TRAINING_BYTES, BatchNorm, Spec

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
MONITORS = ("loss", "accuracy")
PRECISIONS = ("fp32", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda", "mps")
SEED_LIMIT = 2**32 - 1  # seeds are NumPy SeedSequence entropy; PyTorch's manual_seed takes up to 2^64 - 1
LR_MAX = 1e3  # a learning rate above this diverges at once for every optimiser here
MAX_EPOCHS = 100_000
DEFAULT_VALID = 10_000  # validation examples; on a small training set, at most a fifth of it
MAX_BATCH = 1_000_000
FLAGS = {"teachers": "teacher"}  # training options whose command-line flag is not their name
# each optimiser's usual learning rate, used when --optimizer changes a preset's optimiser without --lr
USUAL_LR = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0}


def lr_for(spec_train: dict, optimizer: str | None, lr: float | None) -> tuple[float | None, str | None]:
    """The learning rate to use, and a note when --optimizer replaced the recipe's optimiser without --lr
    (a preset's SGD rate of 0.1 would make Adam diverge)."""
    if lr is not None or "lr" not in spec_train or optimizer in (None, spec_train.get("optimizer", "adam")):
        return lr, None
    usual = USUAL_LR[optimizer]
    return usual, (f"note: --optimizer {optimizer} without --lr: using lr {usual:g}, {optimizer}'s usual rate, "
                   f"not the recipe's {spec_train['lr']:g} for {spec_train.get('optimizer', 'adam')}")


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # examples per optimiser step
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # sgd | momentum (Nesterov, 0.9) | adam | adamw | adadelta
    momentum: float = 0.9  # for the momentum optimiser
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    schedule: str = "constant"  # constant | step (x0.1 every third of the run) | cosine | onecycle
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    patience: int | None = None  # stop after this many epochs without a better validation score (`monitor`)
    monitor: str = "loss"  # loss | accuracy: the validation score that early stopping and best weights follow
    valid_size: int = DEFAULT_VALID  # examples carved from the training set for validation (stratified)
    seed: int = 0  # one seed for the split, the initial weights, shuffling and dropout
    device: str = "auto"  # auto | cpu | cuda | mps
    engine: str = "torch"  # torch | numpy
    dataset: str = "mnist"  # the dataset's name (recorded in the run)
    augment: str | None = None  # random distortions of training batches: affine, elastic, thickness joined by +
    augment_strength: float = 1.0  # scales every augmentation range (0: identity); see data/augment.py
    precision: str = "fp32"  # fp32 | bf16 (mixed, autocast) | auto (bf16 where the hardware has it); torch only
    compile: bool = False  # run the torch training step through torch.compile
    split_seed: int | None = None  # seed of the validation split alone (None: `seed`); ensembles share one split
    ema: float = 0.0  # decay of a moving average of the weights, validated and saved instead of them (0: none)
    teachers: list | None = None  # run folders whose averaged probabilities the network learns too (distillation)
    distill_weight: float = 0.5  # the teachers' share of the loss (the labels' is the rest)
    distill_temperature: float = 1.0  # the teachers' and the network's logits are divided by this in that share
    bn_refresh: bool = False  # after the last epoch, batch-norm statistics from the undistorted training images

    @property
    def validation_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Every option's range, once, when the config is made (one line per bad value)."""
        _check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_int("seed", self.seed, 0, SEED_LIMIT)
        if self.split_seed is not None:
            _check_int("split_seed", self.split_seed, 0, SEED_LIMIT)
        _check_int("valid_size", self.valid_size, 0, MAX_BATCH * 1000)
        if self.patience is not None:
            _check_int("patience", self.patience, 1, MAX_EPOCHS)
        _check_float("lr", self.lr, 0.0, LR_MAX, low_open=True)
        _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _check_float("augment_strength", self.augment_strength, 0.0, 10.0)
        _check_float("ema", self.ema, 0.0, 1.0, high_open=True)
        _check_float("distill_weight", self.distill_weight, 0.0, 1.0)
        _check_float("distill_temperature", self.distill_temperature, 0.01, 100.0)
        if self.teachers is not None:
            self.teachers = teacher_folders(self.teachers)
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("monitor", self.monitor, MONITORS), ("engine", self.engine, ENGINES),
                                     ("precision", self.precision, PRECISIONS), ("device", self.device, DEVICES)):
            if value not in choices:
                raise TegakiError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.engine not in TRAINABLE:
            raise TegakiError(f"the {self.engine} engine runs trained models only; train with the "
                              f"{' or '.join(TRAINABLE)} engine")
        self.augment_kinds  # noqa: B018 - raises on a bad --augment
        if self.engine != "torch" and (self.precision == "bf16" or self.compile):
            raise TegakiError("bf16 precision and compile are torch engine options; "
                              f"drop them for the {self.engine} engine")

    @property
    def augment_kinds(self) -> tuple[str, ...]:
        """--augment as a tuple of kinds (() for none), checked."""
        from tegaki.data.augment import parse_kinds

        return parse_kinds(self.augment)

    @classmethod
    def for_spec(cls, spec: Spec, *, cli: bool = False, **overrides) -> "TrainConfig":
        """The spec's recipe (its `train` table, checked when the spec was made), then any non-None overrides.
        With `cli`, an option out of range is named as the command line's flag, or as the spec's key."""
        values = dict(spec.train)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "lr" not in values:  # an optimiser named with no rate anywhere: its usual one, not Adam's 0.001
            values["lr"] = USUAL_LR.get(values.get("optimizer", cls.optimizer), cls.lr)
        from tegaki.spec import type_ok

        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:  # fit(..., bogus=3): name the option, not the dataclass
            raise TegakiError(f"unknown training option {unknown[0]!r}; choose from {', '.join(known)}")

        def said(option: str) -> str:  # as the user wrote it: the caller's flag or keyword, or the spec's key
            if overrides.get(option) is not None:
                return f"--{FLAGS.get(option, option).replace('_', '-')}" if cli else option
            return f"spec {spec.name!r}: training option {option}"

        lone = [k for k in ("distill_weight", "distill_temperature") if overrides.get(k) is not None]
        if lone and values.get("teachers") is None:
            raise TegakiError(f"{said(lone[0])} shapes distillation, which needs teachers; give them with "
                              f"{'--teacher RUN (once per teacher)' if cli else 'teachers=[run folders]'}, or drop it")
        for f in fields(cls):
            if f.name in values and not type_ok(values[f.name], str(f.type)):
                kind = str(f.type).replace(" | ", " or ")
                raise TegakiError(f"{said(f.name)} must be {kind}, got {values[f.name]!r}")
        if values.get("bn_refresh") and not _has_batch_norm(spec):
            raise TegakiError(f"{said('bn_refresh')} recomputes batch-norm statistics, and {spec.name!r} has no "
                              "batchnorm layer; drop it")
        try:
            return cls(**values)
        except OptionError as e:  # out of range: Python keeps the plain field name; the command line says where
            if not cli:
                raise
            raise OptionError(e.option, e.problem, said(e.option)) from None


def teacher_folders(teachers) -> list[str]:
    """The teachers as absolute run folders ('bundled' stays itself), so that a resume from another folder
    finds the same runs; relative ones are read from the current folder."""
    if isinstance(teachers, (str, Path)):
        teachers = [teachers]
    if not isinstance(teachers, (list, tuple)) or not teachers or not all(isinstance(t, (str, Path)) for t in teachers):
        raise OptionError("teachers", f"must be a run folder or a list of them, got {teachers!r}")
    if not all(str(t).strip() for t in teachers):
        raise OptionError("teachers", "got an empty name; give each teacher's run folder")
    folders = [str(t) if str(t) == "bundled" else str(Path(t).expanduser().resolve()) for t in teachers]
    twice = next((t for i, t in enumerate(folders) if t in folders[:i]), None)
    if twice is not None:
        raise OptionError("teachers", f"gave {twice} twice; give each teacher once (twice would double its weight)")
    return folders


class OptionError(TegakiError):
    """A training option out of range. `option` is its field name; the message names it as `label`
    (the field name, as Python's keywords and a spec's `train` table spell it, unless told otherwise)."""

    def __init__(self, option: str, problem: str, label: str | None = None):
        self.option, self.problem = option, problem
        super().__init__(f"{label or option} {problem}")


def plural(n: int, word: str) -> str:
    """'1 epoch', '3 epochs'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _check_int(option: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"must be a whole number, got {value!r}")
    if value < low:
        raise OptionError(option, f"must be at least {low}, got {value}")
    if value > high:
        raise OptionError(option, f"must be at most {high:,}, got {value:,}")


def _check_float(option: str, value, low: float, high: float, low_open=False, high_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        what = f"a positive number up to {high:g}" if low_open and low == 0 else (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        raise OptionError(option, f"must be {what}, got {value!r}")


def lr_at(cfg: TrainConfig, step: int, total: int, epoch: int) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total`, in epoch `epoch` (0-based)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** (epoch // max(1, math.ceil(cfg.epochs / 3)))
    t = step / max(1, total)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear warm-up over the first 25% from lr/25, then cosine down to lr/2500
    warm = 0.25
    if t < warm:
        return cfg.lr * (1 / 25 + (1 - 1 / 25) * t / warm)
    u = (t - warm) / (1 - warm)
    return cfg.lr / 2500 + (cfg.lr - cfg.lr / 2500) * 0.5 * (1 + math.cos(math.pi * u))


class Progress:
    """The in-epoch progress bar (stderr, terminals only) and the per-epoch table (stdout)."""

    HEAD = (" epoch | train loss | valid loss | train/valid | valid acc |  train acc |   lr      | seconds\n"
            "-------|------------|------------|-------------|-----------|------------|-----------|--------")
    @staticmethod
    def legend(validating: bool, keeps_best: bool) -> str:
        """What the table's marks mean, for this run: a run without a validation split has no valid columns, and
        its best epoch is judged on the training set."""
        parts = [("train/valid: training loss over validation loss; the lower it falls, the better the network "
                  "fits its training set compared with new data (label smoothing, dropout, augmentation and "
                  "distillation raise the training loss, so it can sit above 1)") if validating
                 else "-: no validation split, so no validation figures"]
        if keeps_best:
            parts.append(f"*: the best {'validation' if validating else 'training'} score so far, "
                         "whose weights the run keeps")
        return "; ".join(parts)

    def __init__(self, out: Callable[[str], None], bar_stream=None):
        self.out = out
        self.bar_stream = bar_stream if bar_stream is not None else sys.stderr
        tty = getattr(self.bar_stream, "isatty", lambda: False)()
        # a terminal, or a Jupyter kernel (where tqdm.auto draws a widget); never a file or a pipe
        self.enabled = tty or (self.bar_stream is sys.stderr and "ipykernel" in sys.modules)
        self._bar = None
        self.last = 0.0

    def bar(self, epoch: int, epochs: int, done: int, total: int, stats: Callable[[], tuple]) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=False, unit="step",
                             file=self.bar_stream, mininterval=0.25, ascii=" #",
                             bar_format="{desc} [{bar:24}] {n_fmt}/{total_fmt}{postfix}")
        now = time.monotonic()
        if now - self.last >= 0.25 or done == total:
            self.last = now
            loss, acc = stats()
            self._bar.set_postfix_str(f"loss {loss:.4f} acc {acc:6.2%}", refresh=False)
        self._bar.update(done - self._bar.n)
        if done == total:
            self._bar.refresh()  # the last step, shown even when it came quickly

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def row(self, r: dict) -> None:
        mark = " *" if r.get("best") else ""
        if r["valid_loss"] is None:  # no validation split
            valid = f"{'-':>10} | {'-':>11} | {'-':>8}"
        else:
            ratio = r["train_loss"] / r["valid_loss"] if r["valid_loss"] else float("nan")
            valid = f"{r['valid_loss']:10.5f} | {ratio:11.5f} | {r['valid_acc']:8.2%}"
        self.out(f"{int(r['epoch']):6d} | {r['train_loss']:10.5f} | {valid} | "
                 f"{r['train_acc']:9.2%} | {r['lr']:9.3g} | {r['seconds']:6.1f}{mark}")


@dataclass
class TrainResult:
    path: Path | None  # the run folder (None: trained in memory)
    metrics: dict
    history: list[dict]
    interrupted: bool = False
    terminated: bool = False  # interrupted by SIGTERM rather than Ctrl-C
    run: object = None  # the trained model as a tegaki.run.Run (weights in memory), when training finished
    # or was interrupted in memory
    initial: dict | None = None  # the weights training started from


CHECKPOINT = "checkpoint.safetensors"


def _checkpoint(out: Path, engine, state: dict, best_weights, ema=None) -> None:
    """Weights, optimiser state, best weights, the weights' moving average and the loop's state in ONE
    file, written atomically.

    The loop's state (JSON) rides in the safetensors metadata, so a Ctrl-C or a kill at any
    moment leaves either the previous epoch's checkpoint or this one, never a mix of the two.
    """
    arrays = {f"model.{k}": v for k, v in engine.get_weights().items()}
    opt_arrays, opt_meta = engine.optimizer_state()
    arrays.update(opt_arrays)
    if best_weights is not None:
        arrays.update({f"best.{k}": v for k, v in best_weights.items()})
    if ema is not None:
        arrays.update({f"ema.{k}": v for k, v in ema.items()})
    save_weights(out / CHECKPOINT, arrays, {"state": json.dumps({**state, "optimizer": opt_meta})})


@dataclass
class _Run:
    """What one training run is made of, set up once (see `_setup`) and read by the loop."""

    spec: Spec
    ds: Dataset
    cfg: TrainConfig
    out: Path | None  # None: in memory, no files at all
    engine: object  # an Engine (engines/__init__.py)
    norm: dict  # the input normalisation, measured on the training split
    init: dict  # the initial weights (saved with the run, for "filters before training")
    augment: object  # an Augmenter, or None
    train_data: object  # the engine's own form of the training split
    valid_data: object  # ... of the validation split, or None for --valid-size 0
    n_train: int
    n_valid: int
    steps: int  # optimiser steps per epoch
    meta: dict  # model.json, all but the weights
    prog: Progress
    log: Callable[[str], None]
    dist: object  # tegaki.distributed.Dist, or None
    setup_seconds: float = 0.0
    valid_labels: np.ndarray | None = None  # the validation split's labels (for the calibration)

    @property
    def writes(self) -> bool:
        return self.out is not None and (self.dist is None or self.dist.is_main)


@dataclass
class LoopState:
    """What the loop carries from one epoch to the next (and a checkpoint carries across a restart)."""

    history: list = field(default_factory=list)  # one row per finished epoch
    best: dict = field(default_factory=lambda: {"loss": math.inf, "epoch": 0})  # the best epoch's scores
    best_weights: dict | None = None  # kept only with early stopping (patience)
    ema: dict | None = None  # the moving average of the weights (--ema), updated after every step
    start: int = 1  # the first epoch to run
    stopped_early: bool = False


def train(spec: Spec, ds: Dataset, cfg: TrainConfig, out: Path | None, log: Callable[[str], None] = print,
          resume: dict | None = None, command: list[str] | None = None, bar_stream=None,
          dist=None, split: tuple | None = None, weights: dict | None = None) -> TrainResult:
    """Train `spec` on `ds` as `cfg` says; write the run folder `out`; return its metrics.

    With `out` None nothing is written (no checkpoints, no run folder): the trained model is
    `result.run`, and Ctrl-C keeps the weights reached so far. `split` = (train indices, validation
    indices) into the training images replaces the seeded validation split. `weights` start the training
    instead of the seeded initial weights (to continue training a model).

    `resume` is a checkpoint's state already read (see `read_checkpoint`): training continues
    after its last finished epoch with the weights and optimiser state saved there, and ends
    exactly as an uninterrupted run would (the shuffling, dropout and augmentation of every
    epoch are seeded by (seed, epoch)).

    Ctrl-C returns a TrainResult with `interrupted` set, leaving the last epoch's checkpoint;
    a run stopped before its first epoch finished, or by an error, leaves no files behind.

    `dist` (tegaki.distributed.Dist): one process of several; batches are sharded between them and
    only rank 0 writes files.
    """
    run = _setup(spec, ds, cfg, None if out is None else Path(out), log, command, bar_stream, dist, resume, split,
                 weights)
    state = _resume_state(run, resume) if resume is not None else LoopState()
    if cfg.ema and state.ema is None:
        state.ema = run.engine.get_weights()  # the average starts at the initial weights (copies)
    run.log(f"training {spec.name} ({spec.num_params():,} parameters) on {ds.name}: {run.n_train:,} train, "
            f"{run.n_valid:,} valid, {len(ds.test_labels):,} test; engine {cfg.engine} on {run.engine.device}")
    run.log(Progress.HEAD)
    for r in state.history:
        run.prog.row(r)
    created = run.out is not None and not run.out.exists()
    if run.writes:
        run.out.mkdir(parents=True, exist_ok=True)
    try:
        for epoch in range(state.start, cfg.epochs + 1):
            if _epoch(run, state, epoch):
                break
        run.log(Progress.legend(run.valid_data is not None, bool(cfg.patience)))
        if run.dist is not None and not run.dist.is_main:
            return TrainResult(run.out, {}, state.history)  # rank 0 measures the test set and writes the run
        return _finish(run, state)
    except (KeyboardInterrupt, Terminated) as e:
        result = _interrupted(run, created, state)
        result.terminated = isinstance(e, Terminated)
        return result
    except BaseException:
        # an error (a diverged loss, a full disk ...): leave no half-written run behind
        if resume is None and run.out is not None:
            (run.out / CHECKPOINT).unlink(missing_ok=True)
            _remove_if_empty(run.out, created)
        raise


def _setup(spec, ds, cfg, out, log, command, bar_stream, dist, resume, split=None, weights=None) -> _Run:
    """Check the data fits the network, split it, measure the normalisation, build the engine."""
    if spec.num_classes != len(ds.classes):
        raise TegakiError(f"the network has {spec.num_classes} outputs but {ds.name} has {len(ds.classes)} classes; "
                          "change the last dense layer's units")
    need = 3 * 4 * spec.activations_per_example()  # forward outputs, their gradients and the layers' scratch
    if cfg.batch_size * need > TRAINING_BYTES:
        raise TegakiError(f"a batch of {cfg.batch_size:,} examples of this network needs about "
                          f"{cfg.batch_size * need / 2**30:.0f} GiB to train, more than the "
                          f"{TRAINING_BYTES / 2**30:.0f} GiB tegaki allows; use --batch-size "
                          f"{max(1, TRAINING_BYTES // need)} or less, or a network with smaller maps")
    if len(spec.input_shape) == 3 and spec.input_shape[0] != 1:
        raise TegakiError(f"{ds.name} images have one (grey) channel, the network expects {spec.input_shape[0]}; "
                          f"give its input as [1, {spec.input_shape[1]}, {spec.input_shape[2]}]")
    if not spec.takes_images(ds.train_images.shape[1:]):
        raise TegakiError(f"{ds.name} images are {ds.train_images.shape[1:]}, the network expects "
                          f"{tuple(spec.input_shape[-2:])}")
    if split is None and cfg.valid_size >= len(ds.train_labels) and cfg.valid_size != DEFAULT_VALID:  # the default shrinks
        raise TegakiError(f"--valid-size {cfg.valid_size:,} leaves nothing to train on: {ds.name} has "
                          f"{len(ds.train_labels):,} training images; choose a smaller --valid-size")
    t_setup = time.perf_counter()
    tr, va = split if split is not None else validation_split(ds.train_labels, cfg.valid_size, cfg.validation_seed)
    if split is None and len(va) < cfg.valid_size:
        log(f"validation split: {len(va):,} of {len(ds.train_labels):,} training images "
            f"(--valid-size {cfg.valid_size:,} would leave too few to train on)")
    if len(tr) < 2 and _has_batch_norm(spec):
        raise TegakiError(f"a network with batch norm needs at least 2 training images (a batch's statistics), "
                          f"and {ds.name} leaves {len(tr)} to train on; give more images")
    if cfg.batch_size == 1 and any(isinstance(l, BatchNorm) and len(s) == 1 for l, s in zip(spec.layers, spec.in_shapes())):
        raise TegakiError("a batch norm after a dense layer takes its statistics from the batch, and a batch of 1 "
                          "has none; train with a batch size of 2 or more")
    norm = norm_for(spec, ds.train_images[tr])
    init = spec.init_weights(cfg.seed) if weights is None else weights
    from tegaki.data.augment import Augmenter

    augment = Augmenter.parse(cfg.augment, background=-norm["mean"] / norm["std"], strength=cfg.augment_strength)
    engine = make_engine(cfg.engine, spec, init, device=cfg.device)
    engine.configure(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.label_smoothing, cfg.distill_weight,
                     cfg.distill_temperature)
    engine.tune(cfg.precision, cfg.compile)  # speed options (a no-op for the NumPy engine)
    if dist is not None:
        dist.wrap(engine)  # DistributedDataParallel
    meta = make_meta(spec, ds.classes, norm, ds.provenance, cfg.seed, asdict(cfg), command)
    if resume is not None and resume.get("command"):
        meta["command"], meta["resumed_with"] = resume["command"], meta["command"]
    targets, teachers = teacher_targets(cfg, ds, tr, va, log, resume.get("teachers", []) if resume else None,
                                        device=str(engine.device))
    if teachers:
        meta["teachers"] = teachers  # which runs, by their weights' checksums (a resume checks them)
    return _Run(spec, ds, cfg, out, engine, norm, init, augment,
                train_data=engine.prepare(ds.train_images[tr], ds.train_labels[tr], norm, targets),
                valid_data=engine.prepare(ds.train_images[va], ds.train_labels[va], norm) if len(va) else None,
                n_train=len(tr), n_valid=int(len(va)), steps=steps_per_epoch(spec, len(tr), cfg.batch_size), meta=meta,
                prog=Progress(log, bar_stream), log=log, dist=dist, setup_seconds=time.perf_counter() - t_setup,
                valid_labels=np.asarray(ds.train_labels[va]) if len(va) else None)


_ANSWERS: dict = {}  # the teachers' softened answers on one set of training images: {"images": digest, key: (N, K)}


def teacher_targets(cfg: TrainConfig, ds: Dataset, tr: np.ndarray, va: np.ndarray,
                    log: Callable[[str], None] = print, expect: list | None = None,
                    device: str = "cpu") -> tuple[np.ndarray | None, list]:
    """Distillation (Hinton, Vinyals and Dean 2015): the mean over the teachers of softmax(logits / T) on each
    training image, T = distill_temperature, which the engines learn beside the labels (numpy_layers.distill_loss:
    (1 - w) x the labels' cross-entropy + w T^2 x the KL divergence of the softened network from it, w =
    distill_weight). The teachers see each image once, undistorted; an augmented copy keeps its image's targets.
    Their answers are kept for the next training on the same images (the members of an ensemble share them).

    Returns (targets or None without teachers, one record per teacher: its run folder, the sha256 of its
    weights, and how many of the validation images `va` it trained on when that can be told). `expect`, the
    records of the run being resumed: a teacher whose weights changed since is refused."""
    if not cfg.teachers:
        return None, []
    if cfg.distill_weight == 0:
        log("distillation weight 0: the teachers are not asked (the labels alone are learnt)")
        return None, []
    from tegaki.numerics import softmax

    images, labels, k = ds.train_images[tr], np.asarray(ds.train_labels[tr]), len(ds.classes)
    mean, records = np.zeros((len(tr), k)), []
    which = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()  # these images, in this order
    if _ANSWERS.get("images") != which:
        _ANSWERS.clear()
        _ANSWERS["images"] = which
    for i, ref in enumerate(cfg.teachers):
        before = None if expect is None else expect[i] if i < len(expect) and isinstance(expect[i], dict) else {}
        teacher = _load_teacher(ref, ds, device, before)
        record = {"run": ref, "sha256": weights_digest(teacher.run.weights)}
        if before is not None and before.get("sha256") != record["sha256"]:
            raise TegakiError(f"teacher {ref} is not the run this training started with (its weights differ); "
                              "resume with the same teachers, or start a new run")
        key = (record["sha256"], cfg.distill_temperature)
        if key not in _ANSWERS:
            _ANSWERS[key] = softmax(teacher.logits(images).astype(np.float64) / cfg.distill_temperature)
        mean += _ANSWERS[key]
        seen = _seen_validation(teacher.run, ds, va)
        if seen:
            record["validation_images_seen"] = seen
            log(f"note: teacher {ref} was trained on {seen:,} of the {len(va):,} validation images, so the "
                "validation figures will be optimistic; give teachers trained with the same validation split")
        records.append(record)
    mean /= len(cfg.teachers)
    agree = float((mean.argmax(1) == labels).mean()) if len(tr) else 1.0
    log(f"distillation: {plural(len(cfg.teachers), 'teacher')}, weight {cfg.distill_weight:g}, temperature "
        f"{cfg.distill_temperature:g}; their average agrees with {agree:.2%} of the training labels "
        "(the training loss is now the distillation loss)")
    return mean.astype(np.float32), records


def _load_teacher(ref: str, ds: Dataset, device: str, resuming: dict | None):
    """A teacher run as a Predictor, if it can teach on `ds`: the same classes, images of the same size, and
    not trained on this run's test images. `resuming`: the run being resumed's record of it (None: a new run)."""
    from tegaki.predict import Predictor
    from tegaki.run import members_hint

    try:
        teacher = Predictor.load(ref, device=device)  # where the network trains (a GPU answers faster)
    except TegakiError as e:
        hint = members_hint(ref) or (
            "; if it moved, resume with --teacher NEW_FOLDER for each teacher, in order" if resuming is not None else "")
        raise TegakiError(f"teacher {ref}: {e}{hint}") from None
    if list(teacher.classes) != list(ds.classes):
        raise TegakiError(f"teacher {ref} tells apart {_some(teacher.classes)}, {ds.name} has "
                          f"{_some(ds.classes)}; give teachers trained on the same classes")
    if not teacher.spec.takes_images(ds.train_images.shape[1:]):
        raise TegakiError(f"teacher {ref} expects {tuple(teacher.spec.input_shape[-2:])} images, {ds.name}'s are "
                          f"{ds.train_images.shape[1:]}; give teachers trained on images of that size")
    _check_test_split(ref, teacher.run, ds)
    return teacher


def _some(classes) -> str:
    """'10 classes (0, 1, 2, 3 ...)'."""
    names = ", ".join(map(str, list(classes)[:4])) + (" ..." if len(classes) > 4 else "")
    return f"{len(classes):,} class{'' if len(classes) == 1 else 'es'} ({names})"


def _check_test_split(ref: str, teacher, ds: Dataset) -> None:
    """An image folder without train/ and test/ sub-folders holds out a seeded 20% as its test set: a teacher
    that split the same folder with another seed trained on some of this run's test images. Refused."""
    mine = ds.provenance.get("split_seed") if isinstance(ds.provenance, dict) else None
    data = teacher.meta.get("data") if isinstance(teacher.meta.get("data"), dict) else {}
    if mine is None or data.get("dataset") != ds.provenance.get("dataset"):
        return
    theirs = data.get("split_seed", (teacher.meta.get("config") or {}).get("seed"))
    if theirs != mine:
        raise TegakiError(f"teacher {ref} held out another test set of {ds.name} (seed {theirs}; this run's is "
                          f"{mine}), so it trained on some of this run's test images; train with --seed {theirs}, "
                          f"or give teachers trained with --seed {mine}")


def _training_files(provenance) -> tuple | None:
    """The checksums of a dataset's two training files, which say what its training images are (None: unknown,
    as for arrays and image folders)."""
    files = provenance.get("files") if isinstance(provenance, dict) else None
    if not isinstance(files, dict):
        return None
    sums = sorted(str(r["sha256"]) for name, r in files.items()
                  if "train" in str(name) and isinstance(r, dict) and r.get("sha256"))
    return tuple(sums) if len(sums) == 2 else None


def run_split(run) -> tuple[int, int]:
    """(split seed, validation size) a run was trained with, from its model.json; (0, 0) for a run that kept
    no validation split, whatever its seed."""
    cfg = run.meta.get("config", {})
    seed = cfg.get("split_seed")
    valid_size = cfg.get("valid_size", 0)
    if not valid_size:
        return 0, 0
    return (cfg.get("seed", 0) if seed is None else seed), valid_size


def _seen_validation(teacher, ds: Dataset, va: np.ndarray) -> int:
    """How many of the validation images `va` the teacher run trained on: 0 when that cannot be told (data from
    other files, or from arrays or an image folder, a different number of images, no record of its split)."""
    config, m = teacher.meta.get("config"), teacher.metrics
    if not len(va) or not isinstance(config, dict) or not isinstance(config.get("valid_size"), int):
        return 0
    mine = _training_files(ds.provenance)
    same_data = mine is not None and mine == _training_files(teacher.meta.get("data")) and \
        m.get("train_size", -1) + m.get("valid_size", 0) == len(ds.train_labels)
    seed, valid_size = run_split(teacher)
    if not same_data or not isinstance(seed, int):
        return 0
    try:
        their_train, _ = validation_split(ds.train_labels, valid_size, seed)
    except TegakiError:
        return 0
    return int(np.isin(va, their_train).sum())


def _resume_state(run: _Run, resume: dict) -> LoopState:
    """Weights, optimiser state and the loop's state from the checkpoint of the last finished epoch."""
    arrays = load_weights(run.out / CHECKPOINT)
    run.engine.set_weights({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    try:
        run.engine.load_optimizer_state({k: v for k, v in arrays.items() if k.startswith("opt.")}, resume["optimizer"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise TegakiError(f"{run.out / CHECKPOINT}: corrupt optimiser state ({type(e).__name__}); start a new run") \
            from None
    best_weights = {k[5:]: v for k, v in arrays.items() if k.startswith("best.")} or None
    ema = {k[4:]: v for k, v in arrays.items() if k.startswith("ema.")} or None
    stopped = bool(resume.get("stopped_early"))
    # a run that had stopped early has only its final evaluation left
    state = LoopState(resume["history"], resume["best"], best_weights, ema=ema,
                      start=run.cfg.epochs + 1 if stopped else resume["epoch"] + 1, stopped_early=stopped)
    for tmp in run.out.glob(TMP_GLOB):  # a temporary file left by a process killed mid-write
        tmp.unlink()
    run.log(f"resuming {run.out} after epoch {resume['epoch']}")
    return state


def _has_batch_norm(spec: Spec) -> bool:
    return any(isinstance(l, BatchNorm) for l in spec.layers)


def steps_per_epoch(spec: Spec, n: int, batch_size: int) -> int:
    """Optimiser steps in one pass over n examples; the last batch takes the rest. A network with batch norm
    never gets a last batch of one: a batch norm after a dense layer cannot take a batch's statistics from a
    single example (PyTorch refuses it), so that example joins the batch before it."""
    steps = math.ceil(n / batch_size)
    if n % batch_size == 1 and steps > 1 and _has_batch_norm(spec):
        steps -= 1
    return steps


def _epoch(run: _Run, state: LoopState, epoch: int) -> bool:
    """One pass over the training split, then validation, the table row and a checkpoint.
    Returns whether early stopping ends the run here."""
    cfg, engine, dist = run.cfg, run.engine, run.dist
    t0 = time.perf_counter()
    engine.seed(cfg.seed * 100_003 + epoch)
    perm = np.random.default_rng([cfg.seed, epoch]).permutation(run.n_train)
    if run.augment is not None:
        run.augment.seed(cfg.seed, epoch)
    engine.reset_stats()
    lr = cfg.lr
    for b in range(run.steps):
        lr = lr_at(cfg, (epoch - 1) * run.steps + b, run.steps * cfg.epochs, epoch - 1)
        engine.set_lr(lr)
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size if b + 1 < run.steps else None]  # the last: the rest
        x, *y = engine.take(run.train_data, dist.shard(idx) if dist is not None else idx)  # y: labels[, targets]
        engine.train_step(run.augment(x) if run.augment is not None else x, *y)
        if state.ema is not None:
            ema_update(state.ema, engine.get_weights(), cfg.ema, (epoch - 1) * run.steps + b)
        run.prog.bar(epoch, cfg.epochs, b + 1, run.steps, engine.read_stats)
    train_loss, train_acc = engine.read_stats()
    if dist is not None:
        dist.sync(engine)  # rank 0's weights and batch-norm statistics everywhere
    valid_loss = valid_acc = None  # --valid-size 0: no validation split, nothing to show
    # with --ema, the average is what is validated and kept as best (no swap when nothing is validated or kept)
    with _weights_in(engine, state.ema if run.valid_data is not None or cfg.patience else None):
        if run.valid_data is not None:
            valid_loss, valid_acc, _ = engine.evaluate(run.valid_data)
        snapshot = engine.get_weights() if cfg.patience else None
    if not math.isfinite(train_loss):
        raise TegakiError(f"training diverged in epoch {epoch} (loss {train_loss}); lower the learning rate (lr)")
    run.prog.clear()
    row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "train_acc": train_acc,
           "valid_acc": valid_acc, "lr": lr, "seconds": time.perf_counter() - t0}
    # without a validation split, early stopping and best weights follow the training statistics
    score_loss, score_acc = (train_loss, train_acc) if run.valid_data is None else (valid_loss, valid_acc)
    if dist is not None:  # every rank makes rank 0's early-stopping call (rank 0 writes the history)
        score_loss, score_acc = dist.agree(score_loss), dist.agree(score_acc)
    is_best = _better(cfg.monitor, score_loss, score_acc, state.best)
    if is_best:
        state.best = {"loss": score_loss, "epoch": epoch, "acc": score_acc}
        if cfg.patience:
            state.best_weights = snapshot
    state.history.append(row)
    state.stopped_early = bool(cfg.patience and epoch - state.best["epoch"] >= cfg.patience)
    if run.writes:  # before the row is shown: Ctrl-C right after it must find the epoch saved
        _checkpoint(run.out, engine, {"format": "tegaki-checkpoint/1", "epoch": epoch, "history": state.history,
                                      "best": state.best, "stopped_early": state.stopped_early,
                                      "config": asdict(cfg), "spec": run.spec.to_dict(), "dataset": run.ds.name,
                                      "command": run.meta["command"], "teachers": run.meta.get("teachers", [])},
                    state.best_weights, state.ema)
    run.prog.row({**row, "best": is_best and cfg.patience})
    if state.stopped_early:
        run.log(f"early stopping: no better validation {cfg.monitor} for {plural(cfg.patience, 'epoch')}; "
                f"restoring the weights of epoch {state.best['epoch']}")
    return state.stopped_early


def ema_update(ema: dict, weights: dict, decay: float, step: int) -> None:
    """Move the average toward step `step`'s weights (0-based), in place: e <- d e + (1 - d) w, with
    d = min(decay, (1 + step) / (10 + step)), so the average leaves the initial weights quickly and
    settles at `decay` (the warm-up of TensorFlow's ExponentialMovingAverage). Batch-norm statistics
    are averaged like the weights."""
    d = min(decay, (1 + step) / (10 + step))
    for k, w in weights.items():
        e = ema[k]
        e *= d
        e += (1 - d) * w


@contextmanager
def _weights_in(engine, weights: dict | None):
    """`with _weights_in(engine, weights):` the engine holds `weights` inside, its own weights after
    (nothing changes when `weights` is None)."""
    if weights is None:
        yield
        return
    own = engine.get_weights()
    engine.set_weights(weights)
    try:
        yield
    finally:
        engine.set_weights(own)


def _interrupted(run: _Run, created: bool, state: LoopState) -> TrainResult:
    """Ctrl-C or SIGTERM: keep the last epoch's checkpoint, or leave nothing if there is none."""
    run.prog.clear()
    history = state.history
    if run.out is None:  # in memory: the model keeps the weights (or with --ema their average) of the last step
        if state.ema is not None:
            run.engine.set_weights(state.ema)
        refresh = run.cfg.bn_refresh and len(history) == run.cfg.epochs  # every epoch done: stopped in the refresh
        run.log(f"interrupted: stopped after {plural(len(history), 'finished epoch')}; the model keeps the "
                f"{'moving average of the weights' if state.ema is not None else 'weights'} it has reached"
                + ("; the batch-norm refresh did not finish, so it keeps the statistics training left" if refresh else ""))
        return TrainResult(None, {}, list(history), interrupted=True, run=_as_run(run, {}), initial=run.init)
    if (run.out / CHECKPOINT).is_file():
        state = read_checkpoint(run.out)
        run.log(f"interrupted: stopped cleanly; the checkpoint after epoch {state['epoch']} is saved in {run.out}; "
                f"continue with: tegaki train --resume {run.out}")
        return TrainResult(run.out, {}, state["history"], interrupted=True)
    _remove_if_empty(run.out, created)
    run.log("interrupted before the first epoch finished: nothing was saved; start the run again")
    return TrainResult(run.out, {}, [], interrupted=True)


def _remove_if_empty(out: Path, created: bool) -> None:
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _better(monitor: str, loss: float, acc: float, best: dict) -> bool:
    """Whether this epoch's validation score beats the best so far (accuracy ties go to the lower loss)."""
    if monitor == "accuracy":
        best_acc = best.get("acc", -math.inf)
        return acc > best_acc or (acc == best_acc and loss < best["loss"])
    return loss < best["loss"]


def _finish(run: _Run, state: LoopState) -> TrainResult:
    """Restore the best weights, measure the test set once (if there is one), write the run folder."""
    cfg, engine, ds = run.cfg, run.engine, run.ds
    if state.best_weights is not None:
        engine.set_weights(state.best_weights)
    elif state.ema is not None:
        engine.set_weights(state.ema)
    bn_seconds = _refresh_batchnorm(run) if cfg.bn_refresh else None
    t_test = time.perf_counter()
    n_test = len(ds.test_labels)
    test = {"test_accuracy": None, "test_error": None, "test_loss": None, "test_mistakes": None}
    if n_test:
        test_loss, _, test_logits = engine.evaluate(engine.prepare(ds.test_images, ds.test_labels, run.norm))
        # accuracy and error as exact fractions of the test set (not a float32 mean)
        n_wrong = int((np.asarray(test_logits).argmax(axis=1) != np.asarray(ds.test_labels)).sum())
        test = {"test_accuracy": (n_test - n_wrong) / n_test, "test_error": n_wrong / n_test, "test_loss": test_loss,
                "test_mistakes": n_wrong}
    train_seconds = float(sum(r["seconds"] for r in state.history))
    final_valid = engine.evaluate(run.valid_data) if run.valid_data is not None else (None, None, None)
    metrics = {
        **test, "valid_accuracy": final_valid[1], "valid_loss": final_valid[0],
        "epochs": len(state.history), "best_epoch": state.best["epoch"] if cfg.patience else len(state.history),
        "stopped_early": state.stopped_early, "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / max(1, len(state.history)), 3),
        "setup_seconds": round(run.setup_seconds, 3), "test_seconds": round(time.perf_counter() - t_test, 3),
        "bn_refresh_seconds": bn_seconds,
        "dataset": ds.name, "preset": run.spec.name, "engine": cfg.engine, "precision": engine.precision,
        "device": str(engine.device), "seed": cfg.seed,
        "train_size": run.n_train, "valid_size": run.n_valid, "test_size": n_test,
    }
    # a run folder is always calibrated; a model fitted in memory when it has a validation split to fit on
    if run.out is not None or run.valid_data is not None:
        run.meta["calibration"] = _calibration(run, final_valid[2])
        run.log(_calibration_line(run.meta["calibration"]))
    if run.out is not None:
        save_run(run.out, run.spec, engine.get_weights(), run.meta, state.history, metrics, initial=run.init)
        (run.out / CHECKPOINT).unlink(missing_ok=True)
    return TrainResult(run.out, metrics, state.history, False, run=_as_run(run, metrics), initial=run.init)


def _refresh_batchnorm(run: _Run) -> float:
    """The recipe's last step (bn_refresh): batch-norm statistics from the training images, undistorted, as
    evaluation sees them (tegaki/batchnorm.py). Returns the seconds it took."""
    from tegaki import batchnorm

    layers = len(batchnorm.layers(run.spec))
    run.log(f"batch norm: recomputing the statistics of {plural(layers, 'layer')} on the {run.n_train:,} training "
            f"images, undistorted, without dropout (a partial pass over them per layer) ...")
    t = time.perf_counter()
    batchnorm.refresh(run.engine, run.train_data[0])
    seconds = time.perf_counter() - t
    run.log(f"batch norm: statistics recomputed ({seconds:.1f} s)")
    return round(seconds, 3)


def _calibration(run: _Run, valid_logits) -> dict:
    """Fit the temperature and the "not a digit" thresholds (tegaki/calibration.py) on the validation
    split, or, for a recipe that holds nothing back, on a seeded slice of the training images."""
    if valid_logits is not None:
        return calibration.fit(valid_logits, run.valid_labels, "validation split", held_out=True)
    ds = run.ds
    idx = calibration.training_slice(len(ds.train_labels), run.cfg.seed)
    logits = run.engine.evaluate(run.engine.prepare(ds.train_images[idx], ds.train_labels[idx], run.norm))[2]
    return calibration.fit(logits, ds.train_labels[idx], f"{len(idx):,} training images (no validation split)",
                           held_out=False)


def _calibration_line(c: dict) -> str:
    return (f"calibration: temperature {c['temperature']:.3f} fitted on the {c['fitted_on']}; "
            f"ECE {c['ece_before']:.2%} -> {c['ece_after']:.2%}, NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}"
            + ("" if c["held_out"] else " (optimistic: these images were trained on)"))


def _as_run(run: _Run, metrics: dict):
    """The model as it stands, as a Run (what every reader of a run folder takes), held in memory."""
    from tegaki.run import Run

    return Run(run.out, run.spec, run.engine.get_weights(), run.meta, metrics)


def read_checkpoint(out: Path) -> dict:
    """The loop's state saved with the last finished epoch (see `_checkpoint`)."""
    from safetensors import SafetensorError, safe_open

    out = Path(out)
    cp = out / CHECKPOINT
    if not out.is_dir():
        raise TegakiError(f"--resume {out}: no such run folder")
    if (out / "model.json").is_file() and not cp.is_file():
        raise TegakiError(f"{out}: this run already finished; train a new one (choose a new --out)")
    if not cp.is_file():
        raise TegakiError(f"{out}: no checkpoint to resume from ({CHECKPOINT} is missing; a run interrupted "
                          "before its first epoch finished has none): start a new run")
    try:
        with safe_open(str(cp), "np") as f:
            state = json.loads((f.metadata() or {})["state"])
        _check_state(state)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise TegakiError(f"{cp}: corrupt checkpoint ({type(e).__name__}: {str(e)[:80]}); start a new run") from None
    return state


def _check_state(state) -> None:
    """The loop state a checkpoint carries, checked kind by kind (ValueError names the first wrong part), so a
    damaged or crafted file is refused here rather than failing somewhere in the loop."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(state, dict) or state.get("format") != "tegaki-checkpoint/1":
        raise ValueError("not a tegaki checkpoint")
    for key, kind in (("spec", dict), ("config", dict), ("history", list), ("best", dict), ("optimizer", dict)):
        if not isinstance(state.get(key), kind):
            raise ValueError(f"{key} is not a {kind.__name__}")
    if not (whole(state.get("epoch")) and state["epoch"] >= 1 and len(state["history"]) == state["epoch"]):
        raise ValueError("epoch does not match the history")
    if not all(isinstance(r, dict) and whole(r.get("epoch")) for r in state["history"]):
        raise ValueError("history rows are damaged")
    best = state["best"]
    if not (isinstance(best.get("loss"), (int, float)) and whole(best.get("epoch"))):
        raise ValueError("best is damaged")


def resume_config(out: Path, epochs: int | None = None, device: str | None = None) -> tuple[Spec, TrainConfig, dict]:
    """The spec, the config and the checkpoint's state to continue the run in `out` with.

    A resumed run keeps its own settings; only the number of epochs (not fewer than it has run) and
    the device may change.
    """
    out = Path(out)
    state = read_checkpoint(out)
    spec = Spec.from_dict(state["spec"], where=str(out / CHECKPOINT))
    values = dict(state["config"])
    if epochs:
        if epochs < state["epoch"]:
            raise TegakiError(f"{out} has already trained {state['epoch']} epochs; --epochs must be at least that")
        values["epochs"] = epochs
    if device:
        values["device"] = device
    try:
        return spec, TrainConfig(**values), state
    except OptionError as e:  # only --epochs and --device come from the command line; the rest is the run's
        label = "--epochs" if e.option == "epochs" and epochs else f"{out}: the checkpoint's {e.option}"
        raise OptionError(e.option, e.problem, label) from None
    except TypeError as e:
        raise TegakiError(f"{out}: checkpoint written by another version of tegaki ({e}); start a new run") from None


def prepare_out(out: Path | None, name: str, stamp: str) -> Path:
    """The folder a new run goes to: `out`, or runs/<stamp>-<name>; refused if it holds anything."""
    # the spec's name is the user's text: only letters, digits, '.', '-' and '_' reach the folder name, so a name
    # such as ../../x cannot place the run outside runs/
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"
    out = Path(out) if out else Path("runs") / f"{stamp}-{safe}"
    if (out / "model.json").exists() or (out / CHECKPOINT).exists():
        raise TegakiError(f"--out {out} already holds a run; choose another --out, or --resume it")
    if occupied(out):
        raise TegakiError(f"--out {out} already exists and is not an empty folder; choose a new --out")
    return out


def occupied(out: Path) -> bool:
    """Whether `out` holds something a new run would overwrite: anything but an empty folder or nothing."""
    return out.exists() and not (out.is_dir() and not any(out.iterdir()))
