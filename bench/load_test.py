"""Load test of `tegaki serve`: requests/s, latency and memory of POST /api/predict with drawn digits.

    python bench/load_test.py                       # starts its own server (bundled model) and measures
    python bench/load_test.py --workers 2           # the server with two worker processes
    python bench/load_test.py --no-batch            # the server without request batching (to compare)
    python bench/load_test.py --model runs/x        # another model
    python bench/load_test.py --engine onnx         # the server runs the network with ONNX Runtime
    python bench/load_test.py --url http://127.0.0.1:8000   # an already running server (loopback only)

The server runs in separate processes (`python -m tegaki serve`), on the loopback interface only.
Each level of concurrency (1, 8, 32 and 128 clients by default) runs for a bounded time and a
bounded number of requests, after a warm-up; then a soak at 32 clients (60 s by default) samples
the server's memory every second. The payload is what a drawing client sends: the page's 280x280
canvas reduced to a 140x140 RGBA PNG of black strokes on white (ten different digits, in turn;
--size 280 sends the full canvas), as multipart/form-data.

The client is one asyncio process with one keep-alive connection per simulated client, writing
each request's prepared bytes and reading the answer's status line, headers and body itself (an
HTTP library costs more CPU per request than the server being measured, on the same two cores).
Every answer is checked: status 200 and a JSON body naming the digit that was drawn.

Printed: requests per second, client-side latency p50/p99, the server's own time per request
(its X-Process-Time header) p50/p99, the server processes' CPU time per request (all workers),
errors (any non-200 answer, a wrong digit or a failed request), and the soak's memory (RSS of all
server processes) at its start, its largest and its end. The exit status is 1 if there was any
error. The machine (CPU, cores, load average) is printed with the table: timings taken while other
programs use the CPU are noisy, so rerun it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from _machine import cpu_name, load_average  # bench/_machine.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from servers import children, free_port  # noqa: E402  tests/servers.py
from sketches import DIGITS, drawing  # noqa: E402  tests/sketches.py

BOUNDARY = "tegakiloadtest7f3a"


def machine() -> str:
    import torch

    return (f"{cpu_name()}; {os.cpu_count()} logical cores (affinity {len(os.sched_getaffinity(0))}); "
            f"load average {load_average(', ')}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


# the server's processes ---------------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def _tree_sum(pid: int | None, value) -> float:
    """value(fields of /proc/PID/stat after the name) summed over a process and its descendants; NaN
    without a pid."""
    if pid is None:
        return float("nan")
    total = 0.0
    for p in tree(pid):
        try:
            total += value(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split())
        except (OSError, IndexError):
            pass  # it ended meanwhile
    return total


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and its descendants so far, or NaN."""
    return _tree_sum(pid, lambda f: sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK"))


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process and its descendants, in MB, or NaN."""
    return _tree_sum(pid, lambda f: int(f[21]) * os.sysconf("SC_PAGE_SIZE") / 1e6)


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
           "--threads", str(args.threads), "--workers", str(args.workers)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--engine", args.engine] if args.engine else []
    cmd += ["--max-batch", "1"] if args.no_batch else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            sys.exit(f"load_test: the server did not start: {proc.stderr.read().strip()}")
        try:
            status, _, _ = asyncio.run(fetch_once(url, b"GET /api/health HTTP/1.1\r\nHost: %s\r\n\r\n"))
            if status == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("load_test: the server did not answer /api/health within 120 s")


# the client -----------------------------------------------------------------------------------------
def request_bytes(url: str, png: bytes) -> bytes:
    """One complete POST /api/predict request (keep-alive) carrying png as multipart/form-data."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"drawing.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()
    host = urlparse(url).netloc
    head = (f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one HTTP/1.1 answer with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def fetch_once(url: str, template: bytes) -> tuple[int, dict[str, str], bytes]:
    u = urlparse(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(template.replace(b"%s", u.netloc.encode()) if b"%s" in template else template)
        return await asyncio.wait_for(read_answer(reader), 10)
    finally:
        writer.close()


async def level(url: str, requests: list[tuple[bytes, int]], clients: int, seconds: float, max_requests: int,
                pid: int | None = None) -> dict:
    """`clients` concurrent keep-alive connections posting drawings until the time or the request
    budget runs out."""
    latencies: list[float] = []
    server: list[float] = []
    errors: list[str] = []
    sent = 0
    u = urlparse(url)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent
        conn = None
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            data, digit = requests[sent % len(requests)]
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(u.hostname, u.port)
                conn[1].write(data)
                status, headers, body = await asyncio.wait_for(read_answer(conn[0]), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
            latencies.append(time.perf_counter() - t)
            if status != 200:
                errors.append(f"HTTP {status}: {body[:100]!r}")
                continue
            label = json.loads(body).get("label")
            if label != digit:
                errors.append(f"drew a {digit}, the answer was {label}")
            server.append(float(headers.get("x-process-time", "nan")) / 1000)
            if headers.get("connection", "").lower() == "close":
                conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    lat = np.array(latencies or [np.nan]) * 1000
    srv = np.array(server or [np.nan]) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "rps": len(latencies) / wall, "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
            "s50": np.percentile(srv, 50), "s99": np.percentile(srv, 99), "cpu": cpu / max(1, len(latencies)) * 1000}


async def soak(url: str, requests, seconds: float, pid: int | None) -> dict:
    """32 clients for `seconds`, the server's memory sampled every second."""
    samples: list[float] = []

    async def sample() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            samples.append(rss_mb(pid))
            await asyncio.sleep(1.0)

    row, _ = await asyncio.gather(level(url, requests, 32, seconds, 10 ** 9, pid), sample())
    row["rss"] = samples
    return row


# the table ------------------------------------------------------------------------------------------
def print_table(args, rows: list[dict], soaked: dict | None, proc, info: dict, sizes: list[int]) -> None:
    print(f"tegaki load test: POST /api/predict, multipart {args.size}x{args.size} PNG drawings ({min(sizes):,}-"
          f"{max(sizes):,} bytes); model {info.get('name')} ({info.get('parameters', 0):,} parameters, "
          f"engine {info.get('engine')})")
    print(f"machine: {machine()}")
    what = (f"started by this script: {args.workers} worker process{'es' if args.workers > 1 else ''}, torch threads "
            f"{args.threads}, batching {'off' if args.no_batch else 'on'}") if proc else args.url
    print(f"server: {what}; client: one asyncio process on the same machine; {args.seconds:g} s or "
          f"{args.max_requests} requests per level\n")
    print("| clients | requests | errors | requests/s | latency p50 (ms) | latency p99 (ms) | server p50 (ms) "
          "| server p99 (ms) | server CPU per request (ms) |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows + ([soaked] if soaked else []):
        name = f"{r['clients']} (soak)" if r is soaked else str(r["clients"])
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['s50']:.2f} | {r['s99']:.2f} | {r['cpu']:.2f} |")
    print("\nlatency: as the client sees it; server: the X-Process-Time header (from the request's arrival to the "
          "answer's start);\nserver CPU: the server processes' user+system CPU time divided by the requests answered "
          "(less sensitive to other load)")
    if soaked and soaked["rss"]:
        rss = soaked["rss"]
        print(f"soak: {args.soak:g} s at 32 clients; server memory (RSS, all processes) {rss[0]:.0f} MB at the "
              f"start, {max(rss):.0f} MB at most, {rss[-1]:.0f} MB at the end ({len(rss)} samples)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running tegaki server (loopback only); default: start one")
    ap.add_argument("--model", help="run folder for the server this script starts (default: the bundled model)")
    ap.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client counts (default 1,8,32,128)")
    ap.add_argument("--seconds", type=float, default=6.0, help="time per level (default 6)")
    ap.add_argument("--max-requests", type=int, default=6000, help="requests per level at most (default 6000)")
    ap.add_argument("--soak", type=float, default=60.0, help="seconds of the memory soak at 32 clients (0: none)")
    ap.add_argument("--engine", help="engine of the server this script starts (torch, onnx ...; default torch)")
    ap.add_argument("--size", type=int, default=140, help="side of the PNG sent (default 140, as the page sends)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker of the server (default 1)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes of the server it starts (default 1)")
    ap.add_argument("--no-batch", action="store_true", help="start the server with batching off (to compare)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if any(c < 1 or c > 512 for c in levels) or not 0 < args.seconds <= 120 or args.max_requests < 1 \
            or not 0 <= args.soak <= 600 or not 1 <= args.workers <= 16:
        sys.exit("load_test: concurrency 1..512, seconds up to 120, max-requests >= 1, soak 0..600, workers 1..16")
    proc = None
    if args.url:
        check_loopback(args.url)
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    try:
        pngs = {d: drawing(s, size=args.size) for d, s in DIGITS.items()}
        requests = [(request_bytes(url, png), d) for d, png in pngs.items()]
        _, _, body = asyncio.run(fetch_once(url, b"GET /api/model HTTP/1.1\r\nHost: %s\r\n\r\n"))
        info = json.loads(body)
        pid = proc.pid if proc else None
        asyncio.run(level(url, requests, 4, 2.0, 400))  # warm-up (every worker)
        rows = [asyncio.run(level(url, requests, c, args.seconds, args.max_requests, pid)) for c in levels]
        soaked = asyncio.run(soak(url, requests, args.soak, pid)) if args.soak else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print_table(args, rows, soaked, proc, info, [len(p) for p in pngs.values()])
    bad = [r for r in rows + ([soaked] if soaked else []) if r["errors"]]
    for r in bad:
        print(f"errors at {r['clients']} clients ({r['errors']}), first: {r['first_error'][0]}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
