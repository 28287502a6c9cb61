"""The group-commit batcher: every caller answered, once, with its own result or its batch's error."""

from __future__ import annotations

import asyncio

import pytest

from rappit.platform.batching import Batcher


async def test_a_caller_right_after_a_batch_ends_is_still_answered() -> None:
    """A run that never suspends: the flusher ends in the same turn as it answers, before its task is
    discarded; the next caller must start a new one, not wait for the finished one."""

    async def run(items: list[int]) -> list[int]:
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(run, concurrency=1)
    async with asyncio.timeout(5):  # in this task: a new task per call would hide the race
        for i in range(50):
            assert await batcher.submit(i) == 2 * i


async def test_concurrent_callers_share_batches_and_each_gets_its_own_answer() -> None:
    async def run(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        return [-i for i in items]

    batcher: Batcher[int, int] = Batcher(run, concurrency=2)
    answers = await asyncio.wait_for(asyncio.gather(*[batcher.submit(i) for i in range(200)]), 10)
    assert answers == [-i for i in range(200)]
    assert batcher.batches < 200 and batcher.largest > 1


async def test_a_failing_batch_fails_every_caller_in_it_and_the_next_batch_runs() -> None:
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("statement failed")
        return items

    batcher: Batcher[int, int] = Batcher(run, linger=0.02)
    first = await asyncio.gather(*[batcher.submit(i) for i in range(5)], return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in first) and len(calls) == 1
    assert await asyncio.wait_for(batcher.submit(9), 2) == 9


async def test_a_run_answering_the_wrong_number_of_results_fails_the_batch() -> None:
    async def run(items: list[int]) -> list[int]:
        return items[:-1]

    batcher: Batcher[int, int] = Batcher(run, linger=0.01)
    with pytest.raises(RuntimeError, match="answered"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
