"""Channel webhooks to orders, exactly once, with a real arq worker and real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid

from rappit.platform.settings import Settings
from tests.conftest import admin_scalar
from tests.inventory.helpers import assert_inventory_consistent, setup_stock
from tests.orders.helpers import SECRET, run_worker, send_shopify, shopify_channel, shopify_order


async def orders_of(client, org) -> list[dict]:
    return (await client.get("/api/v1/orders", params={"limit": 200}, headers=org.headers)).json()["items"]


async def reserved(client, org, sku: str) -> int:
    items = (await client.get("/api/v1/inventory", params={"sku": sku}, headers=org.headers)).json()["items"]
    return sum(i["reserved"] for i in items)


async def test_duplicate_delivery_creates_one_order(client, make_org, settings, admin_engine) -> None:
    org = await make_org()
    await setup_stock(client, org, {("TENT", "W1"): 50})
    channel = await shopify_channel(client, org)
    payload = shopify_order(1001, [("TENT", 2)])
    for _ in range(5):  # the same delivery, five times in a row
        assert (await send_shopify(client, channel, payload, event_id="evt-1")).status_code == 200
    same = await asyncio.gather(
        *[send_shopify(client, channel, payload, event_id="evt-1") for _ in range(20)]
    )
    assert all(r.status_code == 200 for r in same)
    # The same order again under five other delivery ids (Shopify retries with new ids too).
    for i in range(5):
        assert (await send_shopify(client, channel, payload, event_id=f"evt-other-{i}")).status_code == 200
    events = await admin_scalar(
        admin_engine, "select count(*) from webhook_events where org_id = :o", o=org.id
    )
    assert events == 6
    await run_worker(settings)
    orders = await orders_of(client, org)
    assert (
        len(orders) == 1
        and orders[0]["status"] == "open"
        and orders[0]["number"].startswith(f"{org.code}-S-")
    )
    assert await reserved(client, org, "TENT") == 2
    await assert_inventory_consistent(admin_engine, org.id)
    detail = (await client.get(f"/api/v1/orders/{orders[0]['id']}", headers=org.headers)).json()
    assert [r["quantity"] for r in detail["reservations"]] == [2]
    assert [e["kind"] for e in detail["timeline"]][:2] == ["created", "reserved"]
    statuses = (await client.get(f"/api/v1/channels/{channel['id']}/events", headers=org.headers)).json()
    assert sorted(e["status"] for e in statuses) == ["processed"] * 6


async def test_forged_or_unsigned_deliveries_are_401_and_store_nothing(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    payload = shopify_order(7, [("X", 1)])
    raw = json.dumps(payload).encode()
    tampered = await send_shopify(client, channel, payload, body=raw, headers={"X-Shopify-Hmac-Sha256": None})
    assert tampered.status_code == 401  # missing header
    bad_secret = await send_shopify(client, channel, payload, secret="not-the-secret")
    assert bad_secret.status_code == 401 and bad_secret.json()["error"]["code"] == "INVALID_SIGNATURE"
    from rappit.integrations.channels.signatures import sign

    forged = await send_shopify(
        client,
        channel,
        payload,
        body=raw.replace(b'"X"', b'"Y"'),
        headers={"X-Shopify-Hmac-Sha256": sign(SECRET, raw)},
    )
    assert forged.status_code == 401
    wrong_shop = await send_shopify(
        client, channel, payload, headers={"X-Shopify-Shop-Domain": "evil.myshopify.com"}
    )
    assert wrong_shop.status_code == 401 and wrong_shop.json()["error"]["code"] == "SHOP_MISMATCH"
    unknown = await client.post("/webhooks/shopify/00000000-0000-0000-0000-000000000000", content=raw)
    assert unknown.status_code == 404
    assert (
        await admin_scalar(admin_engine, "select count(*) from webhook_events where org_id = :o", o=org.id)
        == 0
    )
    await client.post(f"/api/v1/channels/{channel['id']}/disable", headers=org.headers)
    assert (await send_shopify(client, channel, payload)).status_code == 404


async def test_oversized_body_is_413(client, make_org, settings) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    big = b"{" + b" " * (settings.max_webhook_bytes + 1) + b"}"
    assert (await send_shopify(client, channel, None, body=big)).status_code == 413


async def test_edits_up_down_removal_stale_update_and_cancel(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 20, ("B", "W1"): 20})
    channel = await shopify_channel(client, org)

    async def deliver(payload, topic="orders/updated"):
        assert (await send_shopify(client, channel, payload, topic=topic)).status_code == 200
        await run_worker(settings)

    await deliver(shopify_order(55, [("A", 2), ("B", 1), (None, 1), ("A", 1)]), topic="orders/create")
    assert (await reserved(client, org, "A"), await reserved(client, org, "B")) == (
        3,
        1,
    )  # repeated SKU summed
    await deliver(shopify_order(55, [("A", 5), ("B", 1)], minutes=1))  # up
    assert (await reserved(client, org, "A"), await reserved(client, org, "B")) == (5, 1)
    await deliver(shopify_order(55, [("A", 1), ("B", 1)], minutes=2))  # down
    assert await reserved(client, org, "A") == 1
    await deliver(shopify_order(55, [("A", 1)], minutes=3))  # line removed
    assert (await reserved(client, org, "A"), await reserved(client, org, "B")) == (1, 0)
    await deliver(shopify_order(55, [("A", 9), ("B", 9)], minutes=2))  # older than what we have: ignored
    assert (await reserved(client, org, "A"), await reserved(client, org, "B")) == (1, 0)
    await deliver(shopify_order(55, [("A", 1)], minutes=4, cancelled=True), topic="orders/cancelled")
    assert (await reserved(client, org, "A"), await reserved(client, org, "B")) == (0, 0)
    order = (await orders_of(client, org))[0]
    assert order["status"] == "cancelled"
    kinds = [
        e["kind"]
        for e in (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()["timeline"]
    ]
    assert "ignored_stale" in kinds and kinds[-1] == "cancelled"
    await assert_inventory_consistent(admin_engine, org.id)


async def test_a_cancel_overtaking_an_update_leaves_the_lines_the_cancel_carries(
    client, make_org, settings
) -> None:
    """Found by the chaos soak (seed 7): an update's job was killed, the cancel sent after it was
    applied first, and the update then arrived after the cancel and was ignored; the cancelled order
    kept the lines of the version before the update, not the ones the channel last sent."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    await send_shopify(client, channel, shopify_order(88, [("A", 3)]), topic="orders/create")
    await run_worker(settings)
    cancel = shopify_order(88, [("A", 1)], minutes=4, cancelled=True)
    await send_shopify(client, channel, cancel, topic="orders/cancelled")
    await run_worker(settings)
    await send_shopify(client, channel, shopify_order(88, [("A", 1)], minutes=2), topic="orders/updated")
    await run_worker(settings)  # the overtaken update: ignored after the cancel
    order = (await orders_of(client, org))[0]
    detail = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()
    assert detail["order"]["status"] == "cancelled"
    assert [(ln["sku"], ln["quantity"]) for ln in detail["lines"]] == [("A", 1)]
    assert await reserved(client, org, "A") == 0


async def test_update_before_create_creates_and_late_create_is_a_noop(client, make_org, settings) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    channel = await shopify_channel(client, org)
    await send_shopify(client, channel, shopify_order(77, [("A", 2)], minutes=5), topic="orders/updated")
    await run_worker(settings)  # the update is applied first: it creates the order
    await send_shopify(client, channel, shopify_order(77, [("A", 1)], minutes=0), topic="orders/create")
    await run_worker(settings)  # then the older create arrives
    orders = await orders_of(client, org)
    assert len(orders) == 1 and await reserved(client, org, "A") == 2
    detail = (await client.get(f"/api/v1/orders/{orders[0]['id']}", headers=org.headers)).json()
    assert [e["kind"] for e in detail["timeline"]][-1] == "ignored_stale"


async def test_short_stock_puts_the_order_on_hold_and_a_receipt_lets_it_retry(
    client, make_org, settings
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 1, ("B", "W1"): 0})
    channel = await shopify_channel(client, org)
    await send_shopify(client, channel, shopify_order(88, [("A", 3), ("B", 1), ("NEW", 1)]))
    await run_worker(settings)
    order = (await orders_of(client, org))[0]
    assert order["status"] == "on_hold"
    assert order["hold_reason"]["code"] in ("INSUFFICIENT_STOCK", "UNKNOWN_CODES")
    await client.post("/api/v1/skus", json={"code": "NEW"}, headers=org.headers)
    for sku in ("A", "B", "NEW"):
        await client.post(
            "/api/v1/inventory/adjust",
            json={"sku": sku, "warehouse_code": "W1", "quantity": 5, "reason": "receive"},
            headers=org.headers,
        )
    retried = await client.post(f"/api/v1/orders/{order['id']}/retry-reservation", headers=org.headers)
    assert retried.status_code == 200 and retried.json()["order"]["status"] == "open"
    assert sorted(
        (r["sku"], r["quantity"]) for r in retried.json()["reservations"] if r["status"] == "active"
    ) == [("A", 3), ("B", 1), ("NEW", 1)]


async def test_two_hundred_concurrent_orders_get_distinct_well_formed_numbers(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 1000})
    body = {"currency": "USD", "lines": [{"sku": "A", "quantity": 1}]}
    responses = await asyncio.gather(
        *[client.post("/api/v1/orders", json=body, headers=org.headers) for _ in range(200)]
    )
    assert all(r.status_code == 201 for r in responses), {r.status_code for r in responses}
    numbers = [r.json()["order"]["number"] for r in responses]
    assert len(set(numbers)) == 200
    assert sorted(numbers) == [f"{org.code}-M-{n:06d}" for n in range(1, 201)]


async def test_poison_event_dead_letters_after_three_tries_and_retries_after_the_fix(
    client, make_org, settings, admin_engine
) -> None:
    from rappit.integrations.sandboxes.shopify import FakeShopify

    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)  # no Admin API token: orders/edited cannot be applied
    good = shopify_order(99, [("A", 1)])
    await send_shopify(client, channel, good)
    edit = {
        "order_edit": {
            "id": 1,
            "order_id": 99,
            "line_items": {"additions": [{"id": 9901, "delta": 2}], "removals": []},
        }
    }
    await send_shopify(client, channel, edit, topic="orders/edited")
    await run_worker(settings)
    dead = (await client.get("/api/v1/jobs/dead", headers=org.headers)).json()
    assert len(dead) == 1 and dead[0]["attempts"] == 3 and "Admin API credentials" in dead[0]["error"]
    assert len(await orders_of(client, org)) == 1  # the poison event blocked nothing
    fake = FakeShopify("shpat_sandbox_token").start()
    try:
        fake.put_order(shopify_order(99, [("A", 3)], minutes=10))
        fixed = await client.post(
            f"/api/v1/channels/{channel['id']}/settings",
            json={"api_access_token": "shpat_sandbox_token"},
            headers=org.headers,
        )
        assert fixed.status_code == 200
        import dataclasses

        sandboxed = dataclasses.replace(settings, shopify_admin_url=fake.url)
        viewer = (
            await client.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}, headers=org.headers)
        ).json()
        denied = await client.post(
            f"/api/v1/jobs/dead/{dead[0]['id']}/retry", headers={"Authorization": f"Bearer {viewer['token']}"}
        )
        assert denied.status_code == 403
        retried = await client.post(f"/api/v1/jobs/dead/{dead[0]['id']}/retry", headers=org.headers)
        assert retried.status_code == 200 and retried.json()["status"] == "retried"
        await run_worker(sandboxed)
    finally:
        fake.stop()
    assert any("/orders/99.json" in path for path in fake.paths)
    assert await reserved(client, org, "A") == 3
    events = (await client.get(f"/api/v1/channels/{channel['id']}/events", headers=org.headers)).json()
    assert sorted(e["status"] for e in events) == ["processed", "processed"]
    await assert_inventory_consistent(admin_engine, org.id)


async def test_woocommerce_ping_signature_and_dedup(client, make_org, settings, admin_engine) -> None:
    from rappit.integrations.channels.signatures import sign

    org = await make_org()
    await setup_stock(client, org, {("MUG", "W1"): 10})
    made = (
        await client.post(
            "/api/v1/channels",
            json={"type": "woocommerce", "name": "Woo", "address": "https://woo.example.test"},
            headers=org.headers,
        )
    ).json()
    cid, secret = made["channel"]["id"], made["webhook_secret"]
    ping = await client.post(
        f"/webhooks/woocommerce/{cid}",
        content=b"webhook_id=12",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert ping.status_code == 200
    order = {
        "id": 501,
        "number": "501",
        "currency": "EUR",
        "status": "processing",
        "date_modified_gmt": "2026-11-01T10:00:00",
        "line_items": [{"id": 1, "sku": "MUG", "name": "Mug", "quantity": 2, "price": 9.5}],
    }
    raw = json.dumps(order).encode()
    headers = {
        "X-WC-Webhook-Signature": sign(secret, raw),
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Delivery-ID": "42",
        "content-type": "application/json",
    }
    assert (
        await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)
    ).status_code == 200
    # A different delivery id for the same resource and modification time is the same event.
    again = {**headers, "X-WC-Webhook-Delivery-ID": "43"}
    assert (await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=again)).json()[
        "status"
    ] == "duplicate"
    bad = {**headers, "X-WC-Webhook-Signature": sign("wrong", raw), "X-WC-Webhook-Delivery-ID": "44"}
    assert (await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=bad)).status_code == 401
    assert (
        await admin_scalar(admin_engine, "select count(*) from webhook_events where org_id = :o", o=org.id)
        == 1
    )
    await run_worker(settings)
    orders = await orders_of(client, org)
    assert (
        len(orders) == 1
        and orders[0]["number"] == f"{org.code}-W-000001"
        and await reserved(client, org, "MUG") == 2
    )
    cancelled = {**order, "status": "cancelled", "date_modified_gmt": "2026-11-01T11:00:00"}
    raw = json.dumps(cancelled).encode()
    headers = {
        **headers,
        "X-WC-Webhook-Signature": sign(secret, raw),
        "X-WC-Webhook-Topic": "order.updated",
        "X-WC-Webhook-Delivery-ID": "45",
    }
    await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)
    await run_worker(settings)
    assert (await orders_of(client, org))[0]["status"] == "cancelled" and await reserved(
        client, org, "MUG"
    ) == 0


async def test_each_channel_has_its_own_ingress_rate_limit(client, make_org, settings) -> None:
    import dataclasses

    from rappit.app.factory import create_app
    from tests.conftest import client_for, start_app, stop_app

    org = await make_org()
    busy, quiet = await shopify_channel(client, org), await shopify_channel(client, org)
    from tests.platform.test_ratelimit import clear_of_window_edge

    app = create_app(dataclasses.replace(settings, rate_limit_channel_per_minute=3))
    await start_app(app)
    await clear_of_window_edge()
    try:
        async with client_for(app, ip="10.77.0.1") as c:
            statuses = [
                (await send_shopify(c, busy, shopify_order(1, [("A", 1)]))).status_code for _ in range(4)
            ]
            other = await send_shopify(c, quiet, shopify_order(2, [("A", 1)]))
            limited = await send_shopify(c, busy, shopify_order(3, [("A", 1)]))
    finally:
        await stop_app(app)
    assert statuses == [200, 200, 200, 429] and other.status_code == 200
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["details"]["policy"] == "channel"


async def test_order_listing_filters_by_status_and_channel(client, make_org, settings) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 1})
    first, second = await shopify_channel(client, org), await shopify_channel(client, org)
    await send_shopify(client, first, shopify_order(1, [("A", 1)]))
    await run_worker(
        settings
    )  # the worker runs jobs concurrently: process the first before sending the second
    await send_shopify(client, second, shopify_order(2, [("A", 1)]))  # no stock left: on hold
    await run_worker(settings)
    by_channel = (
        await client.get(
            "/api/v1/orders", params={"channel_id": second["id"], "offset": 0}, headers=org.headers
        )
    ).json()
    assert by_channel["total"] == 1 and by_channel["items"][0]["status"] == "on_hold"
    held = (await client.get("/api/v1/orders", params={"status": "on_hold"}, headers=org.headers)).json()
    assert [o["external_id"] for o in held["items"]] == ["2"]
    bad = await client.get("/api/v1/orders", params={"channel_id": "nope"}, headers=org.headers)
    assert bad.status_code == 400


async def test_woocommerce_delete_of_an_unknown_order_is_ignored(client, make_org, settings) -> None:
    from rappit.integrations.channels.signatures import sign

    org = await make_org()
    made = (
        await client.post(
            "/api/v1/channels",
            json={"type": "woocommerce", "name": "Woo", "address": "https://gone.example.test"},
            headers=org.headers,
        )
    ).json()
    raw = json.dumps({"id": 999}).encode()
    headers = {
        "X-WC-Webhook-Signature": sign(made["webhook_secret"], raw),
        "X-WC-Webhook-Topic": "order.deleted",
        "X-WC-Webhook-Delivery-ID": "900",
        "content-type": "application/json",
    }
    assert (
        await client.post(f"/webhooks/woocommerce/{made['channel']['id']}", content=raw, headers=headers)
    ).status_code == 200
    await run_worker(settings)
    events = (
        await client.get(f"/api/v1/channels/{made['channel']['id']}/events", headers=org.headers)
    ).json()
    assert [e["status"] for e in events] == ["ignored"] and await orders_of(client, org) == []


async def test_a_woocommerce_create_processed_after_its_deletion_makes_a_cancelled_order(
    client, make_org, settings
) -> None:
    """Found by the chaos soak (seed 1201): the create's job was killed and re-run only after arq's
    in-progress key expired, so the order.deleted sent after it was processed first and ignored (no
    order yet); the create then made an open order holding stock that nothing would ever release."""
    from rappit.integrations.channels.signatures import sign

    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    made = (
        await client.post(
            "/api/v1/channels",
            json={"type": "woocommerce", "name": "Woo", "address": "https://late.example.test"},
            headers=org.headers,
        )
    ).json()

    async def send(topic: str, body: dict, delivery: str) -> None:
        raw = json.dumps(body).encode()
        headers = {
            "X-WC-Webhook-Signature": sign(made["webhook_secret"], raw),
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Delivery-ID": delivery,
            "content-type": "application/json",
        }
        url = f"/webhooks/woocommerce/{made['channel']['id']}"
        assert (await client.post(url, content=raw, headers=headers)).status_code == 200
        await run_worker(settings)

    await send("order.deleted", {"id": 4242}, "d1")
    create = {
        "id": 4242,
        "number": "4242",
        "currency": "EUR",
        "status": "processing",
        "date_modified_gmt": "2026-11-01T10:00:00",
        "line_items": [{"id": 1, "sku": "A", "name": "A", "quantity": 3, "price": "5.00"}],
    }
    await send("order.created", create, "c1")
    orders = await orders_of(client, org)
    assert [(o["external_id"], o["status"]) for o in orders] == [("4242", "cancelled")]
    assert await reserved(client, org, "A") == 0
    # A deletion of an order that never comes stays what it was: ignored, no order.
    await send("order.deleted", {"id": 5151}, "d2")
    assert len(await orders_of(client, org)) == 1


async def test_the_database_keeps_order_and_event_state_consistent(
    client, make_org, settings, engine
) -> None:
    """States that code sets together cannot be written apart, even by raw SQL."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    channel = await shopify_channel(client, org)
    await send_shopify(client, channel, shopify_order(4242, [("A", 1)]))
    await run_worker(settings)
    for sql in (
        "update orders set status = 'on_hold'",  # on hold without a reason
        "update orders set status = 'cancelled'",  # cancelled without a time
        "update orders set hold_reason = '{}'",  # a reason on an open order
        "update webhook_events set status = 'pending'",  # not done, yet a processed_at
        "update channels set status = 'disabled'",  # disabled without a time
    ):
        with pytest.raises(IntegrityError, match="check constraint"):
            async with engine.begin() as conn:
                await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(org.id)})
                result = await conn.execute(text(sql))
                assert result.rowcount  # the statement reached a row (RLS let it through)


async def woo_channel(client, org) -> tuple[str, str]:
    made = (
        await client.post(
            "/api/v1/channels",
            json={
                "type": "woocommerce",
                "name": "Woo",
                "address": f"https://{uuid.uuid4().hex[:8]}.example.test",
            },
            headers=org.headers,
        )
    ).json()
    return made["channel"]["id"], made["webhook_secret"]


async def send_woo(client, cid: str, secret: str, order: dict, *, topic: str, delivery: str):
    from rappit.integrations.channels.signatures import sign

    raw = json.dumps(order).encode()
    headers = {
        "X-WC-Webhook-Signature": sign(secret, raw),
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Delivery-ID": delivery,
        "content-type": "application/json",
    }
    return await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)


async def test_two_woocommerce_orders_sharing_a_delivery_id_both_become_orders(
    client, make_org, settings, admin_engine
) -> None:
    """WooCommerce makes X-WC-Webhook-Delivery-ID from the webhook id and the current second
    (wp_hash(id . strtotime('now'))): one webhook delivering two orders in one second repeats it."""
    org = await make_org()
    await setup_stock(client, org, {("MUG", "W1"): 10})
    cid, secret = await woo_channel(client, org)
    same_second = "9c1b2f0f6a4c1e0d8b7a6f5e4d3c2b1a"
    for order_id in (601, 602):
        order = {
            "id": order_id, "number": str(order_id), "currency": "EUR", "status": "processing",
            "date_modified_gmt": "2026-11-01T10:00:00",
            "line_items": [{"id": 1, "sku": "MUG", "name": "Mug", "quantity": 1, "price": 9.5}],
        }  # fmt: skip
        resp = await send_woo(client, cid, secret, order, topic="order.created", delivery=same_second)
        assert resp.json()["status"] == "accepted", resp.text
    # The same delivery again (a retry of the second one) is still a duplicate.
    resp = await send_woo(client, cid, secret, order, topic="order.created", delivery=same_second)
    assert resp.json()["status"] == "duplicate"
    await run_worker(settings)
    assert sorted(o["external_id"] for o in await orders_of(client, org)) == ["601", "602"]
    assert await reserved(client, org, "MUG") == 2


async def test_shopify_dedups_on_the_event_id_not_the_delivery(client, make_org, settings) -> None:
    """X-Shopify-Event-Id names the event; X-Shopify-Webhook-Id one delivery of it: two deliveries
    of one event (two subscriptions, or a retry) are one change."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    payload = shopify_order(8101, [("A", 1)])
    first = await send_shopify(
        client, channel, payload, event_id="evt-1", headers={"X-Shopify-Webhook-Id": "d-1"}
    )
    again = await send_shopify(
        client, channel, payload, event_id="evt-1", headers={"X-Shopify-Webhook-Id": "d-2"}
    )
    other = await send_shopify(
        client,
        channel,
        shopify_order(8102, [("A", 1)]),
        event_id="evt-2",
        headers={"X-Shopify-Webhook-Id": "d-1"},
    )
    assert [r.json()["status"] for r in (first, again, other)] == ["accepted", "duplicate", "accepted"]
    await run_worker(settings)
    assert sorted(o["external_id"] for o in await orders_of(client, org)) == ["8101", "8102"]


async def test_an_update_that_cannot_be_reserved_holds_nothing(
    client, make_org, settings, admin_engine
) -> None:
    """On hold means no units held (all or nothing, as at creation): an update adding an unknown SKU
    puts the order on hold and releases what it held; a retry after the fix reserves every line."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    channel = await shopify_channel(client, org)
    await send_shopify(client, channel, shopify_order(8201, [("A", 2)]))
    await run_worker(settings)
    assert await reserved(client, org, "A") == 2
    await send_shopify(
        client, channel, shopify_order(8201, [("A", 2), ("NEW", 1)], minutes=5), topic="orders/updated"
    )
    await run_worker(settings)
    order = (await orders_of(client, org))[0]
    assert order["status"] == "on_hold" and order["hold_reason"]["code"] == "UNKNOWN_CODES"
    assert await reserved(client, org, "A") == 0
    await setup_stock(client, org, {("NEW", "W1"): 5})
    retried = await client.post(f"/api/v1/orders/{order['id']}/retry-reservation", headers=org.headers)
    assert retried.status_code == 200 and retried.json()["order"]["status"] == "open"
    assert (await reserved(client, org, "A"), await reserved(client, org, "NEW")) == (2, 1)
    await assert_inventory_consistent(admin_engine, org.id)


async def test_a_channel_keeps_its_warehouse_when_one_that_sorts_first_is_added(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W2"): 10})
    pinned = await shopify_channel(client, org)  # pinned to W2, the only warehouse
    await setup_stock(client, org, {("A", "A0"): 10})  # sorts first; takes over nothing
    await send_shopify(client, pinned, shopify_order(8301, [("A", 1)]))
    await run_worker(settings)
    detail = (
        await client.get(f"/api/v1/orders/{(await orders_of(client, org))[0]['id']}", headers=org.headers)
    ).json()
    assert [r["warehouse_code"] for r in detail["reservations"]] == ["W2"]


async def test_a_channel_made_before_any_warehouse_is_pinned_by_its_first_order(
    client, make_org, settings
) -> None:
    org = await make_org()
    channel = await shopify_channel(client, org)
    await setup_stock(client, org, {("A", "W5"): 10})
    await send_shopify(client, channel, shopify_order(8401, [("A", 1)]))
    await run_worker(settings)
    await setup_stock(client, org, {("A", "A1"): 10})
    await send_shopify(client, channel, shopify_order(8402, [("A", 1)]))
    await run_worker(settings)
    codes = []
    for order in await orders_of(client, org):
        detail = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()
        codes += [r["warehouse_code"] for r in detail["reservations"]]
    assert codes == ["W5", "W5"]


async def test_hostile_woocommerce_bodies_are_stored_and_dead_lettered_not_500(
    client, make_org, settings, admin_engine
) -> None:
    """Invalid UTF-8 inside a string and deep nesting make msgspec raise UnicodeDecodeError and
    RecursionError, not DecodeError: a signed body like that is accepted, then dead-letters."""
    from rappit.integrations.channels.signatures import sign

    org = await make_org()
    cid, secret = await woo_channel(client, org)
    for i, raw in enumerate([b'{"id": 1, "number": "\xff"}', b"[" * 100_000]):
        headers = {
            "X-WC-Webhook-Signature": sign(secret, raw),
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Delivery-ID": f"hostile-{i}",
            "content-type": "application/json",
        }
        resp = await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)
        assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    await run_worker(settings)
    dead = (await client.get("/api/v1/jobs/dead", headers=org.headers)).json()
    assert len(dead) == 2 and all(d["error"].startswith("PayloadError") for d in dead)


async def test_a_flash_sale_is_not_throttled_but_an_unsigned_flood_is(
    client, make_org, settings, admin_engine
) -> None:
    """Per address only refused deliveries count: verified ones from one address go through far past
    the per-address limit, while bad signatures from another are stopped before the database."""
    import dataclasses

    from rappit.app.factory import create_app
    from tests.conftest import client_for, start_app, stop_app
    from tests.platform.test_ratelimit import clear_of_window_edge

    org = await make_org()
    channel = await shopify_channel(client, org)
    app = create_app(
        dataclasses.replace(
            settings,
            rate_limit_webhooks_per_minute=5,
            rate_limit_channel_per_minute=Settings().rate_limit_channel_per_minute,
        )
    )
    await start_app(app)
    await clear_of_window_edge()
    try:
        async with client_for(app, ip="10.88.0.1") as shop:
            sale = [
                (await send_shopify(shop, channel, shopify_order(8600 + i, [("A", 1)]))).status_code
                for i in range(40)
            ]
        async with client_for(app, ip="10.88.0.2") as attacker:
            flood = [
                (
                    await send_shopify(attacker, channel, shopify_order(1, [("A", 1)]), secret="wrong" * 8)
                ).status_code
                for _ in range(8)
            ]
    finally:
        await stop_app(app)
    assert sale == [200] * 40
    assert flood == [401] * 5 + [429] * 3
    assert Settings().rate_limit_channel_per_minute >= 300 * 60
    stored = await admin_scalar(
        admin_engine, "select count(*) from webhook_events where org_id = :o", o=org.id
    )
    assert stored == 40
