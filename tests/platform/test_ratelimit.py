"""Rate limits live in Redis, so every API process shares them, and one atomic INCR decides."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from rappit.app.factory import create_app
from tests.conftest import client_for, start_app, stop_app


def unique_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


LOGIN = {"org_code": "NOPE", "email": "x@y.test", "password": "whatever"}


async def clear_of_window_edge(seconds: float = 8) -> None:
    """Fixed windows restart on the minute: start a counting test only with time left in this one."""
    import time

    left = 60 - time.time() % 60
    if left < seconds:
        await asyncio.sleep(left + 0.05)


async def test_auth_route_returns_429_with_retry_after_past_the_limit(settings) -> None:
    await clear_of_window_edge()
    app = create_app(replace(settings, rate_limit_auth_per_minute=5))
    await start_app(app)
    try:
        async with client_for(app, ip=unique_ip()) as c:
            statuses = [(await c.post("/auth/login", json=LOGIN)).status_code for _ in range(5)]
            assert statuses == [401] * 5
            limited = await c.post("/auth/login", json=LOGIN)
    finally:
        await stop_app(app)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    error = limited.json()["error"]
    assert error["code"] == "RATE_LIMITED" and error["details"]["limit"] == 5


async def test_limit_is_shared_by_two_api_processes_and_exact_under_concurrency(settings) -> None:
    await clear_of_window_edge()
    apps = [create_app(replace(settings, rate_limit_auth_per_minute=10)) for _ in range(2)]
    for app in apps:
        await start_app(app)
    ip = unique_ip()
    try:
        async with client_for(apps[0], ip=ip) as c1, client_for(apps[1], ip=ip) as c2:
            responses = await asyncio.gather(
                *[(c1 if i % 2 else c2).post("/auth/login", json=LOGIN) for i in range(40)]
            )
    finally:
        for app in apps:
            await stop_app(app)
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) == 10, statuses  # exactly the limit got through, across both apps
    assert statuses.count(429) == 30


async def test_other_clients_are_not_affected(settings) -> None:
    await clear_of_window_edge()
    app = create_app(replace(settings, rate_limit_auth_per_minute=2))
    await start_app(app)
    try:
        async with client_for(app, ip=unique_ip()) as noisy, client_for(app, ip=unique_ip()) as quiet:
            for _ in range(3):
                await noisy.post("/auth/login", json=LOGIN)
            assert (await noisy.post("/auth/login", json=LOGIN)).status_code == 429
            assert (await quiet.post("/auth/login", json=LOGIN)).status_code == 401
    finally:
        await stop_app(app)
