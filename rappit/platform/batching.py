"""Group commit for one process: concurrent callers' items gathered into one batch, one round trip.

`Batcher.submit(item)` waits for its own answer; a batch runs when a flusher is free, after `linger`
seconds (0: the current turn of the event loop) so items that arrive together travel together. At most
`concurrency` batches run at once (one per connection they use); while they run, new items gather for
the next. If running a batch raises, every caller in it gets that exception, and nobody gets an answer
for an item whose batch has not finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        concurrency: int = 1,
        linger: float = 0.0,
        max_batch: int = 500,
    ) -> None:
        self.run = run
        self.concurrency = concurrency
        self.linger = linger
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._gathering = False
        self._active = 0
        self.batches = 0
        """Batches run so far (for tests and the benchmark: items per batch)."""
        self.largest = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        # `_active`, not the task set: a flusher that has returned may not be discarded from the set yet
        # (done callbacks run later), and a caller that found it there would wait for nobody.
        if not self._gathering and self._active < self.concurrency:
            self._active += 1
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await future

    async def _flush(self) -> None:
        try:
            await self._drain()
        finally:
            self._active -= 1

    async def _drain(self) -> None:
        while self._pending and not self._gathering:
            self._gathering = True
            try:
                await asyncio.sleep(self.linger)
            finally:
                self._gathering = False
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if not batch:
                return
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            try:
                results = await self.run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} answered {len(results)} results")
            except BaseException as exc:  # every caller of the batch hears of it, then it propagates
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # the caller went away (cancelled): its item was still written
                    future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches under way (their callers get their answers)."""
        while self._flushers:
            await asyncio.gather(*list(self._flushers), return_exceptions=True)
