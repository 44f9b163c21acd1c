"""Download a file from a list of mirrors, verified by checksum, written atomically.

The bytes go to `<dest>.partial`; only a file whose checksum matches is renamed to `dest`.
A failed mirror is retried, then the next one is tried. Nothing half-written is left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
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
        got = payload_sha256(path)
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
            if self.total:
                frac = self.done / self.total
                bar = "#" * int(30 * frac)
                self.stream.write(f"\r  {self.name} [{bar:<30}] {frac:4.0%} {self.done / 1e6:.1f} MB")
            else:
                self.stream.write(f"\r  {self.name} {self.done / 1e6:.1f} MB")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def download(urls: Sequence[str], dest: str | os.PathLike, checksum: dict | None = None,
             retries: int = 2, timeout: float = 30.0, log: Callable[[str], None] | None = None) -> str:
    """Fetch the first mirror in `urls` that gives a file matching `checksum`; return its URL."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    errors = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r, open(partial, "wb") as f:
                    length = r.headers.get("Content-Length")
                    bar = _Progress(dest.name, int(length) if length and length.isdigit() else None)
                    for block in iter(lambda: r.read(1 << 16), b""):
                        f.write(block)
                        bar.update(len(block))
                    bar.close()
                why = verify(partial, checksum)
                if why is None:
                    os.replace(partial, dest)
                    return url
                errors.append(f"{url}: checksum mismatch ({why})")
                break  # a wrong file will not get better by retrying this mirror
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url}: {reason}")
                if log:
                    log(f"download of {url} failed ({reason}); attempt {attempt + 1} of {retries + 1}")
                if attempt < retries:
                    time.sleep(min(2.0 ** attempt * 0.2, 2.0))
            finally:
                if partial.exists():
                    partial.unlink()
    unique = list(dict.fromkeys(errors))
    raise TegakiError(f"could not download {dest.name}: " + "; ".join(unique[-3:]))
