"""Benchmark: tegaki on a busy machine. The default thread count against --threads 1 and 2.

    python bench/busy.py                         # train fast, evaluate, probe, the NumPy engine; 0, 1, 3 loads
    python bench/busy.py --tasks train --loads 1 --repeats 3

Each task runs as a user runs it, `tegaki ...` in its own process, with its default threads and
with --threads 1 and --threads 2, while LOAD other CPU-bound processes run (this script starts
them: plain Python loops, each ended when the task does, and after --max-load-seconds at the
latest). The measure is the task's own figure where it prints one (training seconds from the
run's metrics.json) and otherwise the wall time of the command. The table gives the median of
--repeats runs and the default's ratio to the better of --threads 1 and 2; the goal is <= 1.2x
with one load and <= 1.5x with three.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name, load_average  # noqa: E402

SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"
GOALS = {1: 1.2, 3: 1.5}


def tasks(tmp: Path, fast_run: Path) -> dict:
    """name -> (argv after `tegaki`, reads training seconds from this run folder or None)."""
    return {
        "train fast": (["train", "--preset", "fast", "--seed", "0", "--out", str(tmp / "t")], tmp / "t"),
        "train numpy": (["train", "--preset", "ffnn", "--engine", "numpy", "--epochs", "1", "--seed", "0",
                         "--out", str(tmp / "n")], tmp / "n"),
        "evaluate": (["evaluate", str(fast_run), "--out", str(tmp / "e")], None),  # overwrites its own folder
        "probe": (["probe", str(fast_run), "--classifier", "logreg", "--train-size", "10000"], None),
    }


def run_once(argv: list[str], run_dir: Path | None, threads: int | None, loads: int, cap: float) -> float:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=cap)]) for _ in range(loads)]
    try:
        time.sleep(0.3 if loads else 0)  # the loads are running before tegaki starts
        cmd = [sys.executable, "-m", "tegaki", *argv] + ([] if threads is None else ["--threads", str(threads)])
        env = {k: v for k, v in os.environ.items() if k != "TEGAKI_THREADS"}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if run_dir is not None and r.returncode == 0:
        seconds = float(json.loads((run_dir / "metrics.json").read_text())["train_seconds"])
        shutil.rmtree(run_dir)  # the next run writes there again
        return seconds
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="train fast,train numpy,evaluate,probe", help="comma-separated")
    ap.add_argument("--loads", default="0,1,3", help="numbers of background CPU-bound processes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-load-seconds", type=float, default=600)
    a = ap.parse_args()
    loads = [int(x) for x in a.loads.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fast_run = tmp / "fast"
        subprocess.run([sys.executable, "-m", "tegaki", "train", "--preset", "fast", "--out", str(fast_run)],
                       check=True, capture_output=True)
        table = tasks(tmp, fast_run)
        names = [t.strip() for t in a.tasks.split(",")]
        unknown = [n for n in names if n not in table]
        if unknown:
            raise SystemExit(f"unknown task {unknown[0]!r}; choose from {', '.join(table)}")
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load average before {load_average()}")
        print(f"median of {a.repeats} runs, seconds (training seconds for train, wall time otherwise)\n")
        print(f"{'task':<12} | load | {'default':>8} | {'threads 1':>9} | {'threads 2':>9} | default / best | goal")
        print("-" * 78)
        for name in names:
            argv, run_dir = table[name]
            for load in loads:
                med = {}
                for threads in (None, 1, 2):
                    xs = [run_once(argv, run_dir, threads, load, a.max_load_seconds) for _ in range(a.repeats)]
                    med[threads] = statistics.median(xs)
                ratio = med[None] / min(med[1], med[2])
                goal = GOALS.get(load)
                verdict = "" if goal is None else f"<= {goal}x {'met' if ratio <= goal else 'MISSED'}"
                print(f"{name:<12} | {load:>4} | {med[None]:8.2f} | {med[1]:9.2f} | {med[2]:9.2f} | "
                      f"{ratio:13.2f}x | {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
