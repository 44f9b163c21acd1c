"""The default thread count is measured: the cores that other programs leave idle."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tegaki import threads

SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def test_rounding_by_hand(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    cases = {0.0: 2, 0.4: 2, 0.6: 1, 1.0: 1, 1.9: 1, 3.0: 1}  # free unless more than half busy
    for busy, want in cases.items():
        monkeypatch.setattr(threads, "others_busy", lambda since=None, b=busy: b)
        assert threads.idle_cores() == want, busy
    monkeypatch.setattr(threads, "others_busy", lambda since=None: None)  # not measurable: every core
    assert threads.idle_cores() == 2


def test_own_work_is_not_counted():
    start = threads._snapshot()
    if start is None:
        pytest.skip("no /proc/stat here")
    time.sleep(0.3)
    resting = threads.others_busy(start)  # what other programs do anyway (the machine may be shared)
    start = threads._snapshot()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # this process keeps one core busy: that is not "others"
        pass
    assert threads.others_busy(start) < resting + 0.5


@pytest.mark.skipif(threads.cores() < 2, reason="needs two cores")
def test_a_spinning_program_takes_its_core():
    p = subprocess.Popen([sys.executable, "-c", SPIN.format(s=3)])
    try:
        time.sleep(0.5)  # the interpreter has started and spins
        start = threads._snapshot()
        if start is None:
            pytest.skip("no /proc/stat here")
        time.sleep(0.5)
        busy = threads.others_busy(start)
        assert 0.7 < busy < threads.cores() + 0.1
        assert threads.idle_cores(start) == threads.cores() - 1
    finally:
        p.kill()
        p.wait()


def test_env_and_option(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TEGAKI_THREADS", "zero")
    r = cli("train", "--preset", "ffnn", "--epochs", "1", "--out", tmp_path / "r")
    assert r.code == 2 and "TEGAKI_THREADS" in r.err and len(r.err.strip().splitlines()) == 1


def test_omp_num_threads_is_honoured_below_tegaki_threads(monkeypatch):
    from tegaki.commands import common

    seen = []
    monkeypatch.setattr(threads, "use", lambda n: seen.append(n) or (n or 2))
    monkeypatch.delenv("TEGAKI_THREADS", raising=False)
    for omp, want in {"1": 1, "2": 2, "0": None, "four": None, "": None}.items():
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        common.apply_threads(None)
        assert seen[-1] == want, omp
    monkeypatch.setenv("TEGAKI_THREADS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common.apply_threads(None)
    assert seen[-1] == 2  # tegaki's own variable first
    common.apply_threads(1)
    assert seen[-1] == 1  # and --threads before both


def test_the_busy_cores_note_leaves_an_error_its_one_line(cli, tmp_path, monkeypatch):
    """On a busy machine the thread count is said on stdout, so a bad input after it is still one stderr line."""
    monkeypatch.delenv("TEGAKI_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "use", lambda n: n or 1)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    r = cli("train", "--preset", "ffnn", "--dataset", f"folder:{tmp_path / 'nothing'}", "--out", tmp_path / "r")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "no such folder" in r.err, r.err
    assert "threads: 1 of 2 cores (the others are busy" in r.out
