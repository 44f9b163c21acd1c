"""IDX reading and writing: round trips, both file-name spellings, and every kind of bad file."""

from __future__ import annotations

import gzip
import hashlib
import struct
import tracemalloc

import numpy as np
import pytest

from tegaki.data.idx import read_idx, read_idx_digest, write_idx
from tegaki.data.sources import find_part
from tegaki.errors import TegakiError

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    p = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(p, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_file_layout_matches_the_published_format(tmp_path):
    # the format as LeCun's page describes it, written by hand: magic 0x00000803, dims, bytes
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "a"
    write_idx(p, a)
    assert p.read_bytes() == bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + a.tobytes()
    # big-endian int32 labels
    write_idx(p, np.array([1, -2], np.int32))
    assert p.read_bytes() == bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">2i", 1, -2)
    # and gzip is detected by content, whatever the name
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])))
    np.testing.assert_array_equal(read_idx(p), [7, 9])


def test_digest_is_sha256_of_the_decompressed_file(tmp_path):
    a = np.arange(100, dtype=np.uint8).reshape(4, 5, 5)
    write_idx(tmp_path / "raw", a)
    write_idx(tmp_path / "z.gz", a)
    raw = (tmp_path / "raw").read_bytes()
    for name in ("raw", "z.gz"):
        _, sha = read_idx_digest(tmp_path / name)
        assert sha == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "train-images.idx3-ubyte"])
@pytest.mark.parametrize("gz", [False, True])
def test_both_spellings_are_found(tmp_path, stem, gz):
    name = stem + (".gz" if gz else "")
    write_idx(tmp_path / name, np.zeros((1, 28, 28), np.uint8))
    assert find_part(tmp_path, "train-images") == tmp_path / name
    assert find_part(tmp_path, "train-labels") is None


def test_reads_real_mnist_labels(mnist_dir):
    y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert y.shape == (10000,)
    # the class counts the shared data's README lists for the test set
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    good = tmp_path / "good"
    write_idx(good, np.ones((10, 28, 28), np.uint8))
    data = good.read_bytes()[:-100]
    p = tmp_path / ("t.gz" if gz else "t")
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(TegakiError) as e:
        read_idx(p)
    msg = one_line(e)
    assert "truncated" in msg and str(p) in msg and "fetch it again" in msg


def test_truncated_gzip_stream(tmp_path):
    write_idx(tmp_path / "g.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "g.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])  # a download cut short
    with pytest.raises(TegakiError) as e:
        read_idx(tmp_path / "cut.gz")
    assert "fetch it again" in one_line(e)


@pytest.mark.parametrize("gz", [False, True])
def test_oversized_file(tmp_path, gz):
    good = tmp_path / "good"
    write_idx(good, np.ones((10,), np.uint8))
    data = good.read_bytes() + b"\x00" * 5
    p = tmp_path / ("o.gz" if gz else "o")
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(TegakiError) as e:
        read_idx(p)
    assert "longer than its header says" in one_line(e)


@pytest.mark.parametrize("head", [b"", b"\x00\x00", b"<!DOCTYPE html><html>", b"\x00\x00\x07\x01", b"\x00\x00\x08\x09"])
def test_bad_magic(tmp_path, head):
    p = tmp_path / "bad"
    p.write_bytes(head + b"\x00" * 8)
    with pytest.raises(TegakiError) as e:
        read_idx(p)
    msg = one_line(e)
    assert str(p) in msg and ("magic" in msg or "dimensions" in msg)


def test_missing_file(tmp_path):
    with pytest.raises(TegakiError) as e:
        read_idx(tmp_path / "nope")
    assert "no such file" in one_line(e)


@pytest.mark.parametrize("dims", [(60000, 28, 28, 10**4), (2**32 - 1,) * 4, (2**31, 2**31, 2**31)])
@pytest.mark.parametrize("gz", [False, True])
def test_lying_header_fails_fast_without_allocating(tmp_path, dims, gz):
    # a header announcing terabytes (or more than 2**64 bytes, which would overflow int64
    # arithmetic) followed by a few bytes: refused before anything of that size is allocated
    data = bytes([0, 0, 0x0E, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + b"\x00" * 64
    p = tmp_path / ("lie.gz" if gz else "lie")
    p.write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        with pytest.raises(TegakiError) as e:
            read_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "announces" in one_line(e)
    assert peak < 10 * 2**20


def test_header_under_the_cap_but_beyond_the_data_reads_only_what_is_there(tmp_path):
    # 500 MB announced, 64 bytes present: a raw file is refused from its size alone, a gzip
    # file after reading what is there, in blocks (never one 500 MB allocation)
    dims = (500, 1000, 1000)
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", *dims) + b"\x00" * 64
    for name, content in (("r", data), ("g.gz", gzip.compress(data))):
        (tmp_path / name).write_bytes(content)
        tracemalloc.start()
        try:
            with pytest.raises(TegakiError) as e:
                read_idx(tmp_path / name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "truncated" in one_line(e)
        assert peak < 10 * 2**20, peak


def test_mislabelled_file_is_named(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(10, np.uint8))
    write_idx(tmp_path / "images", np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(TegakiError) as e:
        read_idx(tmp_path / "labels", ndim=3)
    msg = one_line(e)
    assert "labels file" in msg and "images file" in msg and "mixed up" in msg
    with pytest.raises(TegakiError) as e:
        read_idx(tmp_path / "images", ndim=1)
    assert "images file (3 dimensions) where a labels file" in one_line(e)


def test_write_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(TegakiError):
        write_idx(tmp_path / "x", np.zeros(3, np.uint64))
    with pytest.raises(TegakiError):
        write_idx(tmp_path / "x", np.zeros((1,) * 5, np.uint8))
    assert not list(tmp_path.iterdir())  # nothing half-written
