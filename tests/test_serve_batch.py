"""The server's batcher (serve/batch.py) and `tegaki serve --workers N`: answers equal to one image
at a time, batches that really form, errors that reach every waiting request, bad options refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from servers import children, start  # tests/servers.py
from sketches import DIGITS, drawing
from tegaki.errors import TegakiError
from tegaki.predict import Predictor
from tegaki.serve.batch import Batcher


@pytest.fixture(scope="module")
def bundled():
    return Predictor.load(None)


def digits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


class Slow:
    """A predictor whose network call takes `delay` seconds and is counted (to make batches form)."""

    def __init__(self, p: Predictor, delay: float = 0.02, fail: bool = False):
        self.p, self.delay, self.fail, self.sizes = p, delay, fail, []

    def logits(self, images):
        self.sizes.append(len(images))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the network broke")
        return self.p.logits(images)


def together(b: Batcher, images, coming_s=None) -> list:
    """Each image a request of its own, all at once in one event loop; coming_s[i]: seconds request i
    spends being decoded in the pool first (marked `coming`). Their answers, in order."""
    async def request(i):
        if coming_s is not None:
            with b.coming():
                await asyncio.sleep(coming_s[i])
        return await b.logits(images[i])

    async def main():
        return await asyncio.gather(*[request(i) for i in range(len(images))], return_exceptions=True)
    return asyncio.run(main())


def test_a_lone_request_is_classified_at_once_and_exactly(bundled):
    b = Batcher(bundled)
    x = digits(5)
    got = [asyncio.run(b.logits(img)) for img in x]
    assert np.allclose(np.stack(got), bundled.logits(x), atol=1e-5)
    assert b.calls == 5 and b.images == 5  # no batching possible, and no wait


def test_requests_ready_together_share_calls_and_get_their_own_answers(bundled):
    slow = Slow(bundled)
    b = Batcher(slow, max_batch=8, wait_ms=50)
    x = digits(40, seed=1)
    got = np.stack(together(b, x))
    assert np.allclose(got, bundled.logits(x), atol=1e-4)  # each request its own row, whatever batch it was in
    assert slow.sizes == [8] * 5 and b.calls == 5 and b.images == 40


def test_a_batch_waits_for_requests_being_decoded_but_not_longer_than_asked(bundled):
    x = digits(6, seed=2)
    slow = Slow(bundled, delay=0.0)
    b = Batcher(slow, max_batch=8, wait_ms=400)  # the late ones arrive within the wait: one call
    t0 = time.monotonic()
    got = together(b, x, coming_s=[0, 0, 0, 0.03, 0.03, 0.05])
    assert slow.sizes == [6] and time.monotonic() - t0 < 0.3  # ran when the last arrived, not after 400 ms
    assert np.allclose(np.stack(got), bundled.logits(x), atol=1e-4)
    slow = Slow(bundled, delay=0.0)
    b = Batcher(slow, max_batch=8, wait_ms=10)  # the late ones take longer than the wait: not waited for
    together(b, x, coming_s=[0, 0, 0, 0.15, 0.15, 0.15])
    assert slow.sizes[0] == 3 and sum(slow.sizes) == 6


def test_a_batch_does_not_wait_for_nothing(bundled):
    slow = Slow(bundled, delay=0.0)
    b = Batcher(slow, max_batch=8, wait_ms=500)
    t0 = time.monotonic()
    assert asyncio.run(b.logits(digits(1)[0])).shape == (10,)  # nothing else coming: no 500 ms wait
    assert time.monotonic() - t0 < 0.25


def test_max_batch_one_turns_batching_off(bundled):
    slow = Slow(bundled, delay=0.01)
    b = Batcher(slow, max_batch=1, wait_ms=50)
    together(b, digits(6))
    assert slow.sizes == [1] * 6


def test_an_error_reaches_every_waiting_request_and_the_batcher_lives_on(bundled):
    slow = Slow(bundled, fail=True)
    b = Batcher(slow, max_batch=8, wait_ms=5)
    got = together(b, digits(4))
    assert all(isinstance(e, RuntimeError) and "the network broke" in str(e) for e in got)
    slow.fail = False
    assert asyncio.run(b.logits(digits(1)[0])).shape == (10,)


def test_a_request_gone_before_its_batch_runs_does_not_hold_up_the_others(bundled):
    slow = Slow(bundled, delay=0.0)
    b = Batcher(slow, max_batch=8, wait_ms=5)
    x = digits(3, seed=3)

    async def main():
        tasks = [asyncio.ensure_future(b.logits(img)) for img in x]
        await asyncio.sleep(0)  # each has joined the batch
        tasks[1].cancel()  # its client went away
        return await asyncio.gather(*tasks, return_exceptions=True)
    got = asyncio.run(main())
    assert isinstance(got[1], asyncio.CancelledError) and slow.sizes == [3]
    assert np.allclose(np.stack([got[0], got[2]]), bundled.logits(x[[0, 2]]), atol=1e-4)


def test_a_busy_server_really_batches(bundled):
    """Clients at once against a real server: the requests that arrive together share calls."""
    from tegaki.serve.app import create_app, serving

    app = create_app(bundled)
    png = drawing(DIGITS[3], size=140)

    async def client(url, n):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for _ in range(n):
                r = await c.post("/api/predict", files={"file": ("d.png", png, "image/png")})
                assert r.status_code == 200 and r.json()["label"] == 3

    async def main(url):
        await asyncio.gather(*[client(url, 10) for _ in range(12)])

    with serving(app) as url:
        asyncio.run(main(url))
        b = app.state.batcher
    assert b.images == 120 and b.calls < 100, (b.calls, b.images)


@pytest.mark.parametrize("max_batch, wait", [(0, 2.0), (5000, 2.0), (8, -1.0), (8, float("nan")), (8, 5000.0)])
def test_bad_batch_settings_are_refused(bundled, max_batch, wait):
    with pytest.raises(TegakiError):
        Batcher(bundled, max_batch, wait)


@pytest.mark.parametrize("option, value, words", [("--workers", "0", "--workers"), ("--max-batch", "0", "batch"),
                                                  ("--batch-wait-ms", "-3", "batch wait")])
def test_bad_serve_options_are_one_line(cli, option, value, words):
    r = cli("serve", "--port", "1", option, value)
    assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_serve_the_same_answers_from_several_processes(tmp_path):
    log = tmp_path / "serve.log"
    proc, url = start(["--no-save", "--workers", "2"], log)
    try:
        # two worker processes, each with the model (multiprocessing adds a resource tracker of its own)
        workers = [c for c in children(proc.pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
        assert len(workers) == 2, (children(proc.pid), log.read_text())
        ref = Predictor.load(None)

        async def many():
            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         limits=httpx.Limits(max_connections=16)) as c:
                jobs = [c.post("/api/predict", files={"file": ("d.png", drawing(DIGITS[d], size=140), "image/png")})
                        for d in list(DIGITS) * 4]
                return await asyncio.gather(*jobs)

        answers = asyncio.run(many())
        assert [r.status_code for r in answers] == [200] * 40
        for d, r in zip(list(DIGITS) * 4, answers):
            body = r.json()
            assert body["label"] == d
            want = ref.predict_image(drawing(DIGITS[d], size=140)).probabilities
            assert np.allclose(body["probabilities"], want, atol=1e-5)
        # a worker that dies is started again, and the server goes on answering meanwhile
        os.kill(workers[0], signal.SIGKILL)
        t0 = time.monotonic()
        while True:
            now = [c for c in children(proc.pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
            if len(now) >= 2 and workers[0] not in now:
                break
            assert time.monotonic() - t0 < 60, log.read_text()
            time.sleep(0.2)
        assert httpx.post(url + "/api/predict", files={"file": ("d.png", drawing(DIGITS[3], size=140), "image/png")},
                          timeout=60).json()["label"] == 3
        assert "stopped (exit status -9); starting it again" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert "Traceback" not in log.read_text(), log.read_text()
