"""Requests that reach the network together share one call: the server's batcher.

    b = Batcher(predictor, max_batch=8, wait_ms=2.0)      # in the server's event loop
    with b.coming():                          # a request being decoded in the pool: worth waiting for
        image = await ...                     # (28, 28) uint8, MNIST-like
    logits = await b.logits(image)            # (K,) raw logits, from a call shared with other requests

It lives on the event loop's thread, as the requests do. A request's image joins the batch being
formed; the call is made at the next turn of the loop, so every request whose image is ready in
this turn (the loop runs the requests whose bytes arrived together one after the other, each
decoding its drawing on the loop) shares it, and a lone request waits for nothing but that turn.
A full batch (`max_batch` images) is classified at once. While other requests are still being
decoded in the pool (photos, `coming`), the batch waits for them, at most `wait_ms`, and never when
the last of them has arrived. The call runs on the loop's thread: it is CPU work like the decoding
around it, and handing it to another thread and back (an earlier design) cost more than it saved.

On the project's 2-core CPU one call costs the bundled model 0.26 ms for one image, 0.11 ms per
image for 4 and 0.10 for 8, but 0.16 for 16 or more (the activations no longer fit the cache):
hence the default of 8. `max_batch=1` turns batching off (each image its own call).
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

import numpy as np

from tegaki.errors import TegakiError
from tegaki.serve.limits import MAX_BATCH, WAIT_MS


class Batcher:
    """Concurrent requests' images classified together, on the event loop (see the module docstring)."""

    def __init__(self, predictor, max_batch: int = MAX_BATCH, wait_ms: float = WAIT_MS):
        self.check(max_batch, wait_ms)
        self.predictor = predictor
        self.max_batch, self.wait = int(max_batch), wait_ms / 1000.0
        self.calls = self.images = 0  # network calls made, images classified (for tests and benchmarks)
        self._batch: list[tuple[np.ndarray, asyncio.Future]] = []
        self._coming = 0
        self._timer: asyncio.Handle | None = None  # the batch's call, scheduled
        self._waited = False  # the batch has waited for requests coming

    @staticmethod
    def check(max_batch: int, wait_ms: float) -> None:
        if not (isinstance(max_batch, int) and 1 <= max_batch <= 4096):
            raise TegakiError(f"the largest batch must be a whole number 1..4096, got {max_batch!r}")
        if not (isinstance(wait_ms, (int, float)) and 0 <= wait_ms <= 1000):
            raise TegakiError(f"the batch wait must be 0..1000 ms, got {wait_ms!r}")

    @contextmanager
    def coming(self):
        """Mark a request whose image is being made (decoded, preprocessed): worth waiting for."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1

    async def logits(self, image: np.ndarray) -> np.ndarray:
        """The (K,) raw logits of a (28, 28) uint8 image, from a call shared with the requests whose
        images are ready in the same turn of the event loop."""
        fut = asyncio.get_running_loop().create_future()
        self._batch.append((image, fut))
        if len(self._batch) >= self.max_batch or (self._waited and self._coming == 0):
            self._run()  # full, or the requests it waited for are all here
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._due)
        return await fut

    def _due(self) -> None:
        """The next turn of the loop: classify the batch, or wait a little for images still coming."""
        self._timer = None
        if self._coming and not self._waited and len(self._batch) < self.max_batch:
            self._waited = True
            self._timer = asyncio.get_running_loop().call_later(self.wait, self._run)
            return
        self._run()

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch, self._waited = self._batch, [], False
        if not batch:
            return
        try:
            z = self.predictor.logits(np.stack([image for image, _ in batch]))  # (B, K)
        except BaseException as e:  # noqa: BLE001  every waiting request gets the error; the next batch is new
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt, SystemExit: the server stops, the requests are answered first
            return
        self.calls += 1
        self.images += len(batch)
        for (_, fut), row in zip(batch, z):
            if not fut.done():  # a request whose client went away has been cancelled
                fut.set_result(row)

    def close(self) -> None:
        """Classify what is waiting (at shutdown)."""
        self._run()
