"""Large and damaged gzip IDX files: memory follows the real size, damage is one clean line.

The files are made here: a .gz a few hundred KB long announcing and holding tens of MiB (as a
1 MB .gz can announce and hold 1 GiB), and gzip streams damaged each way zlib and gzip report.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from tegaki.data.idx import read_idx, read_idx_digest, write_idx
from tegaki.errors import TegakiError

MiB = 1 << 20
N = 40  # the payload: N x 1024 x 1024 bytes (40 MiB), compressed to about 200 KB


def pattern(n_bytes: int) -> np.ndarray:
    return np.tile(np.arange(256, dtype=np.uint8), n_bytes // 256)


def big_gz(path, payload: bytes, dims) -> None:
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(gzip.compress(header + payload, compresslevel=1, mtime=0))


def peak_of(fn):
    tracemalloc.start()
    try:
        try:
            result = fn()
        except TegakiError as e:
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_file_costs_its_size_once(tmp_path):
    p = tmp_path / "big-idx3-ubyte.gz"
    data = pattern(N * MiB)
    big_gz(p, data.tobytes(), (N, 1024, 1024))
    assert p.stat().st_size < 2 * MiB
    a, peak = peak_of(lambda: read_idx(p))
    assert a.shape == (N, 1024, 1024) and a.dtype == np.uint8
    assert a.reshape(-1)[:300].tolist() == list(range(256)) + list(range(44)) and a.reshape(-1)[-1] == 255
    assert peak < N * MiB + 12 * MiB, peak / MiB  # the array and a few blocks, not a second copy


def test_an_oversized_stream_is_refused_at_its_announced_size(tmp_path):
    # the header says 40 MiB, the stream holds 60: decompression stops one byte past the 40
    p = tmp_path / "over-idx3-ubyte.gz"
    big_gz(p, pattern((N + 20) * MiB).tobytes(), (N, 1024, 1024))
    e, peak = peak_of(lambda: read_idx(p))
    assert isinstance(e, TegakiError) and "longer than its header says" in str(e)
    assert peak < N * MiB + 12 * MiB, peak / MiB


def test_a_header_announcing_more_than_is_there_costs_what_is_there(tmp_path):
    p = tmp_path / "short-idx3-ubyte.gz"
    big_gz(p, pattern(8 * MiB).tobytes(), (1000, 1024, 1024))  # announces 1000 MiB (under the cap), holds 8
    e, peak = peak_of(lambda: read_idx(p))
    assert isinstance(e, TegakiError) and "truncated: 8,388,608 of 1,048,576,000 data bytes" in str(e), e
    assert peak < 8 * MiB + 12 * MiB, peak / MiB


def test_the_cap_is_a_hard_limit(tmp_path):
    p = tmp_path / "cap.gz"
    big_gz(p, pattern(2 * MiB).tobytes(), (2, 1024, 1024))
    assert read_idx(p).size == 2 * MiB
    with pytest.raises(TegakiError, match="announces 2,097,152 bytes .* more than the 1,048,576 allowed"):
        read_idx(p, max_bytes=MiB)


@pytest.mark.parametrize("dtype", ["int16", "int32", "float32", "float64"])
def test_multi_byte_values_come_back_native_and_exact(tmp_path, dtype):
    a = (np.random.default_rng(3).standard_normal((7, 9)) * 1000).astype(dtype)
    write_idx(tmp_path / "x.gz", a)
    b, sha = read_idx_digest(tmp_path / "x.gz")
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def good_gz(tmp_path) -> bytes:
    write_idx(tmp_path / "g.gz", np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8))
    return (tmp_path / "g.gz").read_bytes()


def damaged(raw: bytes) -> dict[str, bytes]:
    mid = len(raw) // 2
    flip = bytearray(raw)
    flip[mid] ^= 0xFF
    crc = bytearray(raw)
    crc[-8] ^= 0x01  # the CRC-32 in the trailer
    return {
        "flipped byte in the deflate data": bytes(flip),  # zlib.error or a CRC mismatch
        "wrong CRC": bytes(crc),  # gzip.BadGzipFile
        "unknown compression method": raw[:2] + b"\x09" + raw[3:],  # gzip.BadGzipFile
        "cut short": raw[: mid],  # EOFError
        "garbage after the stream": raw + b"not gzip",  # gzip.BadGzipFile
        "only the gzip magic": raw[:2],  # EOFError
    }


@pytest.mark.parametrize("case", list(damaged(b"\x1f\x8b" + b"\x00" * 40)))
def test_a_damaged_gzip_is_one_clean_line(tmp_path, case):
    p = tmp_path / "d-idx3-ubyte.gz"
    p.write_bytes(damaged(good_gz(tmp_path))[case])
    with pytest.raises(TegakiError) as e:
        read_idx(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "fetch it again" in msg, msg


def test_the_exceptions_the_damaged_cases_stand_for(tmp_path):
    # the reference: what gzip itself raises on those bytes (so the cases above cover each kind)
    kinds = set()
    for raw in damaged(good_gz(tmp_path)).values():
        try:
            gzip.decompress(raw)
        except (zlib.error, EOFError, gzip.BadGzipFile) as e:
            kinds.add(type(e))
    assert kinds == {zlib.error, EOFError, gzip.BadGzipFile} or kinds == {EOFError, gzip.BadGzipFile}
    assert gzip.BadGzipFile in kinds and EOFError in kinds
