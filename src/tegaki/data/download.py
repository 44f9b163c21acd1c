"""Download a file from a list of mirrors, verified by checksum, written atomically.

The bytes go to a temporary file of this process's own in the destination folder
(`.<name>.<pid>.<random>.partial`, so two processes fetching into one cache never share one);
only a file whose checksum matches is renamed to `dest`, atomically. A failed or interrupted
mirror is retried, then the next one is tried, all within one deadline per file. Nothing
half-written is left behind: the temporary file is removed on every failure path, and ones
that a killed process left (older than an hour) are removed when a download starts.
A download without a checksum is refused unless the caller asks for it (`allow_unverified`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Sequence

from tegaki.errors import TegakiError

#: temporary files older than this (seconds) belong to no live download and are removed
STALE_AFTER = 3600.0

_log = logging.getLogger(__name__)


def payload_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, decompressed first if it is gzip."""
    h = hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise TegakiError(f"{path}: cannot read ({e}); delete it and fetch it again") from None
    return h.hexdigest()


def file_md5(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, checksum: dict | None) -> str | None:
    """Return None if `path` matches `checksum` ({'sha256': payload} or {'md5': file}), else why not."""
    if not checksum:
        return None
    if "sha256" in checksum:
        try:
            got = payload_sha256(path)
        except TegakiError:
            return "its gzip stream is damaged"
        if got != checksum["sha256"]:
            return f"SHA-256 of its content is {got[:16]}..., expected {checksum['sha256'][:16]}..."
    if "md5" in checksum:
        got = file_md5(path)
        if got != checksum["md5"]:
            return f"MD5 is {got}, expected {checksum['md5']}"
    return None


class _Progress:
    """A one-line progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self, name: str, total: int | None, stream=None):
        self.name, self.total, self.done = name, total, 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last > 0.1:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r  {self.name} [{bar:<30}] {frac:4.0%} {self.done / 1e6:.1f} MB")
        else:
            self.stream.write(f"\r  {self.name} {self.done / 1e6:.1f} MB")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


class _TooLong(ValueError):
    pass


class _Interrupted(OSError):
    """The connection closed before the whole answer came (worth another try)."""


class _Deadline(Exception):
    pass


def _retryable(e: Exception) -> bool:
    """A mirror that answers 404 or 403 will answer the same again; timeouts, 5xx and cut connections may not."""
    if isinstance(e, _TooLong):
        return False
    if isinstance(getattr(e, "reason", None), socket.gaierror):
        return False  # the host name does not resolve: offline, or a dead mirror
    code = getattr(e, "code", None)
    return code is None or code >= 500 or code in (408, 429)


def _reason(e: Exception) -> str:
    """Why a try failed, on one line (urllib's redirect-loop message spans several)."""
    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {e.reason}"
    elif isinstance(e, http.client.IncompleteRead):
        text = f"interrupted: the connection closed after {len(e.partial):,} bytes"
    else:
        text = str(getattr(e, "reason", None) or e) or type(e).__name__
    return " ".join(text.split())


def _fetch(url: str, tmp: Path, timeout: float, t_end: float, max_bytes: int, bar_name: str, stream) -> None:
    """One request: the answer's body into `tmp` (a new file), or an exception saying why not."""
    wait = max(0.05, min(timeout, t_end - time.monotonic()))  # each connect and read waits at most this
    with urllib.request.urlopen(url, timeout=wait) as r, open(tmp, "xb") as f:
        length = r.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        bar = _Progress(bar_name, length, stream)
        read = getattr(r, "read1", r.read)  # read1: returns what has arrived, so a trickle meets the deadline
        while block := read(1 << 16):
            f.write(block)
            bar.update(len(block))
            if bar.done > max_bytes:  # a mirror streaming without end must not fill the disk
                raise _TooLong(f"more than {max_bytes:,} bytes; not the file expected")
            if time.monotonic() > t_end:
                raise _Deadline(f"{bar.done:,} bytes had come")
        bar.close()
    if length is not None and bar.done < length:
        raise _Interrupted(f"interrupted: the connection closed after {bar.done:,} of {length:,} bytes")


def _intact(path: Path) -> str | None:
    """For a file without a checksum: None if it is not gzip or its gzip stream reads to the end, else why not."""
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return None
    try:
        payload_sha256(path)
    except TegakiError:
        return "its gzip stream is damaged"
    return None


def _attempt(url: str, dest: Path, checksum: dict | None, opts: dict) -> tuple[str | None, bool]:
    """One try at one mirror: (None, _) when `dest` now holds the verified file, else (why not, worth retrying)."""
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"  # this process's own
    try:
        _fetch(url, tmp, opts["timeout"], opts["t_end"], opts["max_bytes"], dest.name, opts["stream"])
        why = verify(tmp, checksum) if checksum else _intact(tmp)
        if why:
            return f"checksum mismatch ({why})", False  # a wrong file will not get better by retrying
        os.replace(tmp, dest)  # atomic: another process's rename of the same verified file is harmless
        return None, False
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        return _reason(e), _retryable(e)
    finally:
        tmp.unlink(missing_ok=True)  # every failure path, Ctrl-C and the deadline included


def clean_stale(folder: Path, older_than: float = STALE_AFTER) -> list[str]:
    """Remove the temporary files (`*.partial`, `.*.tmp`) a killed process left in `folder`; their names."""
    now, gone = time.time(), []
    for p in folder.iterdir() if folder.is_dir() else ():
        if not (p.name.endswith(".partial") or (p.name.startswith(".") and p.name.endswith(".tmp"))):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than:
                p.unlink()
                gone.append(p.name)
        except OSError:
            pass  # another process removed it first
    return gone


def download(urls: Sequence[str], dest: str | os.PathLike, checksum: dict | None = None,
             retries: int = 2, timeout: float = 30.0, log: Callable[[str], None] | None = None,
             progress_stream=None, backoff: float = 0.5, max_bytes: int = 1 << 30,
             deadline: float | None = 900.0, allow_unverified: bool = False) -> str:
    """Fetch the first mirror in `urls` that gives a file matching `checksum`; return its URL.

    Each mirror is tried up to `retries + 1` times (not again after a 4xx answer or a checksum
    mismatch; again after a timeout, a 5xx or a connection cut mid-answer); an answer longer than
    `max_bytes` is abandoned, and the whole download of this file gives up after `deadline`
    seconds (None: no deadline). Without a checksum the download is refused unless
    `allow_unverified`, which logs a warning (and still checks that a gzip file is whole).
    """
    dest = Path(dest)
    if not checksum and not allow_unverified:
        raise TegakiError(f"download of {dest.name}: no checksum to verify it against; pass checksum="
                          "{'sha256': ...} or {'md5': ...}, or allow_unverified=True to accept any file")
    say = log or (lambda m: None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for name in clean_stale(dest.parent):
        say(f"removed {name}, left by an interrupted download")
    opts = {"timeout": timeout, "max_bytes": max_bytes, "stream": progress_stream,
            "t_end": time.monotonic() + deadline if deadline else math.inf}
    errors = []
    try:
        for url in urls:
            for attempt in range(retries + 1):
                if time.monotonic() > opts["t_end"]:
                    raise _Deadline(f"{len(errors)} attempt(s) had failed")
                why, again = _attempt(url, dest, checksum, opts)
                if why is None:
                    _done(dest, url, checksum, say)
                    return url
                errors.append(f"{url}: {why}")
                again = again and attempt < retries
                say(f"{url}: {why}; trying the next mirror" if why.startswith("checksum") else
                    f"download of {url} failed ({why})" + ("; retrying" if again else ""))
                if not again:
                    break
                time.sleep(max(0.0, min(backoff * 2.0 ** attempt, 5.0, opts["t_end"] - time.monotonic())))
    except _Deadline as e:
        raise TegakiError(f"could not download {dest.name} within its {deadline:g} s deadline ({e}; the mirror "
                          "is too slow); try again later, or pass a longer deadline") from None
    unique = list(dict.fromkeys(errors))
    raise TegakiError(f"could not download {dest.name} from any of {len(urls)} mirror(s): " + "; ".join(unique[-3:]))


def _done(dest: Path, url: str, checksum: dict | None, say: Callable[[str], None]) -> None:
    size = f"{dest.stat().st_size / 1e6:.1f} MB"
    if checksum:
        say(f"downloaded {dest.name} from {url} ({size}, checksum verified)")
        return
    msg = f"downloaded {dest.name} from {url} ({size}) WITHOUT a checksum: not verified (allow_unverified=True)"
    _log.warning(msg)
    say(f"warning: {msg}")
