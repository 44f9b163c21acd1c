"""The `tegaki` command: the parser and `main`, nothing else.

Each command lives in tegaki/commands/, one module with `register(subparsers)` and its
`cmd_*` function; what several share (the environment turned into arguments, data loading,
threads) is in tegaki/commands/common.py, which imports nothing from here. Every user mistake
ends as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tegaki import __version__
from tegaki import threads  # noqa: F401 (first: the busy measure starts when tegaki does)
from tegaki.commands.common import apply_threads, err  # noqa: F401 (kept for callers)
from tegaki.commands.train import DEFAULT_PRESET, RESUME_FIXED  # noqa: F401 (kept for callers)
from tegaki.errors import TegakiError, Terminated, os_error_line

COMMAND_MODULES = ("data", "summary", "train", "evaluate", "inspect", "report", "probe", "predict", "serve",
                   "export", "ensemble")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is ONE line on stderr (and exit status 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tegaki", description="tegaki: a workbench for handwritten-digit recognition")
    p.add_argument("--version", action="version", version=f"tegaki {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tegaki.commands.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the run as its command
    try:
        return args.func(args) or 0
    except TegakiError as e:
        err(f"tegaki: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("tegaki: interrupted")
        return 130
    except Terminated:  # SIGTERM before training's own loop could stop cleanly (while the teachers answer)
        err("tegaki: stopped by SIGTERM")
        return 143
    except BrokenPipeError:
        return 0
    except OSError as e:  # a folder that cannot be written, a full disk ...
        err(f"tegaki: error: {os_error_line(e)}")
        return 2
