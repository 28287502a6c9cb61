"""`rappit worker`'s loop: an arq worker that rides out a Redis outage instead of exiting.

arq 0.28 retries only while it creates its pool; once running, any Redis error in a poll (the queue
read in `Worker._poll_iteration`, the heartbeat, a job writing its result) propagates out of
`Worker.main()`, and `Worker.run()` then dies again in `close()` deleting its health-check key from the
Redis that is gone. So we run `main()` ourselves: on a lost connection we tear that worker down
without Redis, wait with backoff, and start a fresh one (new pool, new `on_startup`), logging each try.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import suppress

import redis.exceptions
import structlog
from arq.worker import Worker

from rappit.platform.backoff import Backoff

log = structlog.get_logger("rappit.worker")

# What a lost or refused Redis connection raises (redis-py wraps most socket errors in its own). A
# WatchError too: redis-py raises it ("A ConnectionError occurred on while watching one or more keys")
# when the connection drops inside a WATCH, as in arq's `start_jobs`; arq catches the ordinary
# WatchError (a job taken elsewhere) itself, so one that escapes `Worker.main()` is a lost Redis.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.WatchError,
    OSError,
)


async def run_worker_forever(
    make_worker: Callable[[], Worker],
    *,
    backoff: Backoff | None = None,
    healthy_after: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run workers made by `make_worker` (with `handle_signals=False`) until SIGINT/SIGTERM, or until
    a burst worker finishes; a worker whose Redis goes away is replaced after a backoff delay. The
    backoff resets when a worker ran at least `healthy_after` seconds before it lost Redis."""
    backoff = backoff or Backoff(initial=1.0, maximum=30.0)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    current: Worker | None = None

    def on_signal(signum: signal.Signals) -> None:
        stop.set()
        if current is not None:
            current.handle_sig(signum)  # arq's own: cancel running jobs and the main task

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        while not stop.is_set():
            current = make_worker()
            started = clock()
            current.main_task = asyncio.ensure_future(current.main())
            try:
                await current.main_task
                return  # a burst worker drained its queue
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
                return
            except REDIS_UNAVAILABLE as exc:
                if clock() - started >= healthy_after:
                    backoff.reset()
                delay = backoff.next()
                log.warning(
                    "worker.redis_unavailable", error=f"{type(exc).__name__}: {exc}", retry_in_seconds=delay
                )
            finally:
                await _close(current)
                current = None
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if not stop.is_set():
                log.info("worker.reconnecting")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _close(worker: Worker) -> None:
    """arq's `close()`, minus its assumption that Redis is there: let jobs end (their own timeouts bound
    them), release what `on_startup` made, and drop the pool."""
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    if worker._pool is None:
        return  # never connected: `on_startup` did not run
    with suppress(*REDIS_UNAVAILABLE):
        await worker.pool.delete(worker.health_check_key)
    try:
        if worker.on_shutdown:
            await worker.on_shutdown(worker.ctx)
    finally:
        with suppress(*REDIS_UNAVAILABLE):
            await worker.pool.close(close_connection_pool=True)
        worker._pool = None
