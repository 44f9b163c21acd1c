"""Load test of `tegaki serve`: requests/s and latency of POST /api/predict with drawn digits.

    python bench/load_test.py                       # starts its own server (bundled model) and measures
    python bench/load_test.py --model runs/x        # another model
    python bench/load_test.py --engine onnx         # the server runs the network with ONNX Runtime
    python bench/load_test.py --url http://127.0.0.1:8000   # an already running server (loopback only)

The server runs in a separate process (`python -m tegaki serve`), on the loopback interface
only. Each level of concurrency (1, 8 and 32 clients by default) runs for a bounded time and a
bounded number of requests, after a warm-up. The payload is what the drawing page sends: its
280x280 canvas reduced to a 140x140 RGBA PNG of black strokes on white (a few different digits, in
turn; --size 280 sends the full canvas). Printed: requests
per second, client-side latency p50/p99, the server's own time per request (its X-Process-Time
header) p50/p99, the server process's CPU time per request, and errors (any non-200 answer or failed request); the exit status is 1 if there
was any error. The machine (CPU, cores, load average) is printed with the table: timings taken
while other programs use the CPU are noisy, so rerun it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import platform
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import numpy as np

from _machine import cpu_name, load_average  # bench/_machine.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from sketches import DIGITS, drawing  # noqa: E402  tests/sketches.py


def machine() -> str:
    cpu = cpu_name()
    load = load_average(", ")
    import torch

    return (f"{cpu}; {os.cpu_count()} logical cores (affinity {len(os.sched_getaffinity(0))}); "
            f"load average {load}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return float("nan")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"load_test: {url} is not a loopback address; this script only loads this machine's own server")


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tegaki", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-save",
           "--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    if args.engine:
        cmd += ["--engine", args.engine]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            sys.exit(f"load_test: the server did not start: {proc.stderr.read().strip()}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("load_test: the server did not answer /api/health within 120 s")


async def level(url: str, payloads: list[bytes], clients: int, seconds: float, max_requests: int,
                pid: int | None = None) -> dict:
    """`clients` concurrent loops posting drawings until the time or the request budget runs out."""
    latencies: list[float] = []
    server: list[float] = []
    errors: list[str] = []
    sent = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker(k: int) -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                data = payloads[sent % len(payloads)]
                t = time.perf_counter()
                try:
                    r = await client.post("/api/predict", files={"file": ("drawing.png", data, "image/png")})
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                else:
                    server.append(float(r.headers.get("x-process-time", "nan")) / 1000)

        t0, c0 = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    lat = np.array(latencies) * 1000
    srv = np.array(server) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "rps": len(latencies) / wall, "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
            "s50": np.percentile(srv, 50), "s99": np.percentile(srv, 99), "cpu": cpu / max(1, len(latencies)) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running tegaki server (loopback only); default: start one")
    ap.add_argument("--model", help="run folder for the server this script starts (default: the bundled model)")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    ap.add_argument("--seconds", type=float, default=6.0, help="time per level (default 6)")
    ap.add_argument("--max-requests", type=int, default=3000, help="requests per level at most (default 3000)")
    ap.add_argument("--engine", help="engine of the server this script starts (torch, onnx ...; default torch)")
    ap.add_argument("--size", type=int, default=140, help="side of the PNG sent (default 140, as the page sends)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server it starts (default 1)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if any(c < 1 or c > 256 for c in levels) or not 0 < args.seconds <= 120 or args.max_requests < 1:
        sys.exit("load_test: concurrency 1..256, seconds up to 120, max-requests >= 1")
    proc = None
    if args.url:
        check_loopback(args.url)
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    try:
        payloads = [drawing(d, size=args.size) for d in DIGITS.values()]
        info = httpx.get(url + "/api/model", timeout=10).json()
        asyncio.run(level(url, payloads, 1, 2.0, 50))  # warm-up
        pid = proc.pid if proc else None
        rows = [asyncio.run(level(url, payloads, c, args.seconds, args.max_requests, pid)) for c in levels]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
    print(f"tegaki load test: POST /api/predict, multipart {args.size}x{args.size} PNG drawings ({len(payloads[0]):,}-"
          f"{max(map(len, payloads)):,} bytes); model {info.get('name')} ({info.get('parameters'):,} parameters, "
          f"engine {info.get('engine')})")
    print(f"machine: {machine()}")
    print(f"server: {'started by this script, one uvicorn process, torch threads ' + str(args.threads) if proc else url}; "
          f"client: one asyncio process on the same machine; {args.seconds:g} s or {args.max_requests} requests per level\n")
    print("| clients | requests | errors | requests/s | latency p50 (ms) | latency p99 (ms) | server p50 (ms) "
          "| server p99 (ms) | server CPU per request (ms) |")
    print("|--------:|---------:|-------:|-----------:|-----------------:|-----------------:|----------------:"
          "|----------------:|----------------------------:|")
    for r in rows:
        print(f"| {r['clients']:7d} | {r['requests']:8d} | {r['errors']:6d} | {r['rps']:10.1f} | {r['p50']:16.2f} | "
              f"{r['p99']:16.2f} | {r['s50']:15.2f} | {r['s99']:15.2f} | {r['cpu']:27.2f} |")
    print("\nlatency: as the client sees it; server: the X-Process-Time header (from the request's arrival to the "
          "answer's start);\nserver CPU: the server process's user+system CPU time divided by the requests answered "
          "(less sensitive to other load)")
    bad = [r for r in rows if r["errors"]]
    for r in bad:
        print(f"errors at {r['clients']} clients, first: {r['first_error'][0]}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
