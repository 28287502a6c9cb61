"""Breakers per carrier account, state in Redis: counted through `guard()`, shared between processes,
one trial call after the reset timeout, per-process fallback when Redis is down, no event-loop stall."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from rappit.integrations.carriers.base import CarrierUnavailable
from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.carriers.fedex.adapter import FedExAdapter
from rappit.integrations.carriers.fedex.client import TokenCache
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.platform.localstack import EmbeddedRedis
from tests.conftest import Stack
from tests.integrations.conftest import FAST
from tests.integrations.helpers import domestic


def adapter(fake: FakeFedEx, http: httpx.AsyncClient, board: BreakerBoard, account_id: str) -> FedExAdapter:
    return FedExAdapter.for_account(
        {"client_id": fake.client_id, "client_secret": fake.client_secret},
        account_number="510087020",
        base_url=fake.url,
        http=http,
        breaker=board.for_account("fedex", account_id),
        timeouts=FAST,
        tokens=TokenCache(),
    )


async def test_five_failures_open_it_for_every_process_then_one_trial_closes_it(
    fake_fedex: FakeFedEx, http: httpx.AsyncClient, breakers: BreakerBoard, stack: Stack
) -> None:
    account = str(uuid.uuid4())
    fedex = adapter(fake_fedex, http, breakers, account)
    await fedex.track("794000000001")  # token fetched while healthy
    fake_fedex.faults.server_error = -1
    for _ in range(5):  # label purchases are not retried: one request, one counted failure each
        with pytest.raises(CarrierUnavailable) as failed:
            await fedex.buy_label(domestic("b"))
        assert failed.value.reason == "server_error"
    assert breakers.for_account("fedex", account).snapshot().state == "open"

    reached = len(fake_fedex.requests)
    started = time.perf_counter()
    with pytest.raises(CarrierUnavailable) as open_:
        await fedex.buy_label(domestic("b"))
    assert time.perf_counter() - started < 0.05
    assert len(fake_fedex.requests) == reached  # nothing reached the carrier
    assert open_.value.details["breaker_state"] == "open" and open_.value.reason == "breaker_open"
    assert 0 < open_.value.retry_after_seconds <= 0.5 and open_.value.headers["Retry-After"] == "1"

    other_process = BreakerBoard(stack.redis_url, reset_timeout=0.5)  # its own Redis connection and state
    try:
        with pytest.raises(CarrierUnavailable):
            await adapter(fake_fedex, http, other_process, account).rate(domestic("b"))
        assert len(fake_fedex.requests) == reached

        fake_fedex.faults.server_error = 0
        await asyncio.sleep(0.55)  # the reset timeout passes
        assert (await fedex.track("794000000001")).tracking_number  # the one trial call goes through
        assert other_process.for_account("fedex", account).snapshot().state == "closed"
    finally:
        other_process.close()


async def test_only_one_trial_call_after_the_reset_timeout(
    fake_fedex: FakeFedEx, http: httpx.AsyncClient, breakers: BreakerBoard
) -> None:
    account = str(uuid.uuid4())
    fedex = adapter(fake_fedex, http, breakers, account)
    await fedex.track("1")
    fake_fedex.faults.server_error = 5
    for _ in range(5):
        with pytest.raises(CarrierUnavailable):
            await fedex.buy_label(domestic("b"))
    await asyncio.sleep(0.55)
    fake_fedex.faults.delay = 0.2
    before = fake_fedex.api_calls("/track/")
    results = await asyncio.gather(*(fedex.track("1") for _ in range(5)), return_exceptions=True)
    assert fake_fedex.api_calls("/track/") - before == 1
    refused = [r for r in results if isinstance(r, CarrierUnavailable)]
    assert len(refused) == 4 and {r.reason for r in refused} == {"breaker_trial_in_progress"}


async def test_4xx_business_errors_do_not_count(
    fake_fedex: FakeFedEx, http: httpx.AsyncClient, breakers: BreakerBoard
) -> None:
    account = str(uuid.uuid4())
    fedex = adapter(fake_fedex, http, breakers, account)
    fake_fedex.faults.reject_address = True
    for _ in range(7):
        assert (await fedex.buy_label(domestic("b"))).label is None
    assert breakers.for_account("fedex", account).snapshot().state == "closed"


async def test_timeouts_count(fake_fedex: FakeFedEx, http: httpx.AsyncClient, stack: Stack) -> None:
    board = BreakerBoard(stack.redis_url, fail_max=2)
    try:
        fedex = adapter(fake_fedex, http, board, str(uuid.uuid4()))
        await fedex.track("1")
        fake_fedex.faults.hang = True
        for _ in range(2):
            with pytest.raises(CarrierUnavailable) as slow:
                await fedex.buy_label(domestic("b"))
            assert slow.value.reason == "timeout"
        assert (
            board.for_account("fedex", fedex.client.breaker.name.split(":", 1)[1]).snapshot().state == "open"
        )
    finally:
        board.close()


async def test_redis_down_falls_back_to_per_process_state_without_hanging(
    fake_fedex: FakeFedEx, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis").start()
    board = BreakerBoard(redis.url, fail_max=3)
    try:
        fedex = adapter(fake_fedex, http, board, str(uuid.uuid4()))
        await fedex.track("1")
        assert board.shared
        redis.stop()
        fake_fedex.faults.server_error = -1
        with capture_logs() as logs:
            started = time.perf_counter()
            for _ in range(3):
                with pytest.raises(CarrierUnavailable):
                    await fedex.buy_label(domestic("b"))
            reached = len(fake_fedex.requests)
            with pytest.raises(CarrierUnavailable) as open_:
                await fedex.buy_label(domestic("b"))
            elapsed = time.perf_counter() - started
        assert open_.value.reason == "breaker_open" and len(fake_fedex.requests) == reached
        assert not board.shared and elapsed < 1.0
        assert [e["event"] for e in logs if e["event"].startswith("breaker_state")] == [
            "breaker_state_per_process"
        ]
    finally:
        board.close()
        redis.stop()
