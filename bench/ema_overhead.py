"""Benchmark: what `--ema` (a moving average of the weights, updated after every step) costs.

    TEGAKI_DATA_DIR=../shared/data python bench/ema_overhead.py            # deep-skip-thick, 3 repeats
    TEGAKI_DATA_DIR=../shared/data python bench/ema_overhead.py --preset fast --repeats 5

One epoch over the first 12,800 MNIST training digits (100 steps of 128, the preset's own
augmentation, no validation), in memory, without and with `--ema 0.999`, alternating; it prints the
median seconds of each and the overhead per step. It also times the update on its own (copying the
weights out of the engine and averaging them, median of 200), which epoch timings on a shared
machine blur by several per cent. Run it alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name, load_average  # noqa: E402

import torch  # noqa: E402

from tegaki.data.sources import default_cache_dir, load_dataset  # noqa: E402
from tegaki.engines import make_engine  # noqa: E402
from tegaki.spec import load_preset  # noqa: E402
from tegaki.train import TrainConfig, ema_update, train  # noqa: E402

STEPS, BATCH = 100, 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="deep-skip-thick")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = os.environ.get("TEGAKI_DATA_DIR")
    ds = load_dataset("mnist", env_dir=Path(env) if env else None, cache_dir=default_cache_dir(os.environ))
    n = STEPS * BATCH
    ds = replace(ds, train_images=ds.train_images[:n], train_labels=ds.train_labels[:n],
                 test_images=ds.test_images[:10], test_labels=ds.test_labels[:10])
    spec = load_preset(args.preset)
    seconds: dict[float, list[float]] = {0.0: [], 0.999: []}
    for _ in range(args.repeats):
        for ema in seconds:
            cfg = TrainConfig.for_spec(spec, epochs=1, batch_size=BATCH, valid_size=0, ema=ema, device="cpu")
            seconds[ema].append(train(spec, ds, cfg, None, log=lambda m: None).history[0]["seconds"])
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load_average()} (after the runs)")
    print(f"{args.preset} ({spec.num_params():,} parameters): one epoch of {STEPS} steps of {BATCH}, "
          f"median of {args.repeats}\n")
    print("| --ema | seconds (each run) | median | per step |")
    print("| --- | --- | --- | --- |")
    for ema, s in seconds.items():
        med = statistics.median(s)
        print(f"| {ema:g} | {' '.join(f'{x:.2f}' for x in s)} | {med:.2f} | {1000 * med / STEPS:.1f} ms |")
    base, avg = (statistics.median(seconds[k]) for k in seconds)
    print(f"\noverhead in the epochs: {1000 * (avg - base) / STEPS:+.2f} ms per step ({100 * (avg / base - 1):+.1f}%)")
    engine = make_engine("torch", spec, spec.init_weights(0), device="cpu")
    average = engine.get_weights()
    update = []
    for step in range(200):
        t0 = time.perf_counter()
        ema_update(average, engine.get_weights(), 0.999, step)
        update.append(time.perf_counter() - t0)
    one = statistics.median(update) * 1000
    print(f"one update on its own: {one:.2f} ms, {100 * one / (1000 * base / STEPS):.1f}% of a step without --ema")


if __name__ == "__main__":
    main()
