"""Reconciliation follows Shopify's cursor pagination (Link rel="next", page_info) to the end within a
run, stops at its time budget and resumes from the watermark, and shows its lag per channel."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from rappit.integrations.sandboxes.shopify import FakeShopify
from rappit.orders import jobs as order_jobs
from rappit.tenancy.context import Actor, org_context
from rappit.workers.context import Deps
from tests.conftest import admin_scalar
from tests.inventory.helpers import setup_stock
from tests.orders.helpers import shopify_channel, shopify_order

N = 260  # two pages: 250 and 10


def put_orders(fake: FakeShopify, first: int, n: int, start: datetime) -> None:
    for i in range(n):  # one update a second; the ids run against the update order (Shopify's default)
        order = shopify_order(first + n - i, [("A", 1)])
        fake.put_order({**order, "updated_at": (start + timedelta(seconds=i)).isoformat()})


async def reconcile(settings, fake: FakeShopify, org, channel, budget: float) -> int:
    """One cron run for this channel (reconcile_all runs this for every channel; other tests' channels
    would call this fake too)."""
    deps = Deps.build(dataclasses.replace(settings, shopify_admin_url=fake.url), pool_size=2, max_overflow=0)
    try:
        with org_context(org.id, Actor(kind="system", id="reconciliation")):
            return await order_jobs.reconcile_channel(
                deps.sessionmaker,
                deps.channels,
                deps.secret_box,
                uuid.UUID(channel["id"]),
                budget_seconds=budget,
            )
    finally:
        await deps.close()


async def external_ids(client, org) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/orders", params=params, headers=org.headers)).json()
        ids += [o["external_id"] for o in page["items"]]
        if not (cursor := page["next_cursor"]):
            return ids


async def test_one_run_follows_every_page_and_the_lag_is_shown(client, make_org, settings, admin_engine):
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10_000})
    channel = await shopify_channel(client, org, api_token="shpat_pages_token")
    before = (await client.get(f"/api/v1/channels/{channel['id']}", headers=org.headers)).json()
    assert before["reconcile_lag_seconds"] is None  # never reconciled yet
    fake = FakeShopify("shpat_pages_token").start()
    try:
        put_orders(fake, 10_000, N, datetime.now(UTC) - timedelta(hours=1))
        assert await reconcile(settings, fake, org, channel, budget=600) == N
        assert (
            await reconcile(settings, fake, org, channel, budget=600) == 0
        )  # again: nothing new, nothing doubled
    finally:
        fake.stop()
    lists = [p for p in fake.paths if "/orders.json" in p]
    assert len(lists) == 3  # pages of 250 and 10; then one page for the second run
    assert "updated_at_min" in lists[0] and "order=updated_at+asc" in lists[0]
    assert "page_info=" in lists[1] and "updated_at" not in lists[1]  # the Link header's URL, as is
    ids = await external_ids(client, org)
    assert sorted(ids) == sorted(str(10_000 + i) for i in range(1, N + 1))
    shown = (await client.get(f"/api/v1/channels/{channel['id']}", headers=org.headers)).json()
    assert 0 <= shown["reconcile_lag_seconds"] < 120, shown  # caught up: the watermark is the run's start
    listed = (await client.get("/api/v1/channels", headers=org.headers)).json()
    assert [c["reconcile_lag_seconds"] is not None for c in listed] == [True]


async def test_a_run_out_of_time_stops_and_the_next_resumes_from_the_watermark(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10_000})
    channel = await shopify_channel(client, org, api_token="shpat_budget_token")
    fake = FakeShopify("shpat_budget_token").start()
    start = datetime.now(UTC) - timedelta(hours=1)
    try:
        put_orders(fake, 20_000, N, start)
        assert (
            await reconcile(settings, fake, org, channel, budget=0) == 250
        )  # one page, then the budget is spent
        watermark = await admin_scalar(
            admin_engine, "select reconciled_until from channels where id = :c", c=channel["id"]
        )
        assert watermark == start + timedelta(seconds=249)  # the newest update on the page it applied
        lag = (await client.get(f"/api/v1/channels/{channel['id']}", headers=org.headers)).json()
        assert lag["reconcile_lag_seconds"] > 3000  # an hour behind, and it says so
        assert (
            await reconcile(settings, fake, org, channel, budget=0) == 10
        )  # resumed from the watermark: the rest
        resumed = [p for p in fake.paths if "/orders.json" in p and "updated_at_min" in p]
        assert len(resumed) == 2 and watermark.strftime("%Y-%m-%dT%H%%3A%M%%3A%S") in resumed[1], resumed
    finally:
        fake.stop()
    ids = await external_ids(client, org)
    assert sorted(ids) == sorted(str(20_000 + i) for i in range(1, N + 1))
