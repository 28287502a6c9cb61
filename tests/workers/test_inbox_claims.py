"""Workers claim the webhook inbox themselves: concurrent claimers apply each event exactly once, a
poison event does not sink its batch, a create and its update in one batch end in the update's state,
and claims are fair across orgs (a backlog of one org does not hold back another's fresh event)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

from sqlalchemy import text

from rappit.integrations.channels.base import TopicKind
from rappit.integrations.channels.canonical import CanonicalLine, CanonicalOrder
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.integrations.channels.shopify import ShopifyAdapter
from rappit.integrations.channels.woocommerce import WooCommerceAdapter
from rappit.workers import inbox as inbox_module
from rappit.workers.context import Deps
from rappit.workers.inbox import MAX_ATTEMPTS, Claimer, drain, process_claimed, serve
from tests.conftest import admin_scalar
from tests.inventory.helpers import assert_inventory_consistent, setup_stock
from tests.orders.helpers import send_shopify, shopify_channel, shopify_order


async def store_pending(admin_engine, org_id, channel_id: str, payloads: list[dict], topic: str) -> list[str]:
    """Store inbox rows as ingress would (pending, no attempt), in one statement: a backlog, fast."""
    ids = [str(uuid.uuid4()) for _ in payloads]
    async with admin_engine.begin() as conn:
        await conn.execute(
            text(
                """INSERT INTO webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key, payload,
                                              received_at, status, attempts)
                   SELECT id, :org, :ch, :topic, id::text, id::text, convert_to(body, 'UTF8'),
                          clock_timestamp(), 'pending', 0
                     FROM unnest(CAST(:ids AS uuid[]), CAST(:bodies AS text[]))
                          WITH ORDINALITY AS t(id, body, n)
                    ORDER BY n"""
            ),
            {
                "org": org_id,
                "ch": channel_id,
                "topic": topic,
                "ids": ids,
                "bodies": [json.dumps(p) for p in payloads],
            },
        )
    return ids


async def statuses(admin_engine, ids: list[str]) -> dict[str, tuple[str, int]]:
    async with admin_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "select id::text, status, attempts from webhook_events where id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        )
        return {r[0]: (r[1], r[2]) for r in rows.all()}


async def test_concurrent_claimers_apply_every_event_exactly_once(
    client, make_org, settings, admin_engine
) -> None:
    orgs = [await make_org() for _ in range(2)]
    n = 300  # per org: creates, then updates of a tenth of them (more A), in one inbox
    ids: list[str] = []
    for org in orgs:
        await setup_stock(client, org, {("A", "W1"): 10 * n, ("B", "W1"): 10 * n})
        channel = await shopify_channel(client, org)
        creates = [shopify_order(20_000 + i, [("A", 1), ("B", 2)]) for i in range(n)]
        updates = [shopify_order(20_000 + i, [("A", 3), ("B", 2)], minutes=5) for i in range(0, n, 10)]
        ids += await store_pending(admin_engine, org.id, channel["id"], creates, "orders/create")
        ids += await store_pending(admin_engine, org.id, channel["id"], updates, "orders/updated")
    # Four workers with small batches, so their claims interleave all the time. Their statements may
    # queue on the two hot stock rows for long on a loaded machine: a failure (and its retry, a second
    # attempt) would then blur what this test counts, claims.
    patient = dataclasses.replace(settings, db_statement_timeout_ms=120_000)
    workers = [Deps.build(patient, pool_size=4, max_overflow=4, inbox_batch=16) for _ in range(4)]
    try:
        tallies = await asyncio.gather(*(drain(d, max_seconds=120) for d in workers))
    finally:
        for d in workers:
            await d.close()
    assert all(sum(t.values()) > 0 for t in tallies), tallies  # every worker took a share
    # Claimed once each: one counted attempt, one outcome.
    assert set((await statuses(admin_engine, ids)).values()) == {("processed", 1)}
    for org in orgs:
        one = {"o": org.id}
        assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", **one) == n
        assert (
            await admin_scalar(
                admin_engine, "select count(distinct number) from orders where org_id = :o", **one
            )
            == n
        )
        created = "select count(*) from order_events where org_id = :o and kind = 'created'"
        assert await admin_scalar(admin_engine, created, **one) == n
        updated = "select count(*) from order_events where org_id = :o and kind = 'updated'"
        assert await admin_scalar(admin_engine, updated, **one) == len(range(0, n, 10))
        levels = await assert_inventory_consistent(admin_engine, org.id)
        # Reserved: 1 A + 2 B per order, and 2 more A for each updated one.
        k = len(range(0, n, 10))
        assert sorted(levels.values()) == sorted([(10 * n, n + 2 * k), (10 * n, 2 * n)])


POISON = "31999"


class _PoisonAdapter(ShopifyAdapter):
    """Lets one order through with a price the database cannot take (past bigint), skipping the
    canonical checks: a failure raised inside the batch's transaction, not by the mapper."""

    def map_order(self, data: Any, kind: TopicKind) -> CanonicalOrder:
        order = super().map_order(data, kind)
        if order.external_id != POISON:
            return order
        line = object.__new__(CanonicalLine)
        for name, value in dict(
            external_line_id="1", sku="A", title="A", quantity=1, unit_price_minor=2**70
        ).items():
            object.__setattr__(line, name, value)
        return dataclasses.replace(order, lines=[line])


async def test_a_poison_event_does_not_sink_its_batch(client, make_org, settings, admin_engine) -> None:
    """The poison passes the mapper but the database refuses it: the batch's transaction fails, its
    events go the one-event path, the others become orders and only the poison is dead-lettered,
    after its attempts."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 100})
    channel = await shopify_channel(client, org)
    good = [shopify_order(31_000 + i, [("A", 1)]) for i in range(6)]
    poison = shopify_order(int(POISON), [("A", 1)])
    ids = await store_pending(
        admin_engine, org.id, channel["id"], [*good[:3], poison, *good[3:]], "orders/create"
    )
    deps = Deps.build(settings, pool_size=4, max_overflow=4, webhook_backoff=(0.05,))
    registry = ChannelRegistry([_PoisonAdapter(settings.shopify_admin_url), WooCommerceAdapter()])
    deps = dataclasses.replace(deps, channels=registry)
    try:
        claimer = Claimer(deps.inbox_batch)
        first = await claimer.claim(deps)
        assert set(ids) <= {str(c.id) for c in first}  # one batch holds them all
        await process_claimed(deps, first)
        after_first = await statuses(admin_engine, ids)
        await drain(deps)
    finally:
        await deps.close()
    poison_id = ids[3]
    assert after_first[poison_id] == ("failed", 1)
    assert all(after_first[i] == ("processed", 1) for i in ids if i != poison_id)
    final = await statuses(admin_engine, ids)
    assert final[poison_id] == ("dead", MAX_ATTEMPTS)
    error = await admin_scalar(admin_engine, "select error from dead_letters where ref_id = :e", e=poison_id)
    assert "out of range" in error or "int" in error.lower(), error
    assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", o=org.id) == 6
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(100, 6)]


async def test_a_create_and_its_update_in_one_batch_end_in_the_update_state(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 100, ("B", "W1"): 100})
    channel = await shopify_channel(client, org)
    created = await store_pending(
        admin_engine, org.id, channel["id"], [shopify_order(32_001, [("A", 2)])], "orders/create"
    )
    updated = await store_pending(
        admin_engine, org.id, channel["id"], [shopify_order(32_001, [("B", 5)], minutes=1)], "orders/updated"
    )
    deps = Deps.build(settings, pool_size=4, max_overflow=4)
    try:
        claimed = await Claimer(deps.inbox_batch).claim(deps)
        assert {*created, *updated} <= {str(c.id) for c in claimed}  # both in one batch
        await process_claimed(deps, claimed)
    finally:
        await deps.close()
    assert set((await statuses(admin_engine, created + updated)).values()) == {("processed", 1)}
    order = (await client.get("/api/v1/orders", headers=org.headers)).json()["items"][0]
    detail = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()
    assert [(ln["sku"], ln["quantity"]) for ln in detail["lines"]] == [("B", 5)]
    assert [e["kind"] for e in detail["timeline"]] == [
        "created",
        "reserved",
        "updated",
        "reservations_adjusted",
    ]
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert sorted(levels.values()) == [(100, 0), (100, 5)]


async def test_claims_are_fair_across_orgs(client, make_org, settings, admin_engine) -> None:
    """Org A has a backlog of hundreds; org B's event, stored after all of them, is in the very next
    claim, and so is B's next one after that claim (a FIFO would reach them after A's backlog)."""
    a, b = await make_org(), await make_org()
    await setup_stock(client, a, {("A", "W1"): 10_000})
    await setup_stock(client, b, {("A", "W1"): 10})
    channel_a, channel_b = await shopify_channel(client, a), await shopify_channel(client, b)
    backlog = await store_pending(
        admin_engine, a.id, channel_a["id"], [shopify_order(40_000 + i, [("A", 1)]) for i in range(400)],
        "orders/create",
    )  # fmt: skip
    b_first = (await send_shopify(client, channel_b, shopify_order(41_001, [("A", 1)]))).json()["event_id"]
    deps = Deps.build(settings, pool_size=4, max_overflow=4, inbox_batch=50)
    try:
        claimer = Claimer(deps.inbox_batch)
        round1 = await claimer.claim(deps)
        b_second = (await send_shopify(client, channel_b, shopify_order(41_002, [("A", 1)]))).json()[
            "event_id"
        ]
        await process_claimed(deps, round1)
        round2 = await claimer.claim(deps)
        await process_claimed(deps, round2)
        await drain(deps)
    finally:
        await deps.close()
    ids1, ids2 = [str(c.id) for c in round1], [str(c.id) for c in round2]
    assert b_first in ids1 and b_second in ids2
    # A's backlog fills the rest of each claim, oldest first.
    mine1 = [i for i in ids1 if i in set(backlog)]
    assert mine1 and mine1 == backlog[: len(mine1)] and len(ids1) <= 50
    assert set((await statuses(admin_engine, backlog + [b_first, b_second])).values()) == {("processed", 1)}


async def test_a_stored_event_wakes_an_idle_worker(client, make_org, settings, admin_engine) -> None:
    """Ingress's NOTIFY after the commit wakes a claim loop at once: with its poll a minute away, the event
    still becomes an order (no timing asserted beyond "well before the poll")."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    deps = Deps.build(settings, pool_size=4, max_overflow=4, inbox_poll_seconds=60.0)
    await drain(deps)  # nothing pending: the loop below starts idle
    stop = asyncio.Event()
    loop = asyncio.create_task(serve(deps, stop))
    try:
        await asyncio.sleep(1.0)  # listening, and the first claims came back empty
        event_id = (await send_shopify(client, channel, shopify_order(42_001, [("A", 1)]))).json()["event_id"]
        for _ in range(300):  # 30 s at most, half the poll interval
            if (await statuses(admin_engine, [event_id]))[event_id][0] == "processed":
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await loop
        await deps.close()
    assert (await statuses(admin_engine, [event_id]))[event_id] == ("processed", 1)


async def test_one_event_runs_across_many_orgs_wait_on_the_gate_not_the_pool(
    client, make_org, settings, admin_engine, monkeypatch
) -> None:
    """Updates (the one-event path) of six orgs in one claim, each run holding its connection a
    while (a slow channel, say): the process's gate keeps them below its pool, so none times out
    waiting for a connection. A gate per org and claim (the 30-minute chaos soak's failure) let
    6 x 8 runs at a pool of 3 and recorded pool timeouts as failures."""
    orgs = [await make_org() for _ in range(6)]
    per_org, updates = 10, []
    for org in orgs:
        await setup_stock(client, org, {("A", "W1"): 100})
        channel = await shopify_channel(client, org)
        creates = [shopify_order(43_000 + i, [("A", 1)]) for i in range(per_org)]
        raised = [shopify_order(43_000 + i, [("A", 2)], minutes=5) for i in range(per_org)]
        await store_pending(admin_engine, org.id, channel["id"], creates, "orders/create")
        updates.append((org, channel, raised))
    fast = Deps.build(settings, pool_size=4, max_overflow=4)
    try:
        await drain(fast)
    finally:
        await fast.close()
    ids: list[str] = []
    for org, channel, raised in updates:
        ids += await store_pending(admin_engine, org.id, channel["id"], raised, "orders/updated")

    slow_apply = inbox_module.apply_event

    async def slow(*args: Any, **kwargs: Any) -> Any:
        result = await slow_apply(*args, **kwargs)
        await asyncio.sleep(0.1)  # the transaction, and its connection, stay open
        return result

    monkeypatch.setattr(inbox_module, "apply_event", slow)
    tight = dataclasses.replace(settings, db_pool_timeout_seconds=1)
    deps = Deps.build(tight, pool_size=2, max_overflow=1, inbox_sessions=2, inbox_batch=len(ids))
    try:
        tally = await drain(deps, max_seconds=60, horizon=0)
    finally:
        await deps.close()
    assert tally == {"updated": len(ids)}, tally
    assert set((await statuses(admin_engine, ids)).values()) == {("processed", 1)}
    for org in orgs:
        levels = await assert_inventory_consistent(admin_engine, org.id)
        assert list(levels.values()) == [(100, 2 * per_org)]
