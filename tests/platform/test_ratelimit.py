"""Rate limits live in Redis, so every API process shares them, and one atomic INCR decides."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import httpx

from rappit.app.factory import create_app
from tests.conftest import client_for, start_app, stop_app


def unique_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def login() -> dict[str, str]:
    """A wrong login for an account of its own, so only the per-IP limit is in play."""
    return {"org_code": "NOPE", "email": f"{uuid.uuid4().hex}@y.test", "password": "whatever"}


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
            statuses = [(await c.post("/auth/login", json=login())).status_code for _ in range(5)]
            assert statuses == [401] * 5
            limited = await c.post("/auth/login", json=login())
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
                *[(c1 if i % 2 else c2).post("/auth/login", json=login()) for i in range(40)]
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
                await noisy.post("/auth/login", json=login())
            assert (await noisy.post("/auth/login", json=login())).status_code == 429
            assert (await quiet.post("/auth/login", json=login())).status_code == 401
    finally:
        await stop_app(app)


async def test_login_limit_is_not_dodged_with_x_forwarded_for(settings) -> None:
    """Through uvicorn as `rappit serve` / `up` configure it: 30 logins, each claiming another address."""
    import socket

    import uvicorn

    from rappit.app.cli import uvicorn_proxy_options

    await clear_of_window_edge(20)
    app = create_app(replace(settings, rate_limit_auth_per_minute=5))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, **uvicorn_proxy_options(settings)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            statuses = [
                (
                    await c.post("/auth/login", json=login(), headers={"X-Forwarded-For": unique_ip()})
                ).status_code
                for _ in range(30)
            ]
    finally:
        server.should_exit = True
        await task
    assert statuses.count(401) <= 5 and statuses.count(429) >= 25, statuses


async def test_failed_logins_per_account_are_limited_from_any_address(app, make_org) -> None:
    org = await make_org()
    wrong = {"org_code": org.code, "email": org.owner_email, "password": "not it"}
    right = {**wrong, "password": org.password}
    statuses = []
    for _ in range(11):
        async with client_for(app, ip=unique_ip()) as c:
            statuses.append((await c.post("/auth/login", json=wrong)).status_code)
    assert statuses == [401] * 10 + [429]
    async with client_for(app, ip=unique_ip()) as c:
        refused = await c.post("/auth/login", json=right)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 60
    assert refused.json()["error"]["code"] == "RATE_LIMITED"


async def test_successful_logins_do_not_use_up_the_account_limit(app, make_org) -> None:
    org = await make_org()
    right = {"org_code": org.code, "email": org.owner_email, "password": org.password}
    for _ in range(12):
        async with client_for(app, ip=unique_ip()) as c:
            assert (await c.post("/auth/login", json=right)).status_code == 200


async def test_api_limit_follows_the_token_across_addresses(settings, make_org) -> None:
    await clear_of_window_edge()
    one, two = await make_org(), await make_org()
    app = create_app(replace(settings, rate_limit_api_per_minute=3))
    await start_app(app)
    try:
        async with client_for(app, ip=unique_ip()) as a, client_for(app, ip=unique_ip()) as b:
            # One token from two addresses: one bucket of 3.
            spread = [(await c.get("/api/v1/me", headers=one.headers)).status_code for c in (a, b, a, b)]
            # Two tokens from one address: a bucket each.
            shared_ip = [(await a.get("/api/v1/me", headers=two.headers)).status_code for _ in range(3)]
    finally:
        await stop_app(app)
    assert spread == [200, 200, 200, 429]
    assert shared_ip == [200, 200, 200]


async def test_made_up_tokens_share_their_address_bucket(settings) -> None:
    """Keying on an unverified header would give every invented token a fresh bucket."""
    await clear_of_window_edge()
    app = create_app(replace(settings, rate_limit_api_per_minute=3))
    await start_app(app)
    try:
        async with client_for(app, ip=unique_ip()) as c:
            statuses = [
                (
                    await c.get("/api/v1/me", headers={"Authorization": f"Bearer rpt_{uuid.uuid4().hex}"})
                ).status_code
                for _ in range(5)
            ]
    finally:
        await stop_app(app)
    assert statuses == [401, 401, 401, 429, 429]
