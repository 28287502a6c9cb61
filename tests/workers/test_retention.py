"""Retention: processed webhook events and order events past RETENTION_DAYS go, in batches that skip
rows another transaction holds; pending, failed and dead events and the ledger stay."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from rappit.workers.retention import purge_history
from tests.inventory.helpers import setup_stock
from tests.orders.helpers import shopify_channel


async def seed(admin_engine, org_id, channel_id) -> None:
    async with admin_engine.begin() as conn:
        await conn.execute(
            text(
                """insert into webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key, payload,
                          received_at, status, attempts, processed_at)
                   select gen_random_uuid(), :o, :c, 'orders/create', k, k, '{}', now() - age, st, 1,
                          case when st in ('processed', 'ignored') then now() - age end
                     from (values ('old-processed-1', 'processed', interval '40 days'),
                                  ('old-processed-2', 'processed', interval '31 days'),
                                  ('old-ignored', 'ignored', interval '35 days'),
                                  ('old-pending', 'pending', interval '40 days'),
                                  ('old-dead', 'dead', interval '40 days'),
                                  ('new-processed', 'processed', interval '29 days')) v(k, st, age)"""
            ),
            {"o": org_id, "c": channel_id},
        )
        order = (
            await conn.execute(
                text(
                    """insert into orders (id, org_id, number, source, status, currency, created_at,
                                           updated_at)
                       values (gen_random_uuid(), :o, 'R-M-1', 'manual', 'open', 'EUR', now(), now())
                       returning id"""
                ),
                {"o": org_id},
            )
        ).scalar_one()
        await conn.execute(
            text(
                """insert into order_events (org_id, order_id, kind, detail, created_at)
                   select :o, :r, 'created', '{}', now() - d * interval '1 day'
                     from unnest(array[45, 40, 31, 10, 0]) d"""
            ),
            {"o": org_id, "r": order},
        )


async def left(admin_engine, org_id) -> tuple[list[str], int, int]:
    async with admin_engine.connect() as conn:
        keys = sorted(
            (
                await conn.execute(
                    text("select dedup_key from webhook_events where org_id = :o"), {"o": org_id}
                )
            ).scalars()
        )
        events = (
            await conn.execute(text("select count(*) from order_events where org_id = :o"), {"o": org_id})
        ).scalar_one()
        ledger = (
            await conn.execute(text("select count(*) from inventory_ledger where org_id = :o"), {"o": org_id})
        ).scalar_one()
    return keys, events, ledger


async def test_old_done_events_go_in_batches_the_rest_stays(
    client, make_org, admin_engine, system_sessionmaker
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    channel = await shopify_channel(client, org)
    await seed(admin_engine, org.id, channel["id"])
    _, _, ledger_before = await left(admin_engine, org.id)
    deleted = await purge_history(system_sessionmaker, retention_days=30, batch=2)
    assert deleted["webhook_events"] >= 3 and deleted["order_events"] >= 3  # (other tests' old rows too)
    keys, events, ledger = await left(admin_engine, org.id)
    assert keys == ["new-processed", "old-dead", "old-pending"]
    assert events == 2 and ledger == ledger_before  # the last 30 days' timeline; the ledger untouched


async def test_a_row_held_by_another_transaction_is_skipped_not_waited_for(
    client, make_org, admin_engine, system_sessionmaker
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    await seed(admin_engine, org.id, channel["id"])
    async with admin_engine.connect() as holder:  # ingress or an inbox job holding one old row
        await holder.execute(
            text("select 1 from webhook_events where org_id = :o and dedup_key = 'old-ignored' for update"),
            {"o": org.id},
        )
        await asyncio.wait_for(purge_history(system_sessionmaker, retention_days=30, batch=2), timeout=20)
        keys, _, _ = await left(admin_engine, org.id)
        assert keys == ["new-processed", "old-dead", "old-ignored", "old-pending"]
        await holder.rollback()
    await purge_history(system_sessionmaker, retention_days=30, batch=2)
    keys, _, _ = await left(admin_engine, org.id)
    assert keys == ["new-processed", "old-dead", "old-pending"]
