"""Benchmark: how long `tegaki report`, `tegaki probe` and `tegaki inspect` take on a run.

    python bench/look_inside.py RUN                    # e.g. a lenet run; 3 repeats of report, 1 of probe
    python bench/look_inside.py RUN --repeats 5 --probe-repeats 0
    python bench/look_inside.py RUN --threads 1        # one BLAS / OpenMP / torch thread per process

Each command runs as a user runs it (`python -m tegaki ...`, a fresh process, output to a
temporary folder), so the figures include Python's start-up and loading MNIST. The table gives
the median wall-clock seconds, the median CPU seconds (user + system of the process and its
children: on a machine shared with other jobs this is close to what the command costs on idle
cores, where wall-clock is not), and the figure the command prints about itself (the report's
build seconds). The header records the machine: CPU model, cores, load average before and after.

Targets (issue 4): the report builds in under 30 s and the default probe finishes in under 2
minutes on MNIST on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _machine import cpu_name  # bench/_machine.py




def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one command in a fresh process."""
    c0, t0 = children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return wall, cpu, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder (trained on MNIST)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of report (default 3)")
    ap.add_argument("--probe-repeats", type=int, default=1, help="runs of the default probe (default 1)")
    ap.add_argument("--inspect-repeats", type=int, default=1, help="runs of inspect (default 1)")
    ap.add_argument("--threads", type=int, help="threads per process (OMP/OPENBLAS/MKL_NUM_THREADS)")
    args = ap.parse_args()

    env = dict(os.environ)
    if args.threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(args.threads)
    py = [sys.executable, "-m", "tegaki"]
    load0 = os.getloadavg()
    rows = []
    probe_table = ""
    with tempfile.TemporaryDirectory() as d:
        jobs = [("report", py + ["report", args.run, "--out", f"{d}/r.html"], args.repeats),
                ("probe (defaults)", py + ["probe", args.run], args.probe_repeats),
                ("inspect (all parts)", py + ["inspect", args.run, "--out", f"{d}/i"], args.inspect_repeats)]
        for name, cmd, n in jobs:
            if n <= 0:
                continue
            walls, cpus, own = [], [], []
            for _ in range(n):
                wall, cpu, out = timed(cmd, env)
                walls.append(wall)
                cpus.append(cpu)
                m = re.search(r"in ([\d.]+) s[;:]", out) or re.search(r"total ([\d.]+) s", out)
                own.append(float(m.group(1)) if m else float("nan"))
                if name.startswith("probe"):
                    probe_table = out[out.find("test accuracy / fit s"):].strip()
            rows.append((name, n, statistics.median(walls), statistics.median(cpus), statistics.median(own)))
    load1 = os.getloadavg()

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"threads {args.threads or 'default'}")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (other jobs slow every timing down)")
    print(f"run: {args.run}\n")
    print(f"{'command':<22}{'runs':>5}{'wall s (median)':>17}{'CPU s (median)':>16}{'own figure s':>14}")
    for name, n, w, c, o in rows:
        print(f"{name:<22}{n:>5}{w:>17.1f}{c:>16.1f}{o:>14.1f}")
    print("\nown figure: what the command prints about itself (report: build time; probe: total; inspect: pictures)")
    if probe_table:
        print("\n" + probe_table)


if __name__ == "__main__":
    main()
