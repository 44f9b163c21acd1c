"""Download a file from a list of mirrors, verified by checksum, written atomically.

The bytes go to `<dest>.partial`; only a file whose checksum matches is renamed to `dest`.
A failed mirror is retried, then the next one is tried. Nothing half-written is left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from tegaki.errors import TegakiError


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
    except (OSError, EOFError) as e:
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


def _retryable(e: Exception) -> bool:
    """A mirror that answers 404 or 403 will answer the same again; timeouts and 5xx may not."""
    if isinstance(e, _TooLong):
        return False
    if isinstance(getattr(e, "reason", None), socket.gaierror):
        return False  # the host name does not resolve: offline, or a dead mirror
    code = getattr(e, "code", None)
    return code is None or code >= 500 or code in (408, 429)


def download(urls: Sequence[str], dest: str | os.PathLike, checksum: dict | None = None,
             retries: int = 2, timeout: float = 30.0, log: Callable[[str], None] | None = None,
             progress_stream=None, backoff: float = 0.5, max_bytes: int = 1 << 30) -> str:
    """Fetch the first mirror in `urls` that gives a file matching `checksum`; return its URL.

    Each mirror is tried up to `retries + 1` times (not again after a 4xx answer or a checksum
    mismatch); an answer longer than `max_bytes` is abandoned. The bytes go to `<dest>.partial`, renamed to `dest` only once verified; on any
    failure, Ctrl-C included, the partial file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    errors = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r, open(partial, "wb") as f:
                    length = r.headers.get("Content-Length")
                    bar = _Progress(dest.name, int(length) if length and length.isdigit() else None, progress_stream)
                    for block in iter(lambda: r.read(1 << 16), b""):
                        f.write(block)
                        bar.update(len(block))
                        if bar.done > max_bytes:  # a mirror streaming without end must not fill the disk
                            raise _TooLong(f"more than {max_bytes:,} bytes; not the file expected")
                    bar.close()
                why = verify(partial, checksum)
                if why is None:
                    os.replace(partial, dest)
                    if log:
                        log(f"downloaded {dest.name} from {url} ({dest.stat().st_size / 1e6:.1f} MB, checksum verified)")
                    return url
                errors.append(f"{url}: checksum mismatch ({why})")
                if log:
                    log(f"{url}: checksum mismatch ({why}); trying the next mirror")
                break  # a wrong file will not get better by retrying this mirror
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                if isinstance(e, urllib.error.HTTPError):
                    reason = f"HTTP {e.code} {e.reason}"
                errors.append(f"{url}: {reason}")
                again = attempt < retries and _retryable(e)
                if log:
                    log(f"download of {url} failed ({reason})" + ("; retrying" if again else ""))
                if not again:
                    break
                time.sleep(min(backoff * 2.0 ** attempt, 5.0))
            finally:
                if partial.exists():
                    partial.unlink()
    unique = list(dict.fromkeys(errors))
    raise TegakiError(f"could not download {dest.name} from any of {len(urls)} mirror(s): " + "; ".join(unique[-3:]))
