"""What every benchmark prints about the machine it ran on: the CPU's name and the load average.

    from _machine import cpu_name, load_average   # bench/ is on sys.path when a script there runs
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average(sep: str = "/") -> str:
    """The 1, 5 and 15-minute load averages joined by `sep`, or "n/a" where the OS has none."""
    try:
        return sep.join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"
