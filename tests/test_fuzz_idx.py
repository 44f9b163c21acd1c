"""Fuzzing the IDX reader and the dataset loader with mutated files: they load, or raise TegakiError.

Each case is a small valid IDX file (images or labels, raw or gzip) mutated one of several ways:
random byte flips, truncation, garbage appended, a changed magic number, type code, number of
dimensions or dimension, or damage to the gzip stream itself. It is read by `read_idx_digest`
(with and without the expected number of dimensions) and loaded as one of the four files of an
`idx:PATH` dataset, in-process, in a child process whose address space is limited to 2 GiB
(RLIMIT_AS), so an allocation the header talked the reader into would be a MemoryError and fail.

Every case is made from (seed, index) alone: a failure prints both, and
`TEGAKI_FUZZ_SEED=<seed> pytest tests/test_fuzz_idx.py` (or `make_case(seed, index)`) replays it.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tegaki.data.idx import read_idx
from tegaki.errors import TegakiError

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
N_CASES = 3000
LIMIT = 2 << 30  # bytes of address space for the child
PARTS = {"train-images": "train-images-idx3-ubyte", "train-labels": "train-labels-idx1-ubyte",
         "t10k-images": "t10k-images-idx3-ubyte", "t10k-labels": "t10k-labels-idx1-ubyte"}
CODES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


def base_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"train-images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
            "train-labels": (np.arange(12) % 10).astype(np.uint8),
            "t10k-images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "t10k-labels": (np.arange(5) % 10).astype(np.uint8)}


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _header_change(raw: bytearray, rng) -> str:
    if len(raw) < 8:
        return "too short for a header change"
    what = rng.integers(0, 6)
    if what == 0:
        i = int(rng.integers(0, 2))
        raw[i] = int(rng.integers(1, 256))
        return f"magic byte {i} = {raw[i]}"
    if what == 1:
        raw[2] = int(rng.choice(CODES)) if rng.random() < 0.7 else int(rng.integers(0, 256))
        return f"type code {raw[2]:#04x}"
    if what == 2:
        raw[3] = int(rng.integers(0, 6)) if rng.random() < 0.8 else int(rng.integers(0, 256))
        return f"ndim {raw[3]}"
    n_dims = max(1, min(raw[3], 4, (len(raw) - 4) // 4))
    if what == 5:  # every dimension at once, a zero among huge ones included
        dims = [int(rng.choice([0, 1, 28, 2**16, 2**32 - 1])) for _ in range(n_dims)]
        raw[4: 4 + 4 * n_dims] = struct.pack(f">{n_dims}I", *dims)
        return f"dims {tuple(dims)}"
    k = int(rng.integers(0, n_dims))
    value = int(rng.choice([0, 1, 2, 27, 29, 255, 2**16, 2**24, 2**30 // 784, 2**31 - 1, 2**32 - 1,
                            int(rng.integers(0, 2**32))]))
    raw[4 + 4 * k: 8 + 4 * k] = struct.pack(">I", value)
    return f"dim {k} = {value}"


def _mutate_raw(raw: bytearray, rng) -> str:
    if not raw:
        return "empty"
    kind = rng.integers(0, 5)
    if kind == 4:  # a changed header with nothing after it (what a header announcing no data must be)
        how = _header_change(raw, rng)
        del raw[4 + 4 * max(1, min(raw[3] if len(raw) > 3 else 1, 4)):]
        return how + ", header only"
    if kind == 0:
        flips = int(rng.integers(1, 9))
        for i in rng.integers(0, len(raw), flips):
            raw[int(i)] ^= int(rng.integers(1, 256))
        return f"{flips} byte flips"
    if kind == 1:
        cut = int(rng.integers(0, len(raw)))
        del raw[cut:]
        return f"truncated to {cut} bytes"
    if kind == 2:
        extra = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        raw += extra
        return f"{len(extra)} bytes appended"
    return _header_change(raw, rng)


def make_case(seed: int, index: int) -> tuple[str, str, bytes]:
    """(part, description, file bytes) of case `index` under `seed`: the same every time."""
    rng = np.random.default_rng([seed, index])
    part = list(PARTS)[index % 4]
    raw = bytearray(idx_bytes(base_arrays()[part]))
    gz = bool(rng.integers(0, 2))
    if gz and rng.random() < 0.3:  # damage the compressed stream itself
        data = bytearray(gzip.compress(bytes(raw), mtime=0))
        how = _mutate_raw(data, rng) if rng.random() < 0.5 else _header_change(raw, rng)
        if how.startswith(("magic", "type", "ndim", "dim")):
            data = bytearray(gzip.compress(bytes(raw), mtime=0))
        return part, f"{part}.gz, gzip stream: {how}", bytes(data)
    how = _mutate_raw(raw, rng)
    if rng.random() < 0.3:
        how += "; " + _mutate_raw(raw, rng)
    return part, f"{part}{'.gz' if gz else ''}: {how}", gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)


def run_cases(seed: int, n: int, folder: Path) -> dict:
    """The child's work: every case through the reader and the loader; what was not load-or-TegakiError."""
    from tegaki.data.idx import read_idx_digest, write_idx
    from tegaki.data.sources import load_dataset
    from tegaki.errors import TegakiError

    folder.mkdir(parents=True, exist_ok=True)
    base = base_arrays()
    bad, outcomes = [], {"loaded": 0, "refused": 0}
    for index in range(n):
        part, how, data = make_case(seed, index)
        for p, a in base.items():  # the three other files stay valid
            for suffix in ("", ".gz"):
                (folder / (PARTS[p] + suffix)).unlink(missing_ok=True)
            if p != part:
                write_idx(folder / (PARTS[p] + ".gz"), a)
        path = folder / (PARTS[part] + (".gz" if ".gz:" in how else ""))
        path.write_bytes(data)
        for what, call in (("read_idx_digest", lambda: read_idx_digest(path)),
                           ("read_idx_digest(ndim)", lambda: read_idx_digest(path, ndim=3 if "images" in part else 1)),
                           ("load_dataset", lambda: load_dataset(f"idx:{folder}"))):
            try:
                call()
                outcomes["loaded"] += 1
            except TegakiError as e:
                outcomes["refused"] += 1
                if "\n" in str(e):
                    bad.append({"index": index, "case": how, "call": what, "error": f"two lines: {e!r}"})
            except BaseException as e:  # noqa: BLE001  (anything else is the bug this test looks for)
                bad.append({"index": index, "case": how, "call": what, "error": f"{type(e).__name__}: {e}"[:300]})
    return {"bad": bad, **outcomes}


def child_main(seed: int, n: int, folder: str) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    print(json.dumps(run_cases(seed, n, Path(folder))))


def test_mutated_idx_files_load_or_raise_tegaki_error(tmp_path):
    seed = int(os.environ.get("TEGAKI_FUZZ_SEED", "20240611"))
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_fuzz_idx as t; "
            f"t.child_main({seed}, {N_CASES}, {str(tmp_path / 'd')!r})")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"seed {seed}: the child died (rc {r.returncode}): {r.stderr[-2000:]}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    report = "; ".join(f"seed {seed} case {b['index']} ({b['case']}) {b['call']}: {b['error']}"
                       for b in result["bad"][:5])
    assert not result["bad"], f"{len(result['bad'])} bad outcome(s): {report}"
    # every kind of outcome happened: the mutations reach both the refusals and the loads
    assert result["refused"] > N_CASES and result["loaded"] > 100, result
    print(f"fuzz seed {seed}: {N_CASES} cases, {result['loaded']} loaded, {result['refused']} refused, {took:.1f} s")
    assert took < 60, took


@pytest.mark.parametrize("dims", [(2**32 - 1, 0, 2**32 - 1), (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_what_the_fuzzer_found(tmp_path, dims):
    # seed 1, case 196: no data bytes, and dimensions whose product is 0 but no array can have
    p = tmp_path / "zero-but-huge"
    p.write_bytes(bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
    with pytest.raises(TegakiError) as e:
        read_idx(p)
    assert "make no array" in str(e.value) and str(p) in str(e.value)
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 28, 28))  # an honest empty file still reads
    assert read_idx(p).shape == (0, 28, 28)


def test_cases_are_reproducible_and_varied():
    assert make_case(1, 7) == make_case(1, 7)
    assert make_case(1, 7) != make_case(2, 7)
    descriptions = " ".join(make_case(3, i)[1] for i in range(300))
    for word in ("header only", "flips", "truncated", "appended", "magic", "type code", "ndim", "dim 0", "dims (", "gzip stream"):
        assert word in descriptions, word


def test_the_child_would_see_a_big_allocation(tmp_path):
    # the limit is real: under it, 3 GiB cannot be had (so a header that talks the reader into it fails)
    code = ("import resource, numpy as np\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
            "try:\n    np.ones(3 << 30, np.uint8)\nexcept MemoryError:\n    print('MemoryError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert r.stdout.strip() == "MemoryError", (r.stdout, r.stderr)
