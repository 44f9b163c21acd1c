"""`tegaki serve [--model RUN] [--host 127.0.0.1] [--port 8000]`: the drawing page and the HTTP API.

This is where the environment is read (the app itself takes everything as arguments):
  the MNIST test set for "random test digit": --data-dir, else $TEGAKI_DATA_DIR/mnist, else the
    user cache; never downloaded here (the page works without it, minus that button)
  the drawings folder for "save as label N": --drawings, else $XDG_DATA_HOME/tegaki/drawings
    (~/.local/share/tegaki/drawings); --no-save turns saving off
Requests for another host name, or from another site's page, are refused (403); behind a proxy,
name the public host with --allow-host HOST (repeatable).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from tegaki.commands.common import check_reads_pictures
from tegaki.errors import TegakiError


def default_drawings(environ=None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tegaki" / "drawings"


def find_mnist_test(args) -> tuple[tuple[Path, Path] | None, str]:
    from tegaki.commands.common import data_kwargs
    from tegaki.data.sources import locate

    try:
        files, where = locate("mnist", fetch=False, **data_kwargs(args))
    except TegakiError as e:
        return None, str(e)
    return (files["t10k-images"], files["t10k-labels"]), where


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise TegakiError(f"--port must be 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TegakiError(f"--host {host}: not an address this machine can serve on ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
    except OSError as e:
        raise TegakiError(f"cannot listen on {host}:{port} ({e.strerror}); another program may be using it: "
                          "choose another --port") from None
    finally:
        s.close()


def allowed_hosts(args) -> list[str]:
    """--allow-host, plus --host itself when it is a name (the server's own name, on its port)."""
    hosts = list(args.allow_host or [])
    from tegaki.serve.app import is_ip

    if not is_ip(args.host):
        hosts.append(f"{args.host}:{args.port}")
    return hosts


def cmd_serve(args) -> int:
    import uvicorn

    from tegaki.predict import bundled_model_path
    from tegaki.run import load_run
    from tegaki.serve.app import ENV, Limits, create_app
    from tegaki.serve.batch import Batcher
    from tegaki.serve.protocol import HeaderDeadline
    from tegaki.serve.workers import run_workers

    if args.threads < 1:
        raise TegakiError(f"--threads must be at least 1, got {args.threads}")
    if args.max_upload_mb <= 0:
        raise TegakiError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.max_pixels < 1:
        raise TegakiError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    if not 1 <= args.workers <= 64:
        raise TegakiError(f"--workers must be 1..64, got {args.workers}")
    try:
        Batcher.check(args.max_batch, args.batch_wait_ms)
    except TegakiError as e:
        raise TegakiError(f"--max-batch / --batch-wait-ms: {e}") from None
    ref = args.model or bundled_model_path()
    if ref is None:
        raise TegakiError("no model named and no bundled model installed; pass --model RUN_FOLDER")
    run = load_run(ref)  # a bad run folder is one clear line here, not a failed server start
    check_reads_pictures(run)
    if args.engine == "onnx":
        from tegaki.export import need_onnx_engine

        need_onnx_engine()  # before the banner: not a traceback from the worker that builds the app
    check_port(args.host, args.port)
    mnist, where = find_mnist_test(args)
    drawings = None if args.no_save else Path(args.drawings).expanduser() if args.drawings else default_drawings()
    limits = Limits(max_upload=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    kw = dict(engine=args.engine, threads=args.threads, allow_hosts=allowed_hosts(args), max_batch=args.max_batch,
              batch_wait_ms=args.batch_wait_ms)
    host = f"[{args.host}]" if ":" in args.host else args.host
    acc = run.metrics.get("test_accuracy")
    print(f"tegaki serve: model {run.spec.name} ({run.path})" + (f", test accuracy {acc:.2%}" if acc else ""))
    print(f"  random test digits: {'MNIST test set from ' + where if mnist else 'off (' + where + ')'}")
    print(f"  drawings saved to:  {drawings or 'off (--no-save)'}")
    print(f"  open http://{host}:{args.port}/   (API docs: http://{host}:{args.port}/docs; Ctrl-C stops)")
    if args.workers > 1:
        print(f"  {args.workers} worker processes, each with the model and {args.threads} torch thread(s)")
    sys.stdout.flush()
    if args.workers == 1:
        uvicorn.run(create_app(run, mnist=mnist, drawings=drawings, limits=limits, **kw), http=HeaderDeadline,
                    host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
        return 0
    # several processes, each with its own socket on the port (serve/workers.py); each builds its
    # app with serve.app.app_from_env, which reads these arguments back from JSON
    os.environ[ENV] = json.dumps({"model": str(run.path), "mnist": [str(m) for m in mnist] if mnist else None,
                                  "drawings": str(drawings) if drawings else None, "limits": vars(limits), **kw})
    run_workers(args.workers, args.host, args.port, {"log_level": args.log_level, "access_log": args.access_log})
    return 0


def register(sub) -> None:
    from tegaki.engines import ENGINES
    from tegaki.serve.limits import MAX_BATCH, MAX_PIXELS, WAIT_MS

    p = sub.add_parser("serve", help="the drawing page and the HTTP API (FastAPI + uvicorn)")
    p.add_argument("--model", metavar="RUN", help="a run folder (default: the model bundled with tegaki)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--engine", choices=ENGINES, default="torch", help="which engine runs the network")
    p.add_argument("--data-dir", help="a folder with the MNIST IDX files, for 'random test digit'")
    p.add_argument("--drawings", metavar="DIR",
                   help="where 'save as label N' writes (default ~/.local/share/tegaki/drawings)")
    p.add_argument("--no-save", action="store_true", help="turn 'save as label N' off")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads per worker process (default 1: requests run side by side instead)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own copy of the model (default 1; "
                        "on a machine with spare cores, about one per core)")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH,
                   help=f"requests that arrive together share one network call of up to this many images "
                        f"(default {MAX_BATCH}; 1 turns batching off)")
    p.add_argument("--batch-wait-ms", type=float, default=WAIT_MS,
                   help=f"how long a batch may wait for photos still being decoded (default {WAIT_MS:g} ms; "
                        "drawings ready together never wait, nor does a lone request)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest request body in MB (default 8)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"largest image in pixels, read from its header (default {MAX_PIXELS:,}: 4096x4096)")
    p.add_argument("--allow-host", action="append", metavar="HOST",
                   help="also answer requests for this host name (HOST or HOST:PORT; repeatable), e.g. the "
                        "public name behind a proxy; other names and other sites' pages get 403")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
