"""Back to the channel: a shipment handed over is pushed to its order's sales channel (Shopify's fake
Admin API, WooCommerce's fake REST API) by a real arq worker, retried, dead-lettered, never twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from arq.connections import ArqRedis

from rappit.integrations.channels.signatures import sign
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.integrations.sandboxes.shopify import FakeShopify
from rappit.integrations.sandboxes.woocommerce import FakeWooCommerce
from rappit.platform.db import provide_session
from rappit.shipping import fulfillment
from rappit.shipping.service import get_shipment
from rappit.tenancy.context import Actor, org_context
from rappit.workers.context import Deps
from rappit.workers.fulfillment import MAX_ATTEMPTS, sweep_pending_pushes
from tests.conftest import admin_scalar
from tests.inventory.helpers import setup_stock
from tests.orders import helpers as orders_helpers
from tests.orders.helpers import send_shopify, shopify_channel, shopify_order
from tests.shipping.conftest import add_account, shipment_body
from tests.shipping.helpers import fedex_event, send_callback

TOKEN = "shpat_fulfil_token"


@pytest.fixture
def fake_shopify() -> Iterator[FakeShopify]:
    fake = FakeShopify(TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_woo() -> Iterator[FakeWooCommerce]:
    fake = FakeWooCommerce().start()
    yield fake
    fake.stop()


async def run_worker(
    settings: Any, fake_shopify: FakeShopify | None = None, *, max_seconds: float = 60
) -> None:
    """The orders tests' burst worker, short push backoffs, pointed at the fake Admin API."""
    if fake_shopify is not None:
        settings = dataclasses.replace(settings, shopify_admin_url=fake_shopify.url)
    await orders_helpers.run_worker(
        settings, max_seconds=max_seconds, webhook_backoff=(0.1,), fulfillment_backoff=(0.1, 0.2)
    )


async def shopify_order_in_rappit(
    client: Any, org: Any, settings: Any, fake: FakeShopify, order_id: int, lines: list[tuple[str, int]]
) -> tuple[dict, dict]:
    """A Shopify order, known to the fake Admin API and ingested by Rappit (stock reserved)."""
    await setup_stock(client, org, {(sku, "WH1"): 10 for sku, _ in lines})
    channel = await shopify_channel(client, org, warehouse="WH1", api_token=TOKEN)
    payload = shopify_order(order_id, list(lines))
    fake.put_order(payload)
    assert (await send_shopify(client, channel, payload)).status_code == 200
    await run_worker(settings)
    [order] = (
        await client.get("/api/v1/orders", params={"channel_id": channel["id"]}, headers=org.headers)
    ).json()["items"]
    assert order["status"] == "open", order
    return channel, order


async def buy_label(
    client: Any, org: Any, order_id: str, account_id: str, lines: list[tuple[str, int]]
) -> dict:
    body = shipment_body(order_id, account_id, lines=[{"sku": s, "quantity": q} for s, q in lines])
    resp = await client.post("/api/v1/shipments", json=body, headers=org.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def ship(client: Any, org: Any, shipment: dict) -> Any:
    return await client.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)


async def push_row(admin_engine: Any, shipment_id: str) -> dict:
    async with admin_engine.connect() as conn:
        from sqlalchemy import text

        row = (
            (
                await conn.execute(
                    text("select * from fulfillment_pushes where shipment_id = :s"),
                    {"s": uuid.UUID(shipment_id)},
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def kinds(client: Any, org: Any, order_id: str, shipment_id: str) -> tuple[list[str], list[str]]:
    """(order timeline kinds, shipment timeline kinds) of the push's events, oldest first."""
    order = (await client.get(f"/api/v1/orders/{order_id}", headers=org.headers)).json()
    shipment = (await client.get(f"/api/v1/shipments/{shipment_id}", headers=org.headers)).json()
    return (
        [e["kind"] for e in order["timeline"] if e["kind"].startswith("fulfillment_")],
        [e["kind"] for e in shipment["timeline"] if e["kind"].startswith("fulfillment_")],
    )


async def test_shipping_a_shopify_order_fulfils_only_its_lines_on_their_fulfillment_order_with_tracking(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, order = await shopify_order_in_rappit(
        client, org, settings, fake_shopify, 7001, [("MUG", 2), ("TEE", 1)]
    )
    # The shop keeps the TEE at another location: its own fulfillment order.
    tee_fo = fake_shopify.split_fulfillment_order(7001, [700101], location_id=2)
    [mug_fo] = [fo for fo in fake_shopify.fulfillment_orders["7001"] if fo["id"] != tee_fo]
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    first = await buy_label(client, org, order["id"], account["id"], [("MUG", 2)])
    assert (await ship(client, org, first)).status_code == 200
    await run_worker(settings, fake_shopify)

    number = first["tracking_numbers"][0]
    [body] = fake_shopify.fulfillment_bodies
    assert body["fulfillment"]["line_items_by_fulfillment_order"] == [
        {
            "fulfillment_order_id": mug_fo["id"],
            "fulfillment_order_line_items": [{"id": mug_fo["line_items"][0]["id"], "quantity": 2}],
        }
    ]
    tracking = body["fulfillment"]["tracking_info"]
    assert tracking["number"] == number and tracking["company"] == "FedEx"
    assert tracking["url"] == f"https://www.fedex.com/fedextrack/?trknbr={number}"
    [made] = fake_shopify.fulfillments["7001"]
    assert made["line_items"] == [{"id": 700100, "quantity": 2}] and made["tracking_numbers"] == [number]
    tee_left = fake_shopify.fulfillment_orders["7001"][1]["line_items"][0]["fulfillable_quantity"]
    assert tee_left == 1  # the partial shipment left the other line alone
    push = await push_row(admin_engine, first["id"])
    assert (push["status"], push["attempts"], push["external_ref"]) == ("pushed", 1, str(made["id"]))
    order_kinds, shipment_kinds = await kinds(client, org, order["id"], first["id"])
    assert order_kinds == shipment_kinds == ["fulfillment_push_queued", "fulfillment_pushed"]

    second = await buy_label(client, org, order["id"], account["id"], [("TEE", 1)])
    assert (await ship(client, org, second)).status_code == 200
    await run_worker(settings, fake_shopify)
    groups = fake_shopify.fulfillment_bodies[1]["fulfillment"]["line_items_by_fulfillment_order"]
    assert [g["fulfillment_order_id"] for g in groups] == [tee_fo]
    assert [fo["status"] for fo in fake_shopify.fulfillment_orders["7001"]] == ["closed", "closed"]


async def test_shipping_a_woocommerce_order_completes_it_with_a_tracking_note_once(
    client, make_org, settings, admin_engine, fake_woo: FakeWooCommerce, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("MUG", "WH1"): 10})
    made = await client.post(
        "/api/v1/channels",
        json={
            "type": "woocommerce",
            "name": "Woo",
            "address": fake_woo.url,
            "api_access_token": "ck_test:cs_test",
            "warehouse_code": "WH1",
        },
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    cid, secret = made.json()["channel"]["id"], made.json()["webhook_secret"]
    woo_order = {
        "id": 501,
        "number": "501",
        "currency": "EUR",
        "status": "processing",
        "date_modified_gmt": "2026-11-01T10:00:00",
        "line_items": [{"id": 1, "sku": "MUG", "name": "Mug", "quantity": 2, "price": 9.5}],
    }
    raw = json.dumps(woo_order).encode()
    headers = {
        "X-WC-Webhook-Signature": sign(secret, raw),
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Delivery-ID": "42",
        "content-type": "application/json",
    }
    assert (
        await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)
    ).status_code == 200
    await run_worker(settings)
    [order] = (await client.get("/api/v1/orders", headers=org.headers)).json()["items"]
    fake_woo.put_order(501)
    fake_woo.drop_after_note = 1  # the note is added, its answer lost: the retry must not add another
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 2)])
    assert (await ship(client, org, shipment)).status_code == 200
    await run_worker(settings)

    number = shipment["tracking_numbers"][0]
    assert fake_woo.orders["501"]["status"] == "completed"
    [note] = fake_woo.notes["501"]
    assert number in note["note"] and "FedEx" in note["note"] and note["customer_note"] is True
    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"], push["external_ref"]) == ("pushed", 2, str(note["id"]))
    order_kinds, _ = await kinds(client, org, order["id"], shipment["id"])
    assert order_kinds == ["fulfillment_push_queued", "fulfillment_push_attempt_failed", "fulfillment_pushed"]


async def test_a_push_the_channel_answers_5xx_is_retried_with_backoff_then_succeeds(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7101, [("MUG", 1)])
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 1)])
    fake_shopify.faults.server_error = 2
    assert (await ship(client, org, shipment)).status_code == 200
    await run_worker(settings, fake_shopify)

    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"], push["last_error"]) == ("pushed", 3, None)
    assert len(fake_shopify.fulfillments["7101"]) == 1
    order_kinds, shipment_kinds = await kinds(client, org, order["id"], shipment["id"])
    expected = ["fulfillment_push_queued"] + ["fulfillment_push_attempt_failed"] * 2 + ["fulfillment_pushed"]
    assert order_kinds == shipment_kinds == expected
    detail = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()["timeline"]
    failed = [e["detail"] for e in detail if e["kind"] == "fulfillment_push_attempt_failed"]
    assert [f["attempt"] for f in failed] == [1, 2] and "ChannelUnavailable" in failed[0]["error"]


async def test_a_push_that_keeps_failing_dead_letters_and_the_operator_retry_delivers_it(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7201, [("MUG", 1)])
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 1)])
    fake_shopify.faults.server_error = -1
    assert (await ship(client, org, shipment)).status_code == 200
    await run_worker(settings, fake_shopify)

    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"]) == ("failed", MAX_ATTEMPTS)
    [dead] = (await client.get("/api/v1/jobs/dead", headers=org.headers)).json()
    assert dead["kind"] == "fulfillment_push" and dead["ref_id"] == str(push["id"])
    assert dead["attempts"] == MAX_ATTEMPTS and "500" in dead["error"]
    assert dead["payload"]["tracking_number"] == shipment["tracking_numbers"][0]
    assert "7201" not in fake_shopify.fulfillments

    fake_shopify.faults.server_error = 0
    retried = await client.post(f"/api/v1/jobs/dead/{dead['id']}/retry", headers=org.headers)
    assert retried.status_code == 200 and retried.json()["status"] == "retried"
    await run_worker(settings, fake_shopify)  # the retry route enqueued the job after its commit
    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"]) == ("pushed", 1)
    assert len(fake_shopify.fulfillments["7201"]) == 1
    order_kinds, _ = await kinds(client, org, order["id"], shipment["id"])
    assert order_kinds[-3:] == ["fulfillment_push_failed", "fulfillment_push_retried", "fulfillment_pushed"]


async def test_a_retry_after_the_channel_took_the_push_but_the_answer_was_lost_creates_no_second(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    """Shopify created the fulfillment and the answer never arrived: the retry finds it by its
    tracking number instead of creating another (the guard: the existing-fulfillment look-up)."""
    org = await make_org()
    _, order = await shopify_order_in_rappit(
        client, org, settings, fake_shopify, 7301, [("MUG", 1), ("TEE", 1)]
    )
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 1)])
    fake_shopify.drop_after_fulfil = 1
    assert (await ship(client, org, shipment)).status_code == 200
    await run_worker(settings, fake_shopify)

    assert len(fake_shopify.fulfillment_bodies) == 1 and len(fake_shopify.fulfillments["7301"]) == 1
    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"]) == ("pushed", 2)
    assert push["external_ref"] == str(fake_shopify.fulfillments["7301"][0]["id"])
    timeline = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()["timeline"]
    [pushed] = [e["detail"] for e in timeline if e["kind"] == "fulfillment_pushed"]
    assert pushed["already_at_channel"] is True and pushed["attempt"] == 2


async def test_two_concurrent_hand_overs_make_one_push_and_one_fulfillment(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7401, [("MUG", 3)])
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 3)])
    answers = await asyncio.gather(*[ship(client, org, shipment) for _ in range(6)])
    assert sorted(a.status_code for a in answers) == [200] + [409] * 5
    await run_worker(settings, fake_shopify)
    count = await admin_scalar(
        admin_engine,
        "select count(*) from fulfillment_pushes where shipment_id = :s",
        s=uuid.UUID(shipment["id"]),
    )
    assert count == 1
    assert len(fake_shopify.fulfillments["7401"]) == 1 and len(fake_shopify.fulfillment_bodies) == 1


async def test_one_push_per_shipment_is_the_databases_rule(
    client, make_org, settings, sessionmaker, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    """A second hand-over record of the same shipment (another path into record_push) adds no push:
    the UNIQUE (org_id, shipment_id) constraint, not the code, says so."""
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7501, [("MUG", 1)])
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 1)])
    assert (await ship(client, org, shipment)).status_code == 200
    with org_context(org.id, Actor(kind="system", id="test")):
        async with provide_session(sessionmaker) as session:
            again = await fulfillment.record_push(
                session, await get_shipment(session, uuid.UUID(shipment["id"]))
            )
    assert again is None
    count = await admin_scalar(
        admin_engine,
        "select count(*) from fulfillment_pushes where shipment_id = :s",
        s=uuid.UUID(shipment["id"]),
    )
    assert count == 1


async def test_the_sweeper_enqueues_a_push_whose_job_redis_lost(
    client, make_org, settings, redis, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7601, [("MUG", 1)])
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    shipment = await buy_label(client, org, order["id"], account["id"], [("MUG", 1)])
    assert (await ship(client, org, shipment)).status_code == 200
    await redis.flushdb()  # the queued job is gone
    await run_worker(settings, fake_shopify)
    assert (await push_row(admin_engine, shipment["id"]))["status"] == "pending"
    deps = Deps.build(settings, pool_size=2, max_overflow=0, sweep_grace_seconds=0.0)
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        assert await sweep_pending_pushes({"deps": deps, "redis": arq}) >= 1
        assert await sweep_pending_pushes({"deps": deps, "redis": arq}) == 0  # queued already: not twice
    finally:
        await arq.aclose()
        await deps.close()
    await run_worker(settings, fake_shopify)
    assert (await push_row(admin_engine, shipment["id"]))["status"] == "pushed"
    assert len(fake_shopify.fulfillments["7601"]) == 1


async def test_a_carrier_in_transit_callback_pushes_the_fulfillment_to_shopify(
    client, make_org, settings, admin_engine, fake_shopify: FakeShopify, fake_fedex: FakeFedEx
) -> None:
    """The hand-over by carrier callback (not the API) writes the push and its job enqueues it at once."""
    org = await make_org()
    _, order = await shopify_order_in_rappit(client, org, settings, fake_shopify, 7101, [("MUG", 1)])
    made = await add_account(client, org, "fedex", fake_fedex.url)
    shipment = await buy_label(client, org, order["id"], made["account"]["id"], [("MUG", 1)])
    number = shipment["tracking_numbers"][0]
    event = fedex_event(number, "PU", event_id="fx-push-1")
    sent = await send_callback(client, made["account"]["id"], made["callback_secret"], event)
    assert sent.status_code == 200, sent.text
    await run_worker(settings, fake_shopify)

    [body] = fake_shopify.fulfillment_bodies
    assert body["fulfillment"]["tracking_info"]["number"] == number
    push = await push_row(admin_engine, shipment["id"])
    assert (push["status"], push["attempts"]) == ("pushed", 1)
