"""Carrier sandboxes on loopback, one shared httpx client (as a process has), breakers on the test Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.carriers.dhl.adapter import DhlExpressAdapter
from rappit.integrations.carriers.fedex.adapter import FedExAdapter
from rappit.integrations.carriers.fedex.client import TokenCache
from rappit.integrations.carriers.transport import Timeouts
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.conftest import Stack

FAST = Timeouts(connect=1.0, read=0.5)
"""Short read timeout so hang tests take half a second."""


@pytest.fixture
def fake_fedex() -> Iterator[FakeFedEx]:
    fake = FakeFedEx().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_dhl() -> Iterator[FakeDhlExpress]:
    fake = FakeDhlExpress().start()
    yield fake
    fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def breakers(stack: Stack) -> Iterator[BreakerBoard]:
    board = BreakerBoard(stack.redis_url, reset_timeout=0.5, trial_ttl=2.0)
    yield board
    board.close()


@pytest.fixture
def tokens() -> TokenCache:
    return TokenCache()


@pytest.fixture
def fedex(
    fake_fedex: FakeFedEx, http: httpx.AsyncClient, breakers: BreakerBoard, tokens: TokenCache
) -> FedExAdapter:
    return FedExAdapter.for_account(
        {"client_id": fake_fedex.client_id, "client_secret": fake_fedex.client_secret},
        account_number="510087020",
        base_url=fake_fedex.url,
        http=http,
        breaker=breakers.for_account("fedex", str(uuid.uuid4())),
        timeouts=FAST,
        tokens=tokens,
    )


@pytest.fixture
def dhl(fake_dhl: FakeDhlExpress, http: httpx.AsyncClient, breakers: BreakerBoard) -> DhlExpressAdapter:
    return DhlExpressAdapter.for_account(
        {"username": "dhl-user", "password": "dhl-pass"},
        account_number="123456789",
        base_url=fake_dhl.api_url,
        http=http,
        breaker=breakers.for_account("dhl_express", str(uuid.uuid4())),
        timeouts=FAST,
    )
