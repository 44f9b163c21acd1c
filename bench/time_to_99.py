"""Benchmark: seconds of training to first reach 99% MNIST test accuracy, side by side.

    python bench/time_to_99.py                              # fast, pytorch-example, keras-convnet
    python bench/time_to_99.py --recipes fast --seeds 0,1,2,3,4
    python bench/time_to_99.py --max-epochs 4 --threads 2   # cap the slow reference recipes

Three recipes run on the same data and machine, all through tegaki's own torch engine
(engines/torch_engine.py: configure, train_step, evaluate) and the same minimal loop below:

  fast            tegaki's `fast` preset, exactly as `tegaki train --preset fast` runs it
                  (its optimiser, one-cycle schedule, label smoothing, precision, batch size and
                  validation split, read from src/tegaki/presets/fast.toml)
  pytorch-example the PyTorch examples/mnist recipe (main.py): conv 32@3x3 relu, conv 64@3x3 relu,
                  maxpool 2, dropout 0.25, dense 128 relu, dropout 0.5, dense 10; Adadelta lr 1.0,
                  StepLR gamma 0.7 every epoch, batch 64, inputs normalised with (0.1307, 0.3081),
                  PyTorch's default initialisation, 14 epochs, no validation split
  keras-convnet   the Keras mnist_convnet example: conv 32@3x3 relu, maxpool 2, conv 64@3x3 relu,
                  maxpool 2, flatten, dropout 0.5, dense 10 softmax; Adam (lr 1e-3), batch 128,
                  15 epochs, validation_split 0.1 (the last 10% of the training set, evaluated
                  every epoch as Keras does), inputs scaled to [0, 1], Glorot-uniform kernels and
                  zero biases (Keras' defaults)

For this benchmark only, the test set is evaluated after every epoch (not timed) to find the
first epoch at >= 99%; "seconds to 99%" is the training time (every step, plus the validation
pass a recipe does) summed up to that epoch. A recipe stops when it reaches 99% (or after
--max-epochs). The table gives the median over --seeds and the ratio to `fast`.
Differences from the originals that remain: PyTorch tensors kept in memory instead of a
DataLoader (this makes the references faster, not slower), Keras' Adam epsilon 1e-7 vs 1e-8.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _machine import cpu_name, load_average  # noqa: E402  (bench/_machine.py)


def C(f, k):
    return {"type": "conv2d", "filters": f, "kernel": k}


R, P, FL = {"type": "relu"}, {"type": "maxpool", "size": 2}, {"type": "flatten"}


def D(u, init="default"):
    return {"type": "dense", "units": u, "init": init}


def DO(r):
    return {"type": "dropout", "rate": r}


@dataclass
class Recipe:
    name: str
    spec: object
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    lr_at: object  # (step, total, epoch) -> lr
    norm: dict | None = None  # None: measured from the training split, as tegaki does
    valid: str = "none"  # none | stratified:N (tegaki's split) | last:F (Keras' validation_split)
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    precision: str = "fp32"


def recipes(max_epochs: int | None) -> dict[str, Recipe]:
    from tegaki.spec import Spec, layer_from_dict, load_preset
    from tegaki.train import TrainConfig, lr_at

    def spec(name, layers):
        return Spec(input_shape=(1, 28, 28), layers=[layer_from_dict(l) for l in layers], name=name)

    fast = load_preset("fast")
    cfg = TrainConfig.for_spec(fast)
    out = {
        "fast": Recipe("fast", fast, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs,
                       lambda s, t, e: lr_at(cfg, s, t, e), valid=f"stratified:{cfg.valid_size}",
                       label_smoothing=cfg.label_smoothing, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                       precision=cfg.precision),
        "pytorch-example": Recipe(
            "pytorch-example",
            spec("pytorch-example", [C(32, 3), R, C(64, 3), R, P, DO(0.25), FL, D(128), R, DO(0.5), D(10),
                                     {"type": "softmax"}]),
            "adadelta", 1.0, 64, 14, lambda s, t, e: 1.0 * 0.7 ** e, norm={"mean": 0.1307, "std": 0.3081}),
        "keras-convnet": Recipe(
            "keras-convnet",
            spec("keras-convnet", [{**C(32, 3), "init": "xavier"}, R, P, {**C(64, 3), "init": "xavier"}, R, P, FL,
                                   DO(0.5), D(10, "xavier"), {"type": "softmax"}]),
            "adam", 1e-3, 128, 15, lambda s, t, e: 1e-3, norm={"mean": 0.0, "std": 1.0}, valid="last:0.1"),
    }
    if max_epochs:
        for r in out.values():
            if r.name != "fast":
                r.epochs = min(r.epochs, max_epochs)
    return out


def run(recipe: Recipe, ds, seed: int, log) -> dict:
    """Train one recipe; test after every epoch (untimed); stop at 99%."""
    from tegaki.data.dataset import stratified_split
    from tegaki.engines.torch_engine import TorchEngine
    from tegaki.run import norm_for

    n_all = len(ds.train_labels)
    if recipe.valid.startswith("stratified:"):
        tr, va = stratified_split(ds.train_labels, int(recipe.valid.split(":")[1]), seed)
    elif recipe.valid.startswith("last:"):
        cut = int(n_all * (1 - float(recipe.valid.split(":")[1])))
        tr, va = np.arange(cut), np.arange(cut, n_all)
    else:
        tr, va = np.arange(n_all), np.arange(0)
    norm = recipe.norm or norm_for(recipe.spec, ds.train_images[tr])
    engine = TorchEngine(recipe.spec, recipe.spec.init_weights(seed), device="cpu")
    engine.configure(recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay, recipe.label_smoothing)
    engine.tune(recipe.precision)
    train = engine.prepare(ds.train_images[tr], ds.train_labels[tr], norm)
    valid = engine.prepare(ds.train_images[va], ds.train_labels[va], norm) if len(va) else None
    test = engine.prepare(ds.test_images, ds.test_labels, norm)
    n = len(tr)
    steps = math.ceil(n / recipe.batch_size)
    total = steps * recipe.epochs
    seconds, cpu, reached, curve = 0.0, 0.0, None, []
    for epoch in range(1, recipe.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        engine.seed(seed * 100_003 + epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        engine.reset_stats()
        for b in range(steps):
            engine.set_lr(recipe.lr_at((epoch - 1) * steps + b, total, epoch - 1))
            engine.train_step(*engine.take(train, perm[b * recipe.batch_size:(b + 1) * recipe.batch_size]))
        if valid is not None:
            engine.evaluate(valid)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        acc = engine.evaluate(test)[1]
        curve.append(round(acc, 4))
        log(f"    {recipe.name} seed {seed} epoch {epoch}: test {acc:.2%} after {seconds:.1f} s of training")
        if acc >= 0.99 and reached is None:
            reached = (epoch, seconds, cpu)
            break
    return {"epochs": reached[0] if reached else None, "seconds": reached[1] if reached else None,
            "cpu_seconds": reached[2] if reached else None,
            "seconds_run": seconds, "epochs_run": len(curve), "best": max(curve), "curve": curve}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", default="fast,pytorch-example,keras-convnet")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows medians")
    p.add_argument("--max-epochs", type=int, help="cap the reference recipes' epochs (to save time)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (default: tegaki's lookup)")
    args = p.parse_args(argv)

    import torch

    from tegaki.data.sources import default_cache_dir, load_dataset

    torch.set_num_threads(args.threads)
    env = os.environ.get("TEGAKI_DATA_DIR") or (str(ROOT.parent / "shared" / "data")
                                                 if (ROOT.parent / "shared" / "data" / "mnist").is_dir() else None)
    ds = load_dataset("mnist", data_dir=args.data_dir, env_dir=env, cache_dir=default_cache_dir(os.environ))
    all_recipes = recipes(args.max_epochs)
    names = args.recipes.split(",")
    bad = [n for n in names if n not in all_recipes]
    if bad:
        p.error(f"unknown recipe(s) {bad}; choose from {', '.join(all_recipes)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    before = load_average()
    results = {}
    for name in names:
        results[name] = [run(all_recipes[name], ds, s, lambda m: print(m, file=sys.stderr, flush=True))
                         for s in seeds]
    after = load_average()

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    base = med([r["seconds"] for r in results.get("fast", [])])
    base_cpu = med([r["cpu_seconds"] for r in results.get("fast", [])])
    print("\nTime to 99% MNIST test accuracy (training seconds; test evaluated after every epoch, untimed)")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} torch threads; load average "
          f"{before} before, {after} after; torch {torch.__version__}, python {platform.python_version()}")
    print(f"seeds: {', '.join(map(str, seeds))} (medians). CPU-seconds: this process's CPU time (all threads); "
          "with --threads 1 on a busy machine it estimates one idle core's time.\n")
    print("| recipe | parameters | epochs to 99% | seconds to 99% | x fast | CPU-seconds to 99% | x fast (CPU) "
          "| seconds per epoch | best test acc (epochs run) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        rs = results[name]
        spec = all_recipes[name].spec
        secs = med([r["seconds"] for r in rs])
        hit = sum(r["seconds"] is not None for r in rs)
        ep = med([r["epochs"] for r in rs])
        per_epoch = med([r["seconds_run"] / r["epochs_run"] for r in rs])
        ratio = f"{secs / base:.1f}" if secs and base else "-"
        s_txt = f"{secs:.1f}" if secs is not None else f"not reached in {med([r['seconds_run'] for r in rs]):.0f} s"
        if secs is not None and hit < len(rs):
            s_txt += f" ({hit}/{len(rs)} seeds reached it)"
        cpu = med([r["cpu_seconds"] for r in rs])
        print(f"| {name} | {spec.num_params():,} | {ep if ep is not None else '-'} | {s_txt} | {ratio} | "
              f"{f'{cpu:.1f}' if cpu is not None else '-'} | "
              f"{f'{cpu / base_cpu:.1f}' if cpu is not None and base_cpu else '-'} | {per_epoch:.1f} | "
              f"{med([r['best'] for r in rs]):.2%} ({med([r['epochs_run'] for r in rs])}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
