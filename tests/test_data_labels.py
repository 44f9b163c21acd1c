"""Labels files that lie: NaN, infinite, fractional, negative or enormous labels are refused in one line.

Each case writes its own four small IDX files (real files, read by the real loader) where only the
training labels are wrong, and loads them as `idx:PATH`, as a registered dataset and through the CLI.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tegaki.data import sources
from tegaki.data.dataset import MAX_CLASSES, check_labels
from tegaki.data.idx import write_idx
from tegaki.data.sources import IdxSource, load_dataset
from tegaki.errors import TegakiError

N_TRAIN, N_TEST = 30, 10


def write_folder(folder, train_labels, test_labels=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz",
              test_labels if test_labels is not None else (np.arange(N_TEST) % 10).astype(np.uint8))
    return folder


def labels_with(value, dtype, at=7):
    y = (np.arange(N_TRAIN) % 10).astype(dtype)
    y[at] = value
    return y


BAD = [  # (label values, dtype, what the message shows)
    (float("nan"), np.float64, "label nan at index 7"),
    (float("inf"), np.float32, "label inf at index 7"),
    (-float("inf"), np.float64, "label -inf at index 7"),
    (2**31 - 1, np.int32, "label 2147483647 at index 7 is outside 0..999"),
    (1e300, np.float64, "label 1e+300 at index 7 is outside 0..999"),
    (10**7, np.int32, "label 10000000 at index 7 is outside 0..999"),
    (-1, np.int8, "label -1 at index 7 is outside 0..999"),
    (MAX_CLASSES, np.int16, "label 1000 at index 7 is outside 0..999"),
]


@pytest.mark.parametrize("value,dtype,shown", BAD, ids=[b[2].split(" at")[0] for b in BAD])
def test_bad_label_is_refused_naming_the_file_and_the_value(tmp_path, value, dtype, shown):
    d = write_folder(tmp_path / "d", labels_with(value, dtype))
    t0 = time.perf_counter()
    with pytest.raises(TegakiError) as e:
        load_dataset(f"idx:{d}")
    assert time.perf_counter() - t0 < 5  # refused from the file, before any class list is built
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    assert str(d / "train-labels-idx1-ubyte.gz") in msg and shown in msg, msg


def test_fractional_float_labels_are_not_truncated(tmp_path):
    y = np.arange(N_TRAIN) % 10 + 0.7  # 0.7 .. 9.7: int() would make them 0..9 without a word
    d = write_folder(tmp_path / "d", y.astype(np.float32))
    with pytest.raises(TegakiError) as e:
        load_dataset(f"idx:{d}")
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz: label 0.7 at index 0 is not a whole number" in msg, msg


def test_whole_float_labels_load_as_integers(tmp_path):
    y = (np.arange(N_TRAIN) % 10).astype(np.float64)
    ds = load_dataset(f"idx:{write_folder(tmp_path / 'd', y)}")
    assert ds.train_labels.dtype == np.int64
    assert ds.train_labels.tolist() == [i % 10 for i in range(N_TRAIN)]
    assert ds.classes == [str(i) for i in range(10)]


def test_the_largest_allowed_label_gives_that_many_classes(tmp_path):
    y = labels_with(MAX_CLASSES - 1, np.int16)
    ds = load_dataset(f"idx:{write_folder(tmp_path / 'd', y)}")
    assert len(ds.classes) == MAX_CLASSES and ds.classes[-1] == "999" and ds.train_labels[7] == 999


def test_bad_test_labels_of_a_registered_dataset(tmp_path, monkeypatch):
    d = write_folder(tmp_path / "d", labels_with(3, np.uint8), test_labels=labels_with(np.nan, np.float64)[:N_TEST])
    monkeypatch.setitem(sources.SOURCES, "toyf", IdxSource("toyf", "", sources.DIGITS, (), {}))
    with pytest.raises(TegakiError) as e:
        load_dataset("toyf", data_dir=d)
    assert f"{d / 't10k-labels-idx1-ubyte.gz'}: label nan at index 7" in str(e.value)


def test_the_cli_says_one_line_and_exits_2(tmp_path, cli):
    d = write_folder(tmp_path / "d", labels_with(10**7, np.int32))
    r = cli("data", "info", f"idx:{d}")
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "label 10000000 at index 7 is outside 0..999" in r.err, r.err


def test_check_labels_by_hand():
    np.testing.assert_array_equal(check_labels(np.array([0, 3, 999], np.uint16), "x"), [0, 3, 999])
    assert check_labels(np.array([2.0, 0.0]), "x").dtype == np.int64
    assert check_labels(np.zeros(0, np.float32), "x").shape == (0,)
    with pytest.raises(TegakiError, match=r"^where: label 2.5 at index 1 is not a whole number"):
        check_labels(np.array([1.0, 2.5, 3.0]), "where")
    with pytest.raises(TegakiError, match=r"^where: label nan at index 2 is not a whole number"):
        check_labels(np.array([1.0, 2.5, np.nan]), "where")  # a value that is not finite is named first
    with pytest.raises(TegakiError, match=r"^where: labels of type complex128"):
        check_labels(np.array([1j]), "where")
