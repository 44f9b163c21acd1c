"""Benchmark: the NumPy engine against the PyTorch engine on the same CPU, through the real training loop.

    python bench/bench_engines.py                      # ffnn (3 repeats) and lenet (3 epochs), both engines
    python bench/bench_engines.py --only ffnn --repeats 5
    python bench/bench_engines.py --only lenet --lenet-recipe adam --lenet-epochs 2
    python bench/bench_engines.py --threads 1          # one BLAS / torch thread (steadier on a busy machine)

Every configuration runs `tegaki.train.train` on the real MNIST in a fresh Python process (so memory
figures belong to one engine), writing a throw-away run folder. It prints a table of medians:
seconds of training (the loop's own figure: every minibatch step plus the validation pass of each
epoch), seconds per epoch, test accuracy, and for the lenet rows the resident memory (RSS) after
every epoch, which should stay flat. The header records the machine: CPU model, cores, load
average before and after (other processes on the machine make every timing slower and noisier),
NumPy/PyTorch versions and the BLAS NumPy uses.

The targets it shows (issue 3): ffnn with the source recipe (2,000 minibatches of 50, lr 0.4) reaches
>= 92.5% test accuracy in <= 2 s of training on the NumPy engine; a lenet epoch on the NumPy engine
takes <= 4x the PyTorch engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name, load_average  # bench/_machine.py

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc; else the peak from getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> None:
    """One training run in this process; prints one JSON line."""
    from threadpoolctl import threadpool_limits

    import torch

    from tegaki.data.sources import load_dataset
    from tegaki.spec import load_preset
    from tegaki.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    ds = load_dataset("mnist", data_dir=args.data_dir)
    spec = load_preset(args.preset)
    overrides = json.loads(args.overrides)
    cfg = TrainConfig.for_spec(spec, engine=args.engine, device="cpu", seed=args.seed, **overrides)
    rss = []

    def log(line: str) -> None:  # the loop logs one table row per epoch: sample memory there
        if line[:6].strip().isdigit():
            rss.append(round(rss_mb(), 1))

    with tempfile.TemporaryDirectory() as d:
        result = train(spec, ds, cfg, Path(d) / "run", log=log)
    m = result.metrics
    print(json.dumps({"train_seconds": m["train_seconds"], "epochs": m["epochs"],
                      "epoch_seconds": [r["seconds"] for r in result.history],
                      "test_accuracy": m["test_accuracy"], "rss_mb": rss}))


def run_worker(args, preset: str, engine: str, overrides: dict, seed: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--_worker", "--preset", preset, "--engine", engine, "--seed", str(seed),
           "--threads", str(args.threads), "--overrides", json.dumps(overrides)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"benchmark worker failed ({preset}, {engine}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(threads: int) -> list[str]:
    import numpy
    import torch

    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = "unknown (pip install threadpoolctl)"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
                         f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        pass
    return [f"machine: {cpu}, {cores} cores usable, {platform.system()} {platform.release()}",
            f"python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}",
            f"numpy BLAS: {blas}; threads used by both engines: {threads}"]


def load() -> str:
    return load_average(" ")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["ffnn", "lenet"], help="one preset only")
    p.add_argument("--engines", default="numpy,torch", help="comma-separated (default numpy,torch)")
    p.add_argument("--repeats", type=int, default=3, help="ffnn runs per engine (default 3; medians reported)")
    p.add_argument("--lenet-epochs", type=int, default=3, help="lenet epochs per engine (default 3)")
    p.add_argument("--lenet-recipe", choices=["preset", "adam"], default="preset",
                   help="preset: SGD lr 0.1, batch 500 (the tutorial's); adam: lr 0.001, batch 128")
    p.add_argument("--ffnn-valid-size", type=int, default=None,
                   help="also run ffnn on the numpy engine with this --valid-size (0: all 60,000 images)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count(), help="BLAS / torch threads (default: every usable core)")
    p.add_argument("--data-dir", type=Path, help="a folder with MNIST's four IDX files "
                   "(default: $TEGAKI_DATA_DIR/mnist or the cache)")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        return worker(args)
    if args.data_dir is None and os.environ.get("TEGAKI_DATA_DIR"):
        args.data_dir = Path(os.environ["TEGAKI_DATA_DIR"]) / "mnist"
    engines = args.engines.split(",")
    print("\n".join(machine(args.threads)))
    print(f"load average before: {load()}  ({time.strftime('%Y-%m-%d %H:%M')})\n")
    rows = []
    if args.only in (None, "ffnn"):
        from tegaki.spec import load_preset

        t = load_preset("ffnn").train
        n = 60_000 - t.get("valid_size", 10_000)
        label = f"preset: {t['epochs']} epochs x {-(-n // t['batch_size']):,} steps of {t['batch_size']}, lr {t['lr']:g}"
        configs = [("ffnn", e, {}, label) for e in engines]
        if args.ffnn_valid_size is not None:
            configs.append(("ffnn", "numpy", {"valid_size": args.ffnn_valid_size},
                            f"--valid-size {args.ffnn_valid_size}"))
        for preset, engine, over, note in configs:
            runs = [run_worker(args, preset, engine, over) for _ in range(args.repeats)]
            secs = [r["train_seconds"] for r in runs]
            rows.append((preset, engine, note, statistics.median(secs), runs[0]["epochs"],
                         statistics.median(s for r in runs for s in r["epoch_seconds"]),
                         [r["test_accuracy"] for r in runs], "", f"{len(runs)} runs: " +
                         ", ".join(f"{s:.2f}" for s in secs)))
    if args.only in (None, "lenet"):
        over = {"epochs": args.lenet_epochs, "patience": None}
        note = "preset: SGD lr 0.1, batch 500"
        if args.lenet_recipe == "adam":
            over.update(optimizer="adam", lr=1e-3, batch_size=128)
            note = "Adam lr 0.001, batch 128"
        for engine in engines:
            r = run_worker(args, "lenet", engine, over)
            rows.append(("lenet", engine, note, r["train_seconds"], r["epochs"], statistics.median(r["epoch_seconds"]),
                         [r["test_accuracy"]], " ".join(f"{m:.0f}" for m in r["rss_mb"]),
                         "epochs: " + ", ".join(f"{s:.1f}" for s in r["epoch_seconds"])))
    print(f"{'preset':7} {'engine':6} {'recipe':44} {'train s':>8} {'epochs':>6} {'s/epoch':>8} {'test acc':>9}  "
          f"{'RSS MiB per epoch':18} detail")
    for preset, engine, note, secs, epochs, per_epoch, accs, rss, detail in rows:
        acc = statistics.median(accs)
        print(f"{preset:7} {engine:6} {note:44} {secs:8.2f} {epochs:6d} {per_epoch:8.2f} {acc:9.2%}  {rss:18} {detail}")
    by = {(r[0], r[1], r[2]): r for r in rows}
    for preset in ("ffnn", "lenet"):
        num = [r for k, r in by.items() if k[0] == preset and k[1] == "numpy" and "valid-size" not in k[2]]
        tor = [r for k, r in by.items() if k[0] == preset and k[1] == "torch"]
        if num and tor:
            print(f"{preset}: numpy / torch seconds per epoch = {num[0][5] / tor[0][5]:.2f}")
    if ("ffnn", "numpy") in {(r[0], r[1]) for r in rows}:
        r = next(r for r in rows if r[0] == "ffnn" and r[1] == "numpy")
        ok = r[3] <= 2.0 and statistics.median(r[6]) >= 0.925
        print(f"ffnn target (numpy: >= 92.50% in <= 2 s): {'met' if ok else 'NOT met'} "
              f"({statistics.median(r[6]):.2%} in {r[3]:.2f} s)")
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
