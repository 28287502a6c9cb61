"""Idempotency-Key: replay, mismatch, in-progress, and the response stored with the operation."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from tests.conftest import admin_scalar


async def test_same_key_and_body_replays_the_stored_response(client, make_org, admin_engine) -> None:
    org = await make_org()
    headers = {**org.headers, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.post("/api/v1/skus", json={"code": "IDEM-1", "name": "Tent"}, headers=headers)
    again = await client.post("/api/v1/skus", json={"code": "IDEM-1", "name": "Tent"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    count = await admin_scalar(
        admin_engine, "select count(*) from skus where org_id = :o and code = 'IDEM-1'", o=org.id
    )
    assert count == 1


async def test_same_key_with_a_different_body_is_422(client, make_org) -> None:
    org = await make_org()
    headers = {**org.headers, "Idempotency-Key": "reused"}
    assert (await client.post("/api/v1/skus", json={"code": "A1"}, headers=headers)).status_code == 201
    resp = await client.post("/api/v1/skus", json={"code": "A2"}, headers=headers)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # The same key on another path is a different request too.
    resp = await client.post("/api/v1/warehouses", json={"code": "A1"}, headers=headers)
    assert resp.status_code == 422


async def test_keys_are_scoped_by_org(client, make_org) -> None:
    a, b = await make_org(), await make_org()
    for org in (a, b):
        resp = await client.post(
            "/api/v1/skus", json={"code": "SAME"}, headers={**org.headers, "Idempotency-Key": "shared"}
        )
        assert resp.status_code == 201 and "idempotent-replayed" not in resp.headers


async def test_a_key_held_by_an_in_flight_request_is_409(client, make_org, admin_engine) -> None:
    org = await make_org()
    key = "in-flight"
    async with admin_engine.connect() as conn:  # play the in-flight request: hold the key's lock
        await conn.execute(text("begin"))
        await conn.execute(
            text("select pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"idem:{org.id}:{key}"}
        )
        busy = await client.post(
            "/api/v1/skus", json={"code": "F1"}, headers={**org.headers, "Idempotency-Key": key}
        )
        await conn.execute(text("rollback"))
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    done = await client.post(
        "/api/v1/skus", json={"code": "F1"}, headers={**org.headers, "Idempotency-Key": key}
    )
    assert done.status_code == 201


async def test_concurrent_duplicates_create_exactly_once(client, make_org, admin_engine) -> None:
    """Manual orders have no natural unique key (two identical ones are two orders), so only the
    Idempotency-Key lock and its stored response stand between 20 concurrent retries and 20 orders."""
    org = await make_org()
    headers = {**org.headers, "Idempotency-Key": "burst"}
    order = {"currency": "EUR", "lines": [{"sku": "GIFT", "quantity": 1, "unit_price_minor": 500}]}
    responses = await asyncio.gather(
        *[client.post("/api/v1/orders", json=order, headers=headers) for _ in range(20)]
    )
    created = [r for r in responses if r.status_code == 201]
    busy = [r for r in responses if r.status_code != 201]
    assert created and all(
        r.status_code == 409 and r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS" for r in busy
    ), [(r.status_code, r.text[:120]) for r in busy]
    assert len({r.content for r in created}) == 1  # every success is the one response, replayed
    assert await admin_scalar(admin_engine, "select count(*) from orders where org_id = :o", o=org.id) == 1


async def test_a_failed_request_stores_nothing_and_can_be_retried(client, make_org) -> None:
    org = await make_org()
    await client.post("/api/v1/skus", json={"code": "S"}, headers=org.headers)
    await client.post("/api/v1/warehouses", json={"code": "W"}, headers=org.headers)
    headers = {**org.headers, "Idempotency-Key": "retry-me"}
    body = {"lines": [{"sku": "S", "warehouse_code": "W", "quantity": 1}]}
    assert (await client.post("/api/v1/reservations", json=body, headers=headers)).status_code == 422
    await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "S", "warehouse_code": "W", "quantity": 1, "reason": "receive"},
        headers=org.headers,
    )
    ok = await client.post("/api/v1/reservations", json=body, headers=headers)
    assert ok.status_code == 201
    assert (await client.post("/api/v1/reservations", json=body, headers=headers)).content == ok.content


async def test_malformed_key_is_400(client, make_org) -> None:
    org = await make_org()
    resp = await client.post(
        "/api/v1/skus", json={"code": "X"}, headers={**org.headers, "Idempotency-Key": "x" * 300}
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "INVALID_IDEMPOTENCY_KEY"


async def test_every_mutating_api_post_honours_idempotency_keys(app) -> None:
    """Guards the convention: a new POST route under /api must use `idempotent()`."""
    import inspect

    from litestar.routes import HTTPRoute

    missing = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith("/api/") and "POST" in route.methods:
            handler = route.route_handler_map["POST"][0]
            if "idempotent(" not in inspect.getsource(handler.fn):
                missing.append(route.path)
    # Their responses hold a plaintext token or webhook secret, which must never be stored.
    exempt = {
        "/api/v1/tokens",
        "/api/v1/channels",
        "/api/v1/channels/{channel_id:uuid}/rotate-secret",
        "/api/v1/carrier-accounts",
        # Read-only: a quote changes nothing.
        "/api/v1/shipments/rates",
        # The purchase saga spans transactions: its Idempotency-Key is a unique column on the shipment
        # (a retry gets the shipment of the first attempt, whatever its state).
        "/api/v1/shipments",
        # Spans the carrier call; a repeat is refused by the state machine (409), never voided twice.
        "/api/v1/shipments/{shipment_id:uuid}/void",
    }
    assert sorted(set(missing) - exempt) == []
