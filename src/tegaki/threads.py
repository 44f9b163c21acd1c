"""How many CPU threads to use: all the idle cores, measured, not all the cores there are.

A thread pool larger than the cores that are free does not share them: torch's and OpenBLAS's
OpenMP workers spin while they wait for each other, and one worker descheduled by another
program stalls every step. On the project's 2-core machine `tegaki train` with two threads
took twice as long as with one while one other CPU-bound program ran, and seven times as long
with more load. So the default is measured: the cores not kept busy by other programs, over the
time since tegaki started (at least SAMPLE_S), from /proc/stat minus this process's own CPU time.

    from tegaki import threads
    n = threads.idle_cores()        # 1 .. the cores this process may run on
    threads.use(n)                  # torch's intra-op pool and the BLAS/OpenMP pools

Where /proc/stat cannot be read (not Linux), the default is every core, as before.
"""

from __future__ import annotations

import math
import os
import time

SAMPLE_S = 0.15  # the shortest window the busy measure is taken over
_LIMITS = []     # threadpoolctl's controllers, kept alive while the limit holds


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _snapshot() -> tuple[float, float, float] | None:
    """(seconds of busy CPU on the machine, seconds of CPU used by this process, wall seconds)."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    if len(fields) < 5:
        return None
    ticks = [int(x) for x in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # everything but idle and iowait
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    t = os.times()
    return busy / hz, t.user + t.system, time.monotonic()


_START = _snapshot()  # taken when tegaki.threads is first imported (the CLI imports it first thing)


def others_busy(since: tuple[float, float, float] | None = None) -> float | None:
    """How many cores other programs kept busy since `since` (default: since tegaki started),
    waiting until at least SAMPLE_S has passed; None where it cannot be measured."""
    start = since or _START
    if start is None:
        return None
    if time.monotonic() - start[2] < SAMPLE_S:
        time.sleep(SAMPLE_S - (time.monotonic() - start[2]))
    end = _snapshot()
    if end is None:
        return None
    wall = end[2] - start[2]
    other = (end[0] - start[0]) - (end[1] - start[1])  # the machine's busy time less our own
    return max(0.0, other / wall)


def idle_cores(since: tuple[float, float, float] | None = None) -> int:
    """The default thread count: the cores other programs leave free, at least 1. A core is
    counted free unless others keep it more than half busy."""
    n = cores()
    busy = others_busy(since)
    if busy is None:
        return n
    return max(1, min(n, math.floor(n - busy + 0.5)))


def use(n: int | None) -> int:
    """Set torch's intra-op threads and the BLAS/OpenMP pools to n (None: idle_cores()); the count used."""
    n = idle_cores() if n is None else n
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    _LIMITS.append(threadpool_limits(n))
    return n
