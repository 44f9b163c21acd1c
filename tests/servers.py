"""`tegaki serve` in a process of its own, for the tests that need a real server process.

    proc, url = start(["--no-save", "--workers", "2"], log_path)   # waits for /api/health
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid: int) -> list[int]:
    """The processes pid started (Linux /proc; [] where it cannot be read)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def start(args: list[str], log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Start `python -m tegaki serve --port P *args` with its output in `log`; (process, base URL)
    once it answers /api/health (AssertionError with the log if it dies or takes longer than timeout)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tegaki", "serve", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"the server did not come up in {timeout:g} s: {log.read_text()}")
        time.sleep(0.3)
