"""Read and write IDX files, the format MNIST and its relatives are distributed in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian.
Files may be gzip-compressed; a `.gz` suffix or the gzip magic bytes say so.

Reading never trusts the header blindly: the size it announces is checked against a cap, and
(for raw files) against the file's size, before anything large is allocated; the payload is
then read (gzip: decompressed) in blocks up to the announced size and one byte more, so a header
that lies costs at most the bytes actually present, and a file that is really large costs its size
once (the array is made over the buffer the blocks were read into), not twice.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from tegaki.errors import TegakiError
from tegaki.fileio import atomic_write_bytes

# type code -> numpy dtype (big-endian where it matters)
DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {v.newbyteorder("="): k for k, v in DTYPES.items()}

#: the largest payload a header may announce (1 GiB); MNIST's biggest file is 47 MB
MAX_BYTES = 1 << 30
_BLOCK = 1 << 22

_WHAT = {1: "a labels file (1 dimension)", 3: "an images file (3 dimensions)"}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _header(f, path: Path, ndim: int | None) -> tuple[bytes, np.dtype, tuple[int, ...]]:
    """(the header's bytes, the dtype, the dimensions) of an open IDX file, or a TegakiError."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in DTYPES:
        raise TegakiError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'}); "
                          "is it the right file, or an HTML error page saved by a failed download?")
    n_dims = magic[3]
    if not 1 <= n_dims <= 4:
        raise TegakiError(f"{path}: IDX header claims {n_dims} dimensions (expected 1 to 4); "
                          "the file is corrupt: delete it and fetch it again")
    if ndim is not None and n_dims != ndim:
        raise TegakiError(f"{path}: is {_WHAT.get(n_dims, f'an IDX file of {n_dims} dimensions')} where "
                          f"{_WHAT.get(ndim, f'{ndim} dimensions')} was expected; the files are mixed up "
                          "or misnamed")
    raw_dims = f.read(4 * n_dims)
    if len(raw_dims) < 4 * n_dims:
        raise TegakiError(f"{path}: truncated IDX header; delete the file and fetch it again")
    return magic + raw_dims, DTYPES[magic[2]], struct.unpack(f">{n_dims}I", raw_dims)


def _read_payload(f, n: int, digest) -> bytearray:
    """Up to `n` bytes, read in blocks into one growing buffer: memory follows the bytes really there
    (at most an eighth more, the buffer's headroom), never the header's word, and is never copied twice."""
    buf = bytearray()
    while len(buf) < n:
        block = f.read(min(_BLOCK, n - len(buf)))  # a gzip stream is decompressed this far and no further
        if not block:
            break
        digest.update(block)
        buf += block
    return buf


def _to_array(buf: bytearray, dtype: np.dtype, dims: tuple[int, ...]) -> np.ndarray:
    """The native-order array of `dims` over `buf` itself (no copy; multi-byte values swapped in place)."""
    a = np.frombuffer(buf, dtype)
    if not dtype.isnative:
        a = a.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return a.reshape(dims)


def read_idx_digest(path: str | os.PathLike, max_bytes: int = MAX_BYTES,
                    ndim: int | None = None) -> tuple[np.ndarray, str]:
    """(array, SHA-256 of the decompressed file) of an IDX file, raw or gzip.

    `ndim`, when given, is the number of dimensions the caller expects (3 for images, 1 for
    labels): a file with another number is reported as mixed up rather than read. A gzip file is
    decompressed as a stream, never beyond the header's size plus one byte (and `max_bytes` at most).
    """
    path = Path(path)
    if not path.is_file():
        raise TegakiError(f"{path}: no such file; check the path or fetch the dataset with 'tegaki data fetch'")
    digest = hashlib.sha256()
    try:
        gz = path.suffix == ".gz" or _is_gzip(path)
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            header, dtype, dims = _header(f, path, ndim)
            nbytes = dtype.itemsize
            for d in dims:  # Python integers: a lying header cannot overflow this
                nbytes *= d
            if nbytes > max_bytes:
                raise TegakiError(f"{path}: IDX header announces {nbytes:,} bytes (dimensions {dims}), "
                                  f"more than the {max_bytes:,} allowed; the file is corrupt")
            if not gz:
                present = path.stat().st_size - len(header)
                if present != nbytes:
                    what = "truncated" if present < nbytes else "longer than its header says"
                    raise TegakiError(f"{path}: {what}: {present:,} data bytes present, the header announces "
                                      f"{nbytes:,} (dimensions {dims}); delete the file and fetch it again")
            digest.update(header)
            payload = _read_payload(f, nbytes, digest)
            extra = f.read(1)  # one byte more tells an oversized file
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise TegakiError(f"{path}: cannot read ({_one_line(e)}); the file is damaged: delete it and fetch it "
                          "again") from None
    if len(payload) < nbytes:
        raise TegakiError(f"{path}: truncated: {len(payload):,} of {nbytes:,} data bytes present "
                          f"(dimensions {dims}); delete the file and fetch it again")
    if extra:
        raise TegakiError(f"{path}: longer than its header says (dimensions {dims}, {nbytes:,} data bytes); "
                          "the file is corrupt: delete it and fetch it again")
    try:
        return _to_array(payload, dtype, dims), digest.hexdigest()
    except ValueError:  # no data, but dimensions like (4294967295, 0, 4294967295): no array has that shape
        raise TegakiError(f"{path}: IDX header's dimensions {dims} make no array numpy can hold; the file is "
                          "corrupt: delete it and fetch it again") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_BYTES, ndim: int | None = None) -> np.ndarray:
    """Return the array stored in an IDX file (raw or gzip), in native byte order."""
    return read_idx_digest(path, max_bytes, ndim)[0]


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` as an IDX file, atomically; gzip when `compress` or the name ends in .gz."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in CODES:
        raise TegakiError(f"cannot store dtype {array.dtype} in IDX; use uint8, int8, int16, int32, float32 or float64")
    code = CODES[native]
    if not 1 <= array.ndim <= 4:
        raise TegakiError(f"IDX holds 1 to 4 dimensions, got an array of shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    data = header + body
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
