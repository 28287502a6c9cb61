"""Webhook ingress's fast path (rappit.channels.ingest): the per-process channel cache never outlives a
secret rotation or a disable, the batched inbox write keeps dedup, tenancy and durability per request.

Each test runs its own app instances (each one is what one API process holds: its own cache, its own
batcher), so one process can rotate or disable while another serves deliveries."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rappit.app.factory import create_app
from rappit.channels.ingest import InboxWaker, InboxWriter, asyncpg_dsn, open_pool
from rappit.channels.webhooks import _new_event_id
from rappit.platform.logging import configure_logging
from tests.conftest import admin_scalar, client_for, start_app, stop_app
from tests.orders.helpers import send_shopify, shopify_channel, shopify_order


@asynccontextmanager
async def process(settings, *, linger: float = 0.0, batch_rows: int = 500) -> AsyncIterator[tuple[Any, Any]]:
    """One more API process: (app, client). `linger` holds each batch open that long, so concurrent
    requests are sure to share one (up to `batch_rows`, INGRESS_BATCH_ROWS: large by default here,
    so a test's whole burst fits one statement)."""
    app = create_app(dataclasses.replace(settings, ingress_batch_rows=batch_rows))
    await start_app(app)
    app.state.ingress.writer.batcher.linger = linger
    try:
        async with client_for(app) as c:
            yield app, c
    finally:
        await stop_app(app)


async def stored(admin_engine, channel: dict) -> int:
    return await admin_scalar(
        admin_engine, "select count(*) from webhook_events where channel_id = :c", c=channel["id"]
    )


async def test_a_rotated_secret_is_refused_by_every_process_at_once(
    client, make_org, settings, admin_engine
) -> None:
    """Process B has the channel cached with the old secret; A rotates it. The very next delivery
    signed with the old secret is refused by B (the storing statement finds the channel's version
    moved, B reloads it and checks again), and one signed with the new secret is accepted."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    async with process(settings) as (b_app, b):
        first = await send_shopify(b, channel, shopify_order(1, [("A", 1)]))
        assert first.status_code == 200 and first.json()["status"] == "accepted"
        loads = b_app.state.ingress.channels.loads
        rotated = await client.post(f"/api/v1/channels/{channel['id']}/rotate-secret", headers=org.headers)
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["webhook_secret"]
        old = await send_shopify(b, channel, shopify_order(2, [("A", 1)]))
        assert old.status_code == 401 and old.json()["error"]["code"] == "INVALID_SIGNATURE"
        assert b_app.state.ingress.channels.loads == loads + 1  # B reloaded the channel
        new = await send_shopify(b, channel, shopify_order(3, [("A", 1)]), secret=new_secret)
        assert new.status_code == 200 and new.json()["status"] == "accepted"
        assert await stored(admin_engine, channel) == 2

        # Disabled by A: B's cached entry says active, but nothing more is stored.
        await client.post(f"/api/v1/channels/{channel['id']}/disable", headers=org.headers)
        gone = await send_shopify(b, channel, shopify_order(4, [("A", 1)]), secret=new_secret)
        assert gone.status_code == 404
    assert await stored(admin_engine, channel) == 2


async def test_concurrent_deliveries_of_one_event_are_stored_once(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    payload = shopify_order(77, [("A", 1)])
    async with process(settings, linger=0.05) as (app, c):
        answers = await asyncio.gather(
            *[send_shopify(c, channel, payload, event_id="same-event") for _ in range(40)]
        )
        batcher = app.state.ingress.writer.batcher
        assert batcher.largest > 1  # duplicates met inside one statement, not only across batches
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 39
    assert await stored(admin_engine, channel) == 1


async def test_one_batch_of_several_orgs_stores_each_row_under_its_channels_org(
    client, make_org, settings, admin_engine
) -> None:
    orgs = [await make_org() for _ in range(3)]
    channels = [await shopify_channel(client, org) for org in orgs]
    async with process(settings, linger=0.05) as (app, c):
        before = app.state.ingress.writer.batcher.batches
        answers = await asyncio.gather(
            *[
                send_shopify(c, channels[i % 3], shopify_order(i, [("A", 1)]))
                for i in range(30)  # org A, B, C, A, B, C...
            ]
        )
        assert app.state.ingress.writer.batcher.batches - before == 1  # all in one statement
    assert all(a.status_code == 200 and a.json()["status"] == "accepted" for a in answers)
    for org, channel in zip(orgs, channels, strict=True):
        owners = await admin_scalar(
            admin_engine,
            "select array_agg(distinct org_id) from webhook_events where channel_id = :c",
            c=channel["id"],
        )
        assert owners == [org.id] and await stored(admin_engine, channel) == 10


async def test_the_app_role_reaches_another_org_only_through_the_channel(
    client, engine, make_org, admin_engine
) -> None:
    """As the app role with org A's context: a direct insert of org B's row is refused by RLS; the
    definer function stores a delivery for B's channel under B, whatever org the caller claims."""
    a, b = await make_org(), await make_org()
    b_channel = await shopify_channel(client, b)
    version = await admin_scalar(
        admin_engine, "select ingress_version from channels where id = :c", c=b_channel["id"]
    )
    with pytest.raises(DBAPIError, match="row-level security"):
        async with engine.begin() as conn:
            await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(a.id)})
            await conn.execute(
                text(
                    "insert into webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key,"
                    " payload, status, attempts) values (gen_random_uuid(), :b, :c, 't', 'd', 'k', '\\x00',"
                    " 'pending', 0)"
                ),
                {"b": b.id, "c": b_channel["id"]},
            )
    async with engine.begin() as conn:
        await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(a.id)})
        outcome = (
            await conn.execute(
                text(
                    "select outcome from rappit_webhook_ingest(array[cast(:c as uuid)],"
                    " array[cast(:v as bigint)], array[gen_random_uuid()], array['orders/create'],"
                    " array['d1'], array['event:d1'],"
                    " array['\\x7b7d'::bytea], array[null::timestamptz], array[null::text])"
                ),
                {"c": b_channel["id"], "v": version},
            )
        ).scalar_one()
    assert outcome == "accepted"
    owner = await admin_scalar(
        admin_engine, "select org_id from webhook_events where channel_id = :c", c=b_channel["id"]
    )
    assert owner == b.id


async def test_a_failed_batch_answers_503_to_every_request_and_stores_none(
    client, make_org, settings, admin_engine, monkeypatch
) -> None:
    """The statement fails after its insert ran (a division by zero on the third row it returns): the
    whole statement is rolled back, and each of the batch's requests hears 503, none 200."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    failing = (
        f"SELECT n, outcome FROM ({InboxWriter.SQL}) s WHERE 1 / (CASE WHEN n = 3 THEN 0 ELSE 1 END) = 1"
    )
    async with process(settings, linger=0.05) as (app, c):
        monkeypatch.setattr(app.state.ingress.writer, "SQL", failing)
        before = app.state.ingress.writer.batcher.batches
        answers = await asyncio.gather(
            *[send_shopify(c, channel, shopify_order(900 + i, [("A", 1)])) for i in range(10)]
        )
        assert app.state.ingress.writer.batcher.batches - before == 1
    assert [a.status_code for a in answers] == [503] * 10
    assert await stored(admin_engine, channel) == 0


async def test_the_200_is_sent_only_after_the_row_is_committed(
    client, make_org, settings, admin_engine
) -> None:
    """While another transaction blocks inserts into the inbox, the delivery gets no answer; the
    moment it is answered 200, its row is visible to any other connection."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    async with process(settings) as (_, c):
        async with admin_engine.connect() as blocker:
            trans = await blocker.begin()
            await blocker.execute(text("lock table webhook_events in share row exclusive mode"))
            sending = asyncio.create_task(send_shopify(c, channel, shopify_order(5, [("A", 1)])))
            await asyncio.sleep(0.5)
            assert not sending.done()
            await trans.commit()
        answer = await sending
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        event_id = answer.json()["event_id"]
        assert (
            await admin_scalar(admin_engine, "select count(*) from webhook_events where id = :e", e=event_id)
            == 1
        )
        # And for many at once: each 200 names a row that is already there when the answer arrives.

        async def send_then_look(i: int) -> int:
            answer = await send_shopify(c, channel, shopify_order(600 + i, [("A", 1)]))
            assert answer.status_code == 200
            return int(
                await admin_scalar(
                    admin_engine,
                    "select count(*) from webhook_events where id = :e",
                    e=answer.json()["event_id"],
                )
            )

        assert await asyncio.gather(*[send_then_look(i) for i in range(30)]) == [1] * 30


async def test_a_connection_lost_after_the_commit_still_answers_200_and_a_lookup_failure_is_503(
    client, make_org, settings, admin_engine, monkeypatch
) -> None:
    """Found by the chaos soak (a PostgreSQL restart): returning the connection to the pool raised
    asyncpg's InternalClientError after the batch had committed, and the request got a 500. The
    statement's outcome stands (200, the row is there); a channel look-up that meets a database
    going down is a 503, never a 500."""
    import asyncpg.pool

    org = await make_org()
    channel = await shopify_channel(client, org)
    pool_class = asyncpg.pool.Pool  # slotted: patched on the class (only raw asyncpg pools use it)
    real_release = pool_class.release

    async def broken_release(self, conn, *args, **kwargs):
        await real_release(self, conn, *args, **kwargs)
        raise asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress")

    async def down(self, *args, **kwargs):
        raise asyncpg.CannotConnectNowError("the database system is shutting down")

    async with process(settings) as (app, c):
        warm = await send_shopify(c, channel, shopify_order(76, [("A", 1)]))  # the channel is cached
        assert warm.status_code == 200, warm.text
        monkeypatch.setattr(pool_class, "release", broken_release)
        answer = await send_shopify(c, channel, shopify_order(77, [("A", 1)]))
        monkeypatch.setattr(pool_class, "release", real_release)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        assert await stored(admin_engine, channel) == 2

        app.state.ingress.channels.forget(uuid.UUID(channel["id"]))
        monkeypatch.setattr(pool_class, "fetchrow", down)
        refused = await send_shopify(c, channel, shopify_order(78, [("A", 1)]))
        monkeypatch.undo()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "DEPENDENCY_UNAVAILABLE"


async def test_a_delivery_is_served_before_litestars_stack_with_its_request_id_log_line_and_metric(
    client, make_org, monkeypatch
) -> None:
    """`POST /webhooks/{type}/{uuid}` never enters Litestar (its middleware stack is the cost the fast
    path cuts), yet echoes the caller's request id, logs the access line with the org and the status,
    and counts its latency; any other shape of path is Litestar's to route (here a 404 envelope)."""
    reached: list[str] = []
    litestar_call = Litestar.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await litestar_call(self, scope, receive, send)

    monkeypatch.setattr(Litestar, "__call__", spy)
    org = await make_org()
    channel = await shopify_channel(client, org)
    reached.clear()
    served = webhook_seconds(200)
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        resp = await send_shopify(
            client, channel, shopify_order(9_001, [("A", 1)]), headers={"X-Request-ID": "flash-sale-7"}
        )
        not_a_uuid = await client.post("/webhooks/shopify/not-a-uuid", content=b"{}")
    finally:
        configure_logging("INFO", json=True)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "accepted", "event_id": resp.json()["event_id"]}
    assert resp.headers["x-request-id"] == "flash-sale-7"
    assert resp.headers["content-type"] == "application/json"
    assert not_a_uuid.status_code == 404 and not_a_uuid.json()["error"]["code"] == "NOT_FOUND"
    assert reached == ["/webhooks/shopify/not-a-uuid"]  # the delivery itself never reached Litestar
    assert webhook_seconds(200) == served + 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["event"] == "http.request" and line["status"] == 200]
    assert len(access) == 1 and access[0]["request_id"] == "flash-sale-7"
    assert access[0]["org_id"] == str(org.id) and access[0]["path"] == f"/webhooks/shopify/{channel['id']}"


async def test_fast_path_errors_use_the_one_envelope_and_oversized_bodies_are_not_read_whole(
    client, make_org, admin_engine, settings
) -> None:
    """Errors on the fast path render through the app's exception handlers (the envelope, its request
    id, Retry-After on a 503); a body past MAX_WEBHOOK_BYTES is refused as soon as it passes the limit
    and counts against the sender's address like any refused delivery."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    bad = await send_shopify(client, channel, shopify_order(9_002, [("A", 1)]), secret="not the secret")
    assert bad.status_code == 401
    error = bad.json()["error"]
    assert error["code"] == "INVALID_SIGNATURE" and error["request_id"] == bad.headers["x-request-id"]

    chunks_read = 0
    limit = settings.max_webhook_bytes

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(4):  # four chunks of the whole limit: the second one passes it
            chunks_read += 1
            yield b"x" * limit

    big = await client.post(f"/webhooks/shopify/{channel['id']}", content=body())
    assert big.status_code == 413 and big.json()["error"]["details"] == {"limit": limit}
    assert chunks_read <= 3  # httpx may have sent one more chunk than the app read
    assert await stored(admin_engine, channel) == 0


async def test_a_client_gone_before_its_body_is_answered_nothing_and_stores_nothing(
    app, make_org, client, admin_engine
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": f"/webhooks/shopify/{channel['id']}", "raw_path": b"", "query_string": b"",
        "root_path": "", "headers": [], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent == [] and await stored(admin_engine, channel) == 0


def webhook_seconds(status: int) -> float:
    value = REGISTRY.get_sample_value("rappit_webhook_request_seconds_count", {"status": str(status)})
    return value or 0.0


@asynccontextmanager
async def listening(settings) -> AsyncIterator[list[str]]:
    """The NOTIFYs on `rappit_inbox` while inside, as the workers' claim loops LISTEN for them."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    heard: list[str] = []
    await conn.add_listener("rappit_inbox", lambda *args: heard.append(args[3]))
    try:
        yield heard
    finally:
        await conn.close()


async def until(condition: Any, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_storing_deliveries_notifies_the_workers_only_after_the_commit(
    client, make_org, settings, admin_engine
) -> None:
    """The insert's own transaction NOTIFYs nobody (a NOTIFY there would hold PostgreSQL's
    database-wide NOTIFY lock until the commit is flushed, and every ingress batch would commit alone,
    migration 0018); the waker's NOTIFY, in a transaction of its own after the commit, wakes them."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    async with process(settings) as (app, c), listening(settings) as heard:
        writer = app.state.ingress.writer
        waker, writer.waker = writer.waker, None
        quiet = await send_shopify(c, channel, shopify_order(8_001, [("A", 1)]))
        assert quiet.status_code == 200 and quiet.json()["status"] == "accepted"
        await asyncio.sleep(0.5)
        assert heard == []  # stored, committed, and the insert woke nobody
        writer.waker = waker
        woken = await send_shopify(c, channel, shopify_order(8_002, [("A", 1)]), event_id="ev-8002")
        assert woken.status_code == 200 and woken.json()["status"] == "accepted"
        assert await until(lambda: len(heard) >= 1)
        duplicate = await send_shopify(c, channel, shopify_order(8_002, [("A", 1)]), event_id="ev-8002")
        assert duplicate.json()["status"] == "duplicate"
        await asyncio.sleep(0.3)
        assert len(heard) == 1  # a batch that stored nothing new wakes nobody
    assert await stored(admin_engine, channel) == 2


class HeldPool:
    """A pool whose statements wait until released: a NOTIFY held in flight."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.entered, self.release = pool, asyncio.Event(), asyncio.Event()

    async def execute(self, sql: str) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self.pool.execute(sql)


async def test_wakes_asked_for_while_one_is_in_flight_cost_one_more_notify(settings) -> None:
    """Wakes asked for before a NOTIFY is sent are covered by it (the rows they announce were
    committed before it); those asked for while it is in flight cause exactly one more."""
    pool = await open_pool(settings, size=2)
    try:
        async with listening(settings) as heard:
            waker = InboxWaker(pool)
            for _ in range(50):  # a burst of stored batches before the NOTIFY's statement starts
                waker.wake()
            await waker.close()
            assert waker.sent == 1 and await until(lambda: len(heard) == 1)

            held = HeldPool(pool)
            waker = InboxWaker(held)  # type: ignore[arg-type]
            waker.wake()
            await held.entered.wait()  # its NOTIFY is in flight
            for _ in range(49):
                waker.wake()
            held.release.set()
            await waker.close()
            assert waker.sent == 2 and await until(lambda: len(heard) == 3)
            waker.wake()  # idle again: a wake sends at once
            await waker.close()
            assert waker.sent == 3 and await until(lambda: len(heard) == 4)
    finally:
        await pool.close()


async def test_a_burst_is_stored_in_batches_of_at_most_ingress_batch_rows(
    client, make_org, settings, admin_engine
) -> None:
    """Twenty deliveries gathered together: each statement takes at most INGRESS_BATCH_ROWS of them,
    and every one is stored and answered."""
    org = await make_org()
    channel = await shopify_channel(client, org)
    async with process(settings, linger=0.05, batch_rows=3) as (app, c):
        batcher = app.state.ingress.writer.batcher
        answers = await asyncio.gather(
            *[send_shopify(c, channel, shopify_order(8_100 + i, [("A", 1)])) for i in range(20)]
        )
        assert batcher.largest == 3 and batcher.batches >= 7
    assert all(a.status_code == 200 and a.json()["status"] == "accepted" for a in answers)
    assert await stored(admin_engine, channel) == 20


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = {_new_event_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    for text_id in ids:
        parsed = uuid.UUID(text_id)
        assert str(parsed) == text_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122
