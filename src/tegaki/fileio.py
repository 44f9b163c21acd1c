"""Atomic file writing: a temporary name in the same folder, then a rename.

A crash or Ctrl-C mid-write leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any


TMP_GLOB = ".*.tmp"  # the temporary files atomic_write_bytes makes (and a killed process may leave)
_TMP = re.compile(r"^\.(.+)\.\d+\.[0-9a-f]+\.tmp$")


def meant_file(path: Path) -> Path:
    """The file a temporary name stands for (.model.json.123.ab12cd34.tmp -> model.json); others unchanged."""
    m = _TMP.match(path.name)
    return path.parent / m.group(1) if m else path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened exclusively: unlike mkstemp, the file gets the usual permissions (umask)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    # numpy scalars and arrays, paths
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
