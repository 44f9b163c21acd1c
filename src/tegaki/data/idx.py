"""Read and write IDX files, the format MNIST and its relatives are distributed in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the values in C order, big-endian.
Files may be gzip-compressed; a `.gz` suffix or the gzip magic bytes say so.

Reading never trusts the header blindly: the size it announces is checked against a cap and
against the bytes actually present before anything large is allocated.
"""

from __future__ import annotations

import gzip
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
CODES = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items()}
CODES[np.dtype("u1")] = 0x08
CODES[np.dtype("i1")] = 0x09

#: the largest payload a header may announce (1 GiB); MNIST's biggest file is 47 MB
MAX_BYTES = 1 << 30


def _open(path: Path):
    with open(path, "rb") as f:
        head = f.read(2)
    if path.suffix == ".gz" or head == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Return the array stored in an IDX file (raw or gzip), in native byte order."""
    path = Path(path)
    if not path.is_file():
        raise TegakiError(f"{path}: no such file; check the path or fetch the dataset with 'tegaki data fetch'")
    try:
        with _open(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in DTYPES:
                raise TegakiError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'}); "
                                  "is it the right file, or an HTML error page saved by a failed download?")
            dtype = DTYPES[magic[2]]
            ndim = magic[3]
            if not 1 <= ndim <= 4:
                raise TegakiError(f"{path}: IDX header claims {ndim} dimensions (expected 1 to 4); the file is corrupt")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise TegakiError(f"{path}: truncated IDX header; delete the file and fetch it again")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            count = int(np.prod(dims, dtype=np.int64))
            nbytes = count * dtype.itemsize
            if nbytes > max_bytes:
                raise TegakiError(f"{path}: IDX header announces {nbytes:,} bytes (dimensions {dims}), "
                                  f"more than the {max_bytes:,} allowed; the file is corrupt")
            payload = f.read(nbytes + 1)  # one byte more tells an oversized file
    except (OSError, EOFError, zlib.error) as e:
        raise TegakiError(f"{path}: cannot read ({e}); delete the file and fetch it again") from None
    if len(payload) < nbytes:
        raise TegakiError(f"{path}: truncated: {len(payload):,} of {nbytes:,} data bytes present "
                          f"(dimensions {dims}); delete the file and fetch it again")
    if len(payload) > nbytes:
        raise TegakiError(f"{path}: more data than its header announces (dimensions {dims}); the file is corrupt")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


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
