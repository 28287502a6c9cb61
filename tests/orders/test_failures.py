"""Nothing is lost: Redis down (the inbox does not need it), a worker killed with SIGKILL mid-batch,
a webhook that never came (reconciliation)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rappit.app.factory import create_app
from rappit.platform.localstack import EmbeddedRedis
from rappit.workers.context import Deps
from rappit.workers.inbox import drain
from rappit.workers.settings import reconcile_channels
from tests.conftest import admin_scalar, client_for, start_app, stop_app
from tests.inventory.helpers import assert_inventory_consistent, setup_stock
from tests.orders.helpers import run_worker, send_shopify, shopify_channel, shopify_order


async def count(admin_engine, sql: str, org) -> int:
    return await admin_scalar(admin_engine, sql, o=org.id)


async def admin_one(admin_engine, sql: str, org) -> tuple:
    from sqlalchemy import text

    async with admin_engine.connect() as conn:
        return tuple((await conn.execute(text(sql), {"o": org.id})).one())


async def test_webhooks_are_accepted_and_become_orders_while_redis_is_down(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 100})
    channel = await shopify_channel(client, org)
    own = EmbeddedRedis(
        Path(tempfile.mkdtemp(prefix="rappit-redis-"))
    )  # this test's Redis, to stop and start
    own.start()
    isolated = dataclasses.replace(settings, redis_url=own.url)
    app = create_app(isolated)
    await start_app(app)
    try:
        own.stop()  # Redis goes away
        async with client_for(app) as c:
            responses = [
                await send_shopify(c, channel, shopify_order(3000 + i, [("A", 1)])) for i in range(10)
            ]
        assert [r.status_code for r in responses] == [200] * 10
        assert (
            await count(
                admin_engine,
                "select count(*) from webhook_events where org_id = :o and status = 'pending'",
                org,
            )
            == 10
        )
        # Still down: the workers claim the inbox from PostgreSQL alone.
        deps = Deps.build(isolated, pool_size=2, max_overflow=0)
        try:
            await drain(deps)
        finally:
            await deps.close()
    finally:
        await stop_app(app)
        own.stop()
    assert (
        await count(
            admin_engine,
            "select count(*) from webhook_events where org_id = :o and status = 'processed'",
            org,
        )
        == 10
    )
    assert await count(admin_engine, "select count(*) from orders where org_id = :o", org) == 10
    await assert_inventory_consistent(admin_engine, org.id)


async def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    n = 300
    await setup_stock(client, org, {("A", "W1"): n})
    channel = await shopify_channel(client, org)
    for i in range(n):  # stored by the app as they arrive, for the worker to claim
        assert (await send_shopify(client, channel, shopify_order(5000 + i, [("A", 1)]))).status_code == 200
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        SYSTEM_DATABASE_URL=settings.system_database_url,
        JOB_TIMEOUT_SECONDS="2",
        LOG_LEVEL="WARNING",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "rappit.app.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    claimed = done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Some applied, and a batch in flight: claimed (attempts counted and committed), not applied.
        claimed, done = await admin_one(
            admin_engine,
            """select count(*) filter (where status = 'pending' and attempts > 0),
                      count(*) filter (where status = 'processed')
                 from webhook_events where org_id = :o""",
            org,
        )
        if claimed and done:
            break
        await asyncio.sleep(0.005)
    worker.send_signal(signal.SIGKILL)  # no goodbye: its in-flight batches are simply abandoned
    worker.wait(10)
    processed = await count(
        admin_engine, "select count(*) from webhook_events where org_id = :o and status = 'processed'", org
    )
    assert claimed and 0 < processed < n, f"kill came too late or too early ({processed} of {n})"
    # Proof that a batch was in flight: each claim counts its attempts before the work, so events that
    # were claimed but never finished have an attempt and no outcome.
    in_flight = await count(
        admin_engine,
        "select count(*) from webhook_events where org_id = :o and status = 'pending' and attempts > 0",
        org,
    )
    assert in_flight >= 1
    # Another worker (job timeout 2 s, as the killed one: abandoned claims are taken again once their
    # 2 s lease has run out).
    await run_worker(dataclasses.replace(settings, job_timeout_seconds=2), max_seconds=120)
    assert (
        await count(
            admin_engine,
            "select count(*) from webhook_events where org_id = :o and status = 'processed'",
            org,
        )
        == n
    )
    assert await count(admin_engine, "select count(*) from orders where org_id = :o", org) == n
    assert (
        await count(
            admin_engine, "select count(*) from order_events where org_id = :o and kind = 'created'", org
        )
        == n
    )
    assert (
        await count(
            admin_engine, "select count(*) from reservations where org_id = :o and status = 'active'", org
        )
        == n
    )
    await assert_inventory_consistent(admin_engine, org.id)


async def test_reconciliation_recovers_an_order_whose_webhook_never_arrived(
    client, make_org, settings, admin_engine
) -> None:
    from rappit.integrations.sandboxes.shopify import FakeShopify

    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org, api_token="shpat_reconcile_token")
    fake = FakeShopify("shpat_reconcile_token").start()
    try:
        from datetime import UTC, datetime, timedelta

        recent = datetime.now(UTC) - timedelta(minutes=30)  # inside the first run's look-back window
        delivered = {**shopify_order(7001, [("A", 1)]), "updated_at": recent.isoformat()}
        lost = {**shopify_order(7002, [("A", 2)]), "updated_at": (recent + timedelta(minutes=1)).isoformat()}
        await send_shopify(client, channel, delivered)
        await run_worker(settings)
        fake.put_order(delivered)
        fake.put_order(lost)  # paid, but its webhook never arrived
        sandboxed = dataclasses.replace(settings, shopify_admin_url=fake.url)
        deps = Deps.build(sandboxed, pool_size=2, max_overflow=0)
        try:
            assert await reconcile_channels({"deps": deps}) == 1  # the lost one; the other came by webhook
            await reconcile_channels({"deps": deps})  # again: nothing new, nothing doubled
        finally:
            await deps.close()
    finally:
        fake.stop()
    assert any("orders.json" in p and "updated_at_min" in p for p in fake.paths)
    orders = (await client.get("/api/v1/orders", headers=org.headers)).json()["items"]
    assert sorted(o["external_id"] for o in orders) == ["7001", "7002"]
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(10, 3)]
    watermark = await admin_scalar(
        admin_engine, "select reconciled_until from channels where id = :c", c=channel["id"]
    )
    assert watermark is not None
