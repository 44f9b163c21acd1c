"""Requests that arrive together share one network call: the server's batcher.

    b = Batcher(predictor, max_batch=8, wait_ms=2.0)
    with b.coming():                          # a request is being decoded: the batcher may wait for it
        image = ...                           # (28, 28) uint8, MNIST-like
    logits = await b.logits(image)            # (K,) raw logits, from a call shared with other requests
    b.close()

One thread runs the shared calls. It takes every image waiting in its queue; while other requests
are still being decoded (`coming`), it waits up to `wait_ms` for them, never longer, and never more
than `max_batch` images. A request that finds the batcher idle (nothing queued, nothing being
classified or decoded) is classified at once on its own thread: a lone request is never kept
waiting, and never pays for the trip to another thread and back.

On the project's 2-core CPU one call costs the bundled model 0.26 ms for one image, 0.11 ms per
image for 4 and 0.10 for 8, but 0.16 for 16 or more (the activations no longer fit the cache):
hence the default of 8. `max_batch=1` turns batching off (each image its own call).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np

from tegaki.errors import TegakiError
from tegaki.serve.limits import MAX_BATCH, WAIT_MS


class Batcher:
    """Concurrent requests' images classified together, on one thread (see the module docstring)."""

    def __init__(self, predictor, max_batch: int = MAX_BATCH, wait_ms: float = WAIT_MS):
        self.check(max_batch, wait_ms)
        self.predictor = predictor
        self.max_batch, self.wait = int(max_batch), wait_ms / 1000.0
        self.calls = self.images = 0  # network calls made, images classified (for tests; not locked)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._coming = 0
        self._busy = False  # the thread is gathering or classifying a batch
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tegaki-batch", daemon=True)
        self._thread.start()

    @staticmethod
    def check(max_batch: int, wait_ms: float) -> None:
        if not (isinstance(max_batch, int) and 1 <= max_batch <= 4096):
            raise TegakiError(f"the largest batch must be a whole number 1..4096, got {max_batch!r}")
        if not (isinstance(wait_ms, (int, float)) and 0 <= wait_ms <= 1000):
            raise TegakiError(f"the batch wait must be 0..1000 ms, got {wait_ms!r}")

    @contextmanager
    def coming(self):
        """Mark a request whose image is being made (decoded, preprocessed): worth waiting for."""
        with self._lock:
            self._coming += 1
        try:
            yield
        finally:
            with self._lock:
                self._coming -= 1

    def submit(self, image: np.ndarray) -> Future:
        """A (28, 28) uint8 image -> a Future of its (K,) raw logits."""
        fut: Future = Future()
        self._queue.put((image, fut))
        return fut

    async def logits(self, image: np.ndarray) -> np.ndarray:
        """The (K,) raw logits of a (28, 28) uint8 image. When the batcher is idle (nothing queued,
        nothing being classified or decoded), the call is made right here: handing one image to
        another thread and back would cost more than a shared call saves."""
        if self._idle():
            self.calls += 1
            self.images += 1
            return self.predictor.logits(image[None])[0]
        return await asyncio.wrap_future(self.submit(image))

    def _idle(self) -> bool:
        return not self._busy and self._coming == 0 and self._queue.empty()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    # the thread -------------------------------------------------------------------------------
    def _gather(self, first) -> list:
        batch = [first]
        deadline = time.monotonic() + self.wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if self._coming == 0 or left <= 0:  # nothing on its way, or waited long enough
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:  # closing: answer what is here, then stop
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._busy = True
            batch = self._gather(first)
            try:
                z = self.predictor.logits(np.stack([image for image, _ in batch]))  # (B, K)
            except BaseException as e:  # noqa: BLE001  every waiting request gets the error, the thread lives on
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            finally:
                self._busy = False
            self.calls += 1
            self.images += len(batch)
            for (_, fut), row in zip(batch, z):
                fut.set_result(row)
