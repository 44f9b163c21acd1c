"""Benchmark: `tegaki predict` from the shell, wall time, one image and 1,000 images, per engine.

    python bench/predict_shell.py                 # the bundled model; median of 5 runs
    python bench/predict_shell.py --repeats 3 --model runs/x

Each run is a new process, `python -m tegaki predict ...`, timed from start to exit, as a user
waits for it: interpreter start, imports, loading the model, reading and preprocessing the
images, the network, printing. The images are MNIST test digits written as PNG files (dark ink
on white, 28x28 and 200x200), made here in a temporary folder. The goal (issue 16): one image in
<= 0.6 s, 1,000 in <= 5 s, with the default engine (auto: numpy up to 40 GFLOP of network work, torch beyond);
the outputs of the engines are compared too (labels and statuses must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name, load_average  # noqa: E402

GOALS = {"1 image": 0.6, "1,000 images": 5.0}


def digits(n: int) -> np.ndarray:
    from tegaki.data.sources import default_cache_dir, load_dataset

    env = os.environ.get("TEGAKI_DATA_DIR")
    ds = load_dataset("mnist", env_dir=Path(env) if env else None, cache_dir=default_cache_dir(os.environ))
    return ds.test_images[:n]


def timed(args: list[str]) -> tuple[float, list]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tegaki", "predict", "--format", "json", *args],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"tegaki predict {' '.join(args)} failed: {r.stderr.strip()[-300:]}")
    return wall, json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", help="a run folder (default: the bundled model)")
    a = ap.parse_args()
    model = ["--model", a.model] if a.model else []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        x = digits(1000)
        (tmp / "many").mkdir()
        for i, im in enumerate(x):
            Image.fromarray(255 - im).save(tmp / "many" / f"{i:04d}.png")
        Image.fromarray(255 - x[0]).resize((200, 200), Image.BILINEAR).save(tmp / "one.png")
        cases = {"1 image": [str(tmp / "one.png")], "1,000 images": [str(tmp / "many")]}
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load average before {load_average()}")
        print(f"wall seconds from the shell, median of {a.repeats} runs\n")
        print(f"{'case':<14} | {'auto (default)':>14} | {'numpy':>7} | {'torch':>7} | goal")
        print("-" * 66)
        for name, files in cases.items():
            med, outs = {}, {}
            for engine in ("auto", "numpy", "torch"):
                runs = [timed([*files, *model, "--engine", engine]) for _ in range(a.repeats)]
                med[engine] = statistics.median(r[0] for r in runs)
                outs[engine] = [(row["label"], row["status"]) for row in runs[0][1]]
            same = "same answers" if outs["auto"] == outs["numpy"] == outs["torch"] else "ANSWERS DIFFER"
            goal = GOALS[name]
            print(f"{name:<14} | {med['auto']:14.2f} | {med['numpy']:7.2f} | {med['torch']:7.2f} | "
                  f"<= {goal} s {'met' if med['auto'] <= goal else 'MISSED'}; {same}", flush=True)
        print(f"\nload average after {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
