"""Every failure of an inbox event's run is counted and ends in a dead letter: poison payloads,
failures the database raises, runs that time out or die."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rappit.integrations.channels.base import TopicKind
from rappit.integrations.channels.canonical import CanonicalLine, CanonicalOrder
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.integrations.channels.shopify import ShopifyAdapter
from rappit.integrations.channels.woocommerce import WooCommerceAdapter
from rappit.workers import inbox as inbox_module
from rappit.workers.context import Deps
from rappit.workers.inbox import (
    MAX_ATTEMPTS,
    MAX_UNFINISHED,
    UNFINISHED,
    Claimer,
    drain,
    process_claimed,
    process_webhook_event,
)
from tests.conftest import admin_scalar
from tests.inventory.helpers import setup_stock
from tests.orders.helpers import run_worker, send_shopify, shopify_channel, shopify_order


async def event_row(admin_engine, event_id: str) -> Any:
    from sqlalchemy import text

    async with admin_engine.connect() as conn:
        return (
            await conn.execute(
                text("select status, attempts, last_error from webhook_events where id = :e"), {"e": event_id}
            )
        ).one()


async def dead_letter_error(admin_engine, event_id: str) -> str | None:
    return await admin_scalar(admin_engine, "select error from dead_letters where ref_id = :e", e=event_id)


async def run_to_the_end(deps: Deps, org_id: uuid.UUID, event_id: str) -> list[str]:
    """Run the event the way a claim would, once per try, until it is no longer scheduled again."""
    outcomes = []
    for _ in range(MAX_ATTEMPTS + 1):
        run = process_webhook_event({"deps": deps}, str(org_id), event_id)
        outcomes.append(await asyncio.wait_for(run, 30))  # a guard: the run's own deadline is shorter
        if outcomes[-1] != "retry":
            break
    return outcomes


@pytest.mark.parametrize(
    ("field", "value"),
    [("quantity", 2147483648), ("quantity", 2**63), ("price", "1e400"), ("price", "9" * 30)],
)
async def test_poison_payloads_dead_letter_after_three_counted_attempts(
    client, make_org, settings, admin_engine, field, value
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    order = shopify_order(9100, [("A", 1)])
    order["line_items"][0][field] = value
    accepted = await send_shopify(client, channel, order)
    assert accepted.status_code == 200
    event_id = accepted.json()["event_id"]
    await run_worker(settings)
    status, attempts, last_error = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("dead", MAX_ATTEMPTS)
    assert last_error.startswith("PayloadError")
    assert (await dead_letter_error(admin_engine, event_id)).startswith("PayloadError")
    assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", o=org.id) == 0


class _UncheckedAdapter(ShopifyAdapter):
    """Maps to an order the database refuses (a quantity past int4), skipping the canonical checks:
    a failure raised by the database inside the work, whatever the mapper lets through."""

    def map_order(self, data: Any, kind: TopicKind) -> CanonicalOrder:
        line = object.__new__(CanonicalLine)
        for name, value in dict(
            external_line_id="1", sku="A", title="A", quantity=2**40, unit_price_minor=100
        ).items():
            object.__setattr__(line, name, value)
        return CanonicalOrder(
            external_id=str(data["id"]),
            name="#1",
            currency="USD",
            updated_at=None,
            cancelled=False,
            lines=[line],
        )


async def test_a_failure_the_database_raises_is_counted_and_dead_letters(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    event_id = (await send_shopify(client, channel, shopify_order(9200, [("A", 1)]))).json()["event_id"]
    deps = Deps.build(settings, pool_size=2, max_overflow=0, webhook_backoff=(0.0,))
    deps = dataclasses.replace(
        deps, channels=ChannelRegistry([_UncheckedAdapter(settings.shopify_admin_url), WooCommerceAdapter()])
    )
    try:
        outcomes = await run_to_the_end(deps, org.id, event_id)
    finally:
        await deps.close()
    assert outcomes == ["retry", "retry", "dead"]
    status, attempts, last_error = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("dead", 3) and "out of int32 range" in last_error


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a channel API that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = False

    def accept() -> None:
        server.settimeout(0.1)
        while not stop:
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    import threading

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop = True
        thread.join(2)
        for conn in held:
            conn.close()  # the hung calls' threads get an error and end
        server.close()


async def test_a_run_that_times_out_is_counted_and_the_third_dead_letters(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org, api_token="shpat_hanging_token")
    edit = {"order_edit": {"id": 1, "order_id": 77, "line_items": {"additions": [], "removals": []}}}
    event_id = (await send_shopify(client, channel, edit, topic="orders/edited")).json()["event_id"]
    with silent_server() as url:
        hanging = dataclasses.replace(settings, shopify_admin_url=url, job_timeout_seconds=1)
        deps = Deps.build(hanging, pool_size=2, max_overflow=0, webhook_backoff=(0.0,))
        try:
            outcomes = await run_to_the_end(deps, org.id, event_id)
        finally:
            await deps.close()
    assert outcomes == ["retry", "retry", "dead"]
    status, attempts, last_error = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("dead", 3) and last_error.startswith("TimeoutError")


async def _with_runs(client, make_org, admin_engine, order_id: int, attempts: int, failures: int):
    """An org, stock, and one stored event whose earlier runs are set: `attempts` started, `failures`
    of them recorded a failure (the rest died without an outcome)."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    event_id = (await send_shopify(client, channel, shopify_order(order_id, [("A", 1)]))).json()["event_id"]
    async with admin_engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("update webhook_events set attempts = :a, failures = :f where id = :e"),
            {"a": attempts, "f": failures, "e": event_id},
        )
    return org, event_id


async def _run(settings, org, event_id) -> str:
    deps = Deps.build(settings, pool_size=2, max_overflow=0)
    try:
        return await process_webhook_event({"deps": deps}, str(org.id), event_id)
    finally:
        await deps.close()


async def test_runs_that_never_finished_still_count_and_past_their_budget_dead_letter_untried(
    client, make_org, settings, admin_engine
) -> None:
    """MAX_UNFINISHED runs started and counted their attempt, then died (SIGKILL, or a lease that ran
    out) without recording anything: the next run dead-letters, untried. An event that kills every
    worker that takes it still ends."""
    org, event_id = await _with_runs(client, make_org, admin_engine, 9300, MAX_UNFINISHED, 0)
    assert await _run(settings, org, event_id) == "dead"
    status, attempts, last_error = await event_row(admin_engine, event_id)
    assert (status, attempts, last_error) == ("dead", MAX_UNFINISHED + 1, UNFINISHED)
    assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", o=org.id) == 0


async def test_runs_killed_mid_batch_do_not_spend_the_failure_budget(
    client, make_org, settings, admin_engine
) -> None:
    """Found by the 30-minute chaos soak: workers killed every few seconds left healthy events with
    three unfinished runs, and the old rule (attempts > 3) dead-lettered them. Unfinished runs have
    their own budget: an event with MAX_ATTEMPTS unfinished runs and one recorded failure is still
    applied."""
    org, event_id = await _with_runs(client, make_org, admin_engine, 9301, MAX_ATTEMPTS + 1, 1)
    assert await _run(settings, org, event_id) == "created"
    status, attempts, _ = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("processed", MAX_ATTEMPTS + 2)
    assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", o=org.id) == 1


async def test_every_log_line_of_a_job_names_the_order_and_the_delivery_that_caused_it(
    client, make_org, settings, caplog
) -> None:
    """ "What happened to order #1001?" has an answer in the logs: the job's lines carry the order id,
    number, channel, the channel's order id and the request id of the delivery that caused it."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    accepted = await send_shopify(client, channel, shopify_order(9501, [("A", 1)]))
    request_id = accepted.headers["x-request-id"]
    caplog.set_level("INFO")
    await run_worker(settings)
    lines = [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "webhook.processed"
    ]
    mine = [line for line in lines if line.get("event_id") == accepted.json()["event_id"]]
    assert len(mine) == 1, lines
    line = mine[0]
    order = (await client.get("/api/v1/orders", headers=org.headers)).json()["items"][0]
    assert line["order_id"] == order["id"] and line["order_number"] == order["number"]
    assert line["external_id"] == "9501" and line["channel_id"] == channel["id"]
    assert line["request_id"] == request_id and line["outcome"] == "created"


async def test_events_claimed_but_never_started_are_not_charged_for_their_workers_death(
    client, make_org, settings, admin_engine
) -> None:
    """Found by the 30-minute chaos soak: with a worker killed every few seconds, the tails of long
    per-order chains were claimed again and again and died waiting for their turn; counted at the
    claim, they used up MAX_UNFINISHED and were dead-lettered untried. A run counts when it starts:
    claims that die before starting an event (here: claimed, never processed, lease run out) cost it
    nothing, and the event is applied with one attempt."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    event_id = (await send_shopify(client, channel, shopify_order(9_400, [("A", 1)]))).json()["event_id"]
    deps = Deps.build(settings, pool_size=2, max_overflow=2)
    try:
        for _ in range(MAX_UNFINISHED + 2):
            claimed = await Claimer(deps.inbox_batch).claim(deps)
            assert [str(c.id) for c in claimed] == [event_id]
            await expire_leases(admin_engine, event_id)  # its worker died before reaching it
        tally = await drain(deps, horizon=0)
    finally:
        await deps.close()
    assert tally == {"created": 1}
    status, attempts, _ = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("processed", 1)


async def test_a_batch_that_dies_mid_run_is_charged_to_its_events(
    client, make_org, settings, admin_engine, monkeypatch
) -> None:
    """A run that started is counted before its work: a worker that dies inside the batch (here the
    batch is cancelled, as by a SIGKILL's lost task) leaves one unfinished run on each of its events,
    so an event that kills every worker still ends after MAX_UNFINISHED."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    event_id = (await send_shopify(client, channel, shopify_order(9_401, [("A", 1)]))).json()["event_id"]

    async def dies(*_args: Any, **_kwargs: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(inbox_module, "apply_batch", dies)
    deps = Deps.build(settings, pool_size=2, max_overflow=2)
    try:
        claimed = await Claimer(deps.inbox_batch).claim(deps)
        with pytest.raises(asyncio.CancelledError):
            await process_claimed(deps, claimed)
    finally:
        await deps.close()
    status, attempts, _ = await event_row(admin_engine, event_id)
    assert (status, attempts) == ("pending", 1)


async def expire_leases(admin_engine, event_id: str) -> None:
    from sqlalchemy import text

    async with admin_engine.begin() as conn:
        await conn.execute(
            text("update webhook_events set next_attempt_at = now() where id = :e"), {"e": event_id}
        )
