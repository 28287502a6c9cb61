"""A PostgreSQL that stalls costs a request a bounded time and a 503 with Retry-After, never a hang;
once it answers again, requests succeed without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from rappit.app.factory import create_app
from rappit.platform.db import make_engine
from rappit.platform.settings import Settings
from tests.conftest import client_for, start_app, stop_app
from tests.inventory.helpers import setup_stock
from tests.platform.test_errors import assert_envelope

SMALL = {
    "db_connect_timeout_seconds": 1,
    "db_pool_timeout_seconds": 1,
    "db_statement_timeout_ms": 300,
}


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[Any]:
    app = create_app(dataclasses.replace(settings, **{**SMALL, **changes}))
    await start_app(app)
    try:
        yield app
    finally:
        await stop_app(app)


def assert_unavailable(resp, elapsed: float, bound: float) -> None:
    error = assert_envelope(resp, 503, "DEPENDENCY_UNAVAILABLE")
    assert error["details"]["dependency"] == "postgres"
    assert int(resp.headers["retry-after"]) > 0
    assert elapsed < bound, f"took {elapsed:.2f} s"


async def timed(request) -> tuple[Any, float]:
    started = time.monotonic()
    resp = await asyncio.wait_for(request, timeout=15)  # before the fix this hung for a minute
    return resp, time.monotonic() - started


async def test_a_statement_stuck_behind_a_lock_is_a_503_within_the_statement_timeout(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    adjust = {"sku": "A", "warehouse_code": "W1", "quantity": 1, "mode": "delta"}
    async with app_with(settings) as app, client_for(app) as c, admin_engine.connect() as holder:
        locking = await holder.begin()
        await holder.execute(  # another transaction holds the row the request must update
            text("select 1 from inventory_levels where org_id = :o for update"), {"o": org.id}
        )
        try:
            resp, elapsed = await timed(c.post("/api/v1/inventory/adjust", json=adjust, headers=org.headers))
            assert_unavailable(resp, elapsed, bound=2.5)
        finally:
            await locking.rollback()
        again = await c.post("/api/v1/inventory/adjust", json=adjust, headers=org.headers)
        assert again.status_code == 200 and again.json()["on_hand"] == 6, again.text


async def test_an_exhausted_pool_is_a_503_within_the_pool_timeout(client, make_org, settings) -> None:
    org = await make_org()
    async with app_with(settings, db_pool_size=1, db_max_overflow=0) as app, client_for(app) as c:
        async with app.state.engine.connect() as hog:  # the pool's only connection
            await hog.execute(text("select 1"))
            resp, elapsed = await timed(c.get("/api/v1/skus", headers=org.headers))
            assert_unavailable(resp, elapsed, bound=3)
        assert (await c.get("/api/v1/skus", headers=org.headers)).status_code == 200


async def test_a_database_that_accepts_but_never_answers_is_a_503_within_the_connect_timeout(
    settings,
) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = make_url(settings.database_url or "").set(host="127.0.0.1", port=port, query={})
    try:
        async with app_with(settings, database_url=url.render_as_string(hide_password=False)) as app:
            async with client_for(app) as c:
                login = {"org_code": "NOPE", "email": "a@b.test", "password": "x"}
                resp, elapsed = await timed(c.post("/auth/login", json=login))
                assert_unavailable(resp, elapsed, bound=3)
                resp, elapsed = await timed(c.get("/api/v1/me", headers={"Authorization": "Bearer rpt_x"}))
                assert_unavailable(resp, elapsed, bound=3)
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_whose_protocol_broke_is_discarded_not_handed_on(settings, monkeypatch) -> None:
    """Seen in the chaos soak after a PostgreSQL restart: asyncpg's InternalClientError ("cannot
    switch to state 12; another operation is in progress") on a pooled connection, and the next
    transactions on that same connection failed at once. The engine treats it as a disconnect: the
    pool discards the connection and the next checkout gets a fresh one."""
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            before = (await conn.execute(text("select pg_backend_pid()"))).scalar_one()
        broken = asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )

        async def prepare(*_args: Any, **_kwargs: Any) -> Any:
            raise broken

        with monkeypatch.context() as patch:
            patch.setattr(asyncpg.connection.Connection, "prepare", prepare)
            async with engine.connect() as conn:
                with pytest.raises(DBAPIError) as raised:
                    await conn.execute(text("select 'a statement not prepared before'"))
        assert raised.value.connection_invalidated
        async with engine.connect() as conn:
            after = (await conn.execute(text("select pg_backend_pid()"))).scalar_one()
        assert after != before
    finally:
        await engine.dispose()
