"""`tegaki serve --workers N`: N server processes on one port, each with its own listening socket.

    run_workers(2, "127.0.0.1", 8000, uvicorn_options)   # blocks until Ctrl-C or SIGTERM

Each worker binds its own socket with SO_REUSEPORT, so the kernel spreads new connections evenly
across the workers. (With one socket shared by all, as uvicorn's own --workers does, whichever
process wakes first accepts every connection waiting; a burst of keep-alive clients then all land
on one process while the other idles: measured here, 8 clients were served at one process's rate.)
Where SO_REUSEPORT does not exist (Windows), uvicorn's shared-socket workers are used instead.

Every worker builds its app with serve.app.app_from_env from $TEGAKI_SERVE_APP, which the caller
sets before this is called. A worker that dies is started again, unless the workers keep dying
within seconds of starting (then everything stops, with one line saying so). Ctrl-C or SIGTERM
stops every worker and waits for them.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import socket
import sys
import time

from tegaki.errors import TegakiError
from tegaki.serve.protocol import HeaderDeadline

APP = "tegaki.serve.app:app_from_env"
QUICK_DEATHS = 3  # workers dying within RESTART_S of starting, in a row, before giving up
RESTART_S = 5.0


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def _socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, options: dict) -> None:
    import uvicorn

    # uvicorn handles SIGINT (Ctrl-C reaches the whole process group) and the parent's SIGTERM alike
    server = uvicorn.Server(uvicorn.Config(APP, factory=True, host=host, port=port, http=HeaderDeadline, **options))
    server.run(sockets=[_socket(host, port)])


def run_workers(n: int, host: str, port: int, options: dict) -> None:
    """Run n worker processes until Ctrl-C or SIGTERM (see the module docstring)."""
    if not reuse_port_supported():
        import uvicorn

        uvicorn.run(APP, factory=True, workers=n, host=host, port=port, http=HeaderDeadline, **options)
        return
    ctx = mp.get_context("spawn")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    old = signal.signal(signal.SIGTERM, stop)
    procs: list = [None] * n
    started = [0.0] * n
    quick = 0
    try:
        while not stopping:
            for i in range(n):
                p = procs[i]
                if p is not None and p.is_alive():
                    continue
                if p is not None:  # it died: start it again, unless they keep dying at once
                    quick = quick + 1 if time.monotonic() - started[i] < RESTART_S else 0
                    if quick >= QUICK_DEATHS:
                        raise TegakiError(f"the server's workers keep stopping at start (exit status {p.exitcode}); "
                                          "see the messages above, or run with --workers 1")
                    print(f"tegaki serve: worker {i + 1} stopped (exit status {p.exitcode}); starting it again",
                          file=sys.stderr)
                procs[i] = ctx.Process(target=_worker, args=(host, port, options), name=f"tegaki-serve-{i + 1}")
                procs[i].start()
                started[i] = time.monotonic()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in procs:
            if p is not None and p.is_alive():
                p.terminate()  # uvicorn finishes the requests in flight, then exits
        for p in procs:
            if p is not None:
                p.join(timeout=20)
                if p.is_alive():
                    p.kill()
