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

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from tegaki.data.sources import Dataset, validation_split
from tegaki.engines import ENGINES, TRAINABLE, make_engine
from tegaki.errors import TegakiError
from tegaki.run import load_weights, make_meta, norm_for, save_run, save_weights
from tegaki.spec import Spec

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
MONITORS = ("loss", "accuracy")
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
    valid_size: int = 10_000  # examples carved from the training set for validation (stratified)
    seed: int = 0  # one seed for the split, the initial weights, shuffling and dropout
    device: str = "auto"  # auto | cpu | cuda | mps
    engine: str = "torch"  # torch | numpy
    dataset: str = "mnist"  # the dataset's name (recorded in the run)
    augment: str | None = None  # random distortions of training batches: affine, elastic, thickness joined by +
    augment_strength: float = 1.0  # scales every augmentation range (0: identity); see data/augment.py
    precision: str = "fp32"  # fp32 | bf16 (mixed, autocast) | auto (bf16 where the hardware has it); torch only
    compile: bool = False  # run the torch training step through torch.compile
    split_seed: int | None = None  # seed of the validation split alone (None: `seed`); ensembles share one split

    @property
    def validation_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def check(self) -> None:
        if self.epochs < 1:
            raise TegakiError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise TegakiError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TegakiError(f"--lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise TegakiError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise TegakiError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.patience is not None and self.patience < 1:
            raise TegakiError(f"--patience must be at least 1, got {self.patience}")
        if self.monitor not in MONITORS:
            raise TegakiError(f"unknown monitor {self.monitor!r}; choose one of {', '.join(MONITORS)}")
        if self.valid_size < 0:
            raise TegakiError(f"--valid-size must be >= 0, got {self.valid_size}")
        if self.engine not in ENGINES:
            raise TegakiError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.engine not in TRAINABLE:
            raise TegakiError(f"the {self.engine} engine runs trained models only; train with --engine "
                              f"{' or '.join(TRAINABLE)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TegakiError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        from tegaki.data.augment import Augmenter

        Augmenter.parse(self.augment, strength=self.augment_strength)  # raises on a bad --augment
        if self.precision not in ("fp32", "bf16", "auto"):
            raise TegakiError(f"unknown precision {self.precision!r}; choose fp32, bf16 or auto")
        if self.engine != "torch" and (self.precision == "bf16" or self.compile):
            raise TegakiError("bf16 precision and compile are torch engine options; "
                              f"drop them for --engine {self.engine}")

    @classmethod
    def for_spec(cls, spec: Spec, **overrides) -> "TrainConfig":
        """The spec's recipe (its `train` table), then any non-None overrides."""
        known = {f.name for f in fields(cls)}
        bad = set(spec.train) - known
        if bad:
            raise TegakiError(f"spec {spec.name!r}: unknown training option(s) {', '.join(sorted(bad))}; "
                              f"known: {', '.join(sorted(known))}")
        values = dict(spec.train)
        values.update({k: v for k, v in overrides.items() if v is not None})
        from tegaki.spec import type_ok

        for f in fields(cls):
            if f.name in values and not type_ok(values[f.name], str(f.type)):
                raise TegakiError(f"spec {spec.name!r}: training option {f.name} must be "
                                  f"{str(f.type).replace(' | ', ' or ')}, got {values[f.name]!r}")
        cfg = cls(**values)
        cfg.check()
        return cfg


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

    def __init__(self, out: Callable[[str], None], bar_stream=None):
        self.out = out
        self.bar_stream = bar_stream if bar_stream is not None else sys.stderr
        self.tty = getattr(self.bar_stream, "isatty", lambda: False)()
        self.last = 0.0

    def bar(self, epoch: int, epochs: int, done: int, total: int, stats: Callable[[], tuple]) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.25 and done < total):
            return
        self.last = now
        loss, acc = stats()
        filled = int(24 * done / total)
        self.bar_stream.write(f"\r epoch {epoch}/{epochs} [{'#' * filled}{'.' * (24 - filled)}] {done}/{total} "
                              f"loss {loss:.4f} acc {acc:6.2%}")
        self.bar_stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.bar_stream.write("\r" + " " * 79 + "\r")
            self.bar_stream.flush()

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
    path: Path
    metrics: dict
    history: list[dict]
    interrupted: bool = False


CHECKPOINT = "checkpoint.safetensors"


def _checkpoint(out: Path, engine, state: dict, best_weights) -> None:
    """Weights, optimiser state, best weights and the loop's state in ONE file, written atomically.

    The loop's state (JSON) rides in the safetensors metadata, so a Ctrl-C or a kill at any
    moment leaves either the previous epoch's checkpoint or this one, never a mix of the two.
    """
    arrays = {f"model.{k}": v for k, v in engine.get_weights().items()}
    opt_arrays, opt_meta = engine.optimizer_state()
    arrays.update(opt_arrays)
    if best_weights is not None:
        arrays.update({f"best.{k}": v for k, v in best_weights.items()})
    save_weights(out / CHECKPOINT, arrays, {"state": json.dumps({**state, "optimizer": opt_meta})})


def train(spec: Spec, ds: Dataset, cfg: TrainConfig, out: Path, log: Callable[[str], None] = print,
          resume: dict | None = None, command: list[str] | None = None, bar_stream=None,
          dist=None) -> TrainResult:
    """Train `spec` on `ds` as `cfg` says; write the run folder `out`; return its metrics.

    `resume` is a checkpoint's state already read (see `read_checkpoint`): training continues
    after its last finished epoch with the weights and optimiser state saved there, and ends
    exactly as an uninterrupted run would (the shuffling, dropout and augmentation of every
    epoch are seeded by (seed, epoch)).

    Ctrl-C returns a TrainResult with `interrupted` set, leaving the last epoch's checkpoint;
    a run stopped before its first epoch finished, or by an error, leaves no files behind.

    `dist` (tegaki.distributed.Dist): one process of several; batches are sharded between them and
    only rank 0 writes files.
    """
    cfg.check()
    if spec.num_classes != len(ds.classes):
        raise TegakiError(f"the network has {spec.num_classes} outputs but {ds.name} has {len(ds.classes)} classes; "
                          "change the last dense layer's units")
    expect = tuple(spec.input_shape[-2:])
    if tuple(ds.train_images.shape[1:]) != expect:
        raise TegakiError(f"{ds.name} images are {ds.train_images.shape[1:]}, the network expects {expect}")
    t_setup = time.perf_counter()
    tr, va = validation_split(ds.train_labels, cfg.valid_size, cfg.validation_seed)
    if len(va) < cfg.valid_size:
        log(f"validation split: {len(va):,} of {len(ds.train_labels):,} training images "
            f"(--valid-size {cfg.valid_size:,} would leave too few to train on)")
    norm = norm_for(spec, ds.train_images[tr])
    init = spec.init_weights(cfg.seed)
    from tegaki.data.augment import Augmenter

    augment = Augmenter.parse(cfg.augment, background=-norm["mean"] / norm["std"], strength=cfg.augment_strength)
    engine = make_engine(cfg.engine, spec, init, device=cfg.device)
    engine.configure(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.label_smoothing)
    engine.tune(cfg.precision, cfg.compile)  # speed options (bf16, compile: torch engine only)
    if dist is not None:
        dist.wrap(engine)  # DistributedDataParallel
    train_data = engine.prepare(ds.train_images[tr], ds.train_labels[tr], norm)
    valid_data = engine.prepare(ds.train_images[va], ds.train_labels[va], norm) if len(va) else None
    n = len(tr)
    steps = math.ceil(n / cfg.batch_size)
    total = steps * cfg.epochs
    history: list[dict] = []
    best = {"loss": math.inf, "epoch": 0}
    best_weights = None
    start = 1
    if resume is not None:
        arrays = load_weights(out / CHECKPOINT)
        engine.set_weights({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        engine.load_optimizer_state({k: v for k, v in arrays.items() if k.startswith("opt.")}, resume["optimizer"])
        bw = {k[5:]: v for k, v in arrays.items() if k.startswith("best.")}
        best_weights = bw or None
        history, best, start = resume["history"], resume["best"], resume["epoch"] + 1
        if resume.get("stopped_early"):
            start = cfg.epochs + 1  # it had stopped early; only the final evaluation was left
        for tmp in out.glob(".*.tmp"):  # a temporary file left by a process killed mid-write
            tmp.unlink()
        log(f"resuming {out} after epoch {resume['epoch']}")
    setup_seconds = time.perf_counter() - t_setup
    config_dict = asdict(cfg)
    meta = make_meta(spec, ds.classes, norm, ds.provenance, cfg.seed, config_dict, command)
    if resume is not None and resume.get("command"):
        meta["command"], meta["resumed_with"] = resume["command"], meta["command"]
    prog = Progress(log, bar_stream)
    log(f"training {spec.name} ({spec.num_params():,} parameters) on {ds.name}: {n:,} train, {len(va):,} valid, "
        f"{len(ds.test_labels):,} test; engine {cfg.engine} on {getattr(engine, 'device', 'cpu')}")
    log(Progress.HEAD)
    for r in history:
        prog.row(r)
    stopped_early = bool(resume and resume.get("stopped_early"))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    epoch = start - 1
    try:
        for epoch in range(start, cfg.epochs + 1):
            t0 = time.perf_counter()
            engine.seed(cfg.seed * 100_003 + epoch)
            perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
            if augment is not None:
                augment.seed(cfg.seed, epoch)
            engine.reset_stats()
            lr = cfg.lr
            for b in range(steps):
                step = (epoch - 1) * steps + b
                lr = lr_at(cfg, step, total, epoch - 1)
                engine.set_lr(lr)
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x, y = engine.take(train_data, dist.shard(idx) if dist is not None else idx)
                engine.train_step(augment(x) if augment is not None else x, y)
                prog.bar(epoch, cfg.epochs, b + 1, steps, engine.read_stats)
            train_loss, train_acc = engine.read_stats()
            if dist is not None:
                dist.sync(engine)  # rank 0's weights and batch-norm statistics everywhere
            valid_loss = valid_acc = None  # --valid-size 0: no validation split, nothing to show
            if valid_data is not None:
                valid_loss, valid_acc, _ = engine.evaluate(valid_data)
            if not math.isfinite(train_loss):
                raise TegakiError(f"training diverged in epoch {epoch} (loss {train_loss}); lower --lr")
            prog.clear()
            row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "train_acc": train_acc,
                   "valid_acc": valid_acc, "lr": lr, "seconds": time.perf_counter() - t0}
            # without a validation split, early stopping and best weights follow the training statistics
            score_loss, score_acc = (train_loss, train_acc) if valid_data is None else (valid_loss, valid_acc)
            if dist is not None:  # every rank makes rank 0's early-stopping call (rank 0 writes the history)
                score_loss, score_acc = dist.agree(score_loss), dist.agree(score_acc)
            is_best = _better(cfg.monitor, score_loss, score_acc, best)
            if is_best:
                best = {"loss": score_loss, "epoch": epoch, "acc": score_acc}
                if cfg.patience:
                    best_weights = engine.get_weights()
            prog.row({**row, "best": is_best and cfg.patience})
            history.append(row)
            stopped_early = bool(cfg.patience and epoch - best["epoch"] >= cfg.patience)
            if dist is None or dist.is_main:
                _checkpoint(out, engine, {"format": "tegaki-checkpoint/1", "epoch": epoch, "history": history,
                                          "best": best, "stopped_early": stopped_early, "config": config_dict,
                                          "spec": spec.to_dict(), "dataset": ds.name, "command": meta["command"]},
                            best_weights)
            if stopped_early:
                log(f"early stopping: no better validation {cfg.monitor} for {cfg.patience} epochs; "
                    f"restoring the weights of epoch {best['epoch']}")
                break
        if dist is not None and not dist.is_main:
            return TrainResult(out, {}, history)  # rank 0 measures the test set and writes the run
        return _finish(spec, ds, cfg, out, engine, norm, init, meta, history, best, best_weights, stopped_early,
                       n, va, valid_data, setup_seconds)
    except KeyboardInterrupt:
        prog.clear()
        if (out / CHECKPOINT).is_file():
            state = read_checkpoint(out)
            log(f"interrupted: stopped cleanly; the checkpoint after epoch {state['epoch']} is saved in {out}; "
                f"continue with: tegaki train --resume {out}")
            return TrainResult(out, {}, state["history"], interrupted=True)
        _remove_if_empty(out, created)
        log("interrupted before the first epoch finished: nothing was saved; start the run again")
        return TrainResult(out, {}, [], interrupted=True)
    except BaseException:
        # an error (a diverged loss, a full disk ...): leave no half-written run behind
        if resume is None:
            (out / CHECKPOINT).unlink(missing_ok=True)
            _remove_if_empty(out, created)
        raise


def _remove_if_empty(out: Path, created: bool) -> None:
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _better(monitor: str, loss: float, acc: float, best: dict) -> bool:
    """Whether this epoch's validation score beats the best so far (accuracy ties go to the lower loss)."""
    if monitor == "accuracy":
        best_acc = best.get("acc", -math.inf)
        return acc > best_acc or (acc == best_acc and loss < best["loss"])
    return loss < best["loss"]


def _finish(spec, ds, cfg, out, engine, norm, init, meta, history, best, best_weights, stopped_early,
            n, va, valid_data, setup_seconds) -> TrainResult:
    """Restore the best weights, measure the test set once, write the run folder."""
    if best_weights is not None:
        engine.set_weights(best_weights)
    t_test = time.perf_counter()
    test_data = engine.prepare(ds.test_images, ds.test_labels, norm)
    test_loss, _, test_logits = engine.evaluate(test_data)
    # accuracy and error as exact fractions of the test set (not a float32 mean)
    n_wrong = int((np.asarray(test_logits).argmax(axis=1) != np.asarray(ds.test_labels)).sum())
    test_acc, test_err = (len(ds.test_labels) - n_wrong) / len(ds.test_labels), n_wrong / len(ds.test_labels)
    train_seconds = float(sum(r["seconds"] for r in history))
    final_valid = engine.evaluate(valid_data)[:2] if valid_data is not None else (None, None)
    metrics = {
        "test_accuracy": test_acc, "test_error": test_err, "test_loss": test_loss, "test_mistakes": n_wrong,
        "valid_accuracy": final_valid[1], "valid_loss": final_valid[0],
        "epochs": len(history), "best_epoch": best["epoch"] if cfg.patience else len(history),
        "stopped_early": stopped_early, "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / max(1, len(history)), 3),
        "setup_seconds": round(setup_seconds, 3), "test_seconds": round(time.perf_counter() - t_test, 3),
        "dataset": ds.name, "preset": spec.name, "engine": cfg.engine,
        "precision": getattr(engine, "precision", "fp32"),
        "device": str(getattr(engine, "device", "cpu")), "seed": cfg.seed,
        "train_size": n, "valid_size": int(len(va)), "test_size": int(len(ds.test_labels)),
    }
    save_run(out, spec, engine.get_weights(), meta, history, metrics, initial=init)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return TrainResult(out, metrics, history, False)


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
        if state.get("format") != "tegaki-checkpoint/1":
            raise KeyError("format")
        state["spec"], state["config"], state["history"], state["epoch"]  # noqa: B018 - presence check
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise TegakiError(f"{cp}: corrupt checkpoint ({type(e).__name__}); start a new run") from None
    return state
