"""Walks the app's route table, so routes added later are covered without editing this test.

Org B (an owner, so permissions are never the reason for a refusal) calls every /api route with
org A's resource ids: each must answer 404, list routes must show none of A's ids, and afterwards
every tenant row of org A must be exactly as before.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar.routes import HTTPRoute
from sqlalchemy import text

from rappit.platform.db import Base
from rappit.tenancy.models import TenantMixin

# Body for routes that take one, keyed by (method, path template). A new route with a body needs an entry.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/channels/{channel_id:uuid}/settings"): {"warehouse_code": "W-NONE"},
}


async def seed_org_a(client, org, admin_engine) -> dict[str, str]:
    """One of each resource in org A, by the path-parameter name that addresses it."""
    user = await client.post(
        "/api/v1/users", json={"email": "victim@a.test", "role": "staff"}, headers=org.headers
    )
    token = await client.post(
        "/api/v1/tokens", json={"name": "victim", "role": "viewer"}, headers=org.headers
    )
    assert user.status_code == 201 and token.status_code == 201
    sku = f"SKU-A-{uuid.uuid4().hex[:8]}"
    wh = f"WH-A-{uuid.uuid4().hex[:6]}"
    for path, body in (("/api/v1/skus", {"code": sku}), ("/api/v1/warehouses", {"code": wh})):
        assert (await client.post(path, json=body, headers=org.headers)).status_code == 201
    adjusted = await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": sku, "warehouse_code": wh, "quantity": 10, "reason": "receive"},
        headers=org.headers,
    )
    assert adjusted.status_code == 200
    imported = await client.post(  # a bulk import (with a rejected line), recorded in imports
        "/api/v1/inventory/bulk",
        content=f"sku,quantity,warehouse_code\n{sku},10,{wh}\nNOPE,1,{wh}\n".encode(),
        headers={**org.headers, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    import_id = (await client.get("/api/v1/imports", headers=org.headers)).json()[0]["id"]
    hold = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": sku, "warehouse_code": wh, "quantity": 2}]},
        headers=org.headers,
    )
    assert hold.status_code == 201, hold.text
    channel = await client.post(
        "/api/v1/channels",
        json={"type": "shopify", "name": "A shop", "address": f"a-{uuid.uuid4().hex[:8]}.myshopify.com"},
        headers=org.headers,
    )
    assert channel.status_code == 201, channel.text
    order = await client.post(
        "/api/v1/orders",
        json={"currency": "USD", "lines": [{"sku": sku, "quantity": 1}]},
        headers=org.headers,
    )
    assert order.status_code == 201, order.text
    account = await client.post(
        "/api/v1/carrier-accounts",
        json={
            "carrier": "fedex",
            "name": "A FedEx",
            "credentials": {"client_id": "a", "client_secret": "b"},
            "account_number": "510087020",
        },
        headers=org.headers,
    )
    assert account.status_code == 201, account.text
    shipment_id = uuid.uuid4()
    dead_id = uuid.uuid4()
    async with admin_engine.begin() as conn:  # a dead letter as the worker would leave it
        event_id = (
            await conn.execute(
                text(
                    "insert into webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key, "
                    "payload, status, attempts, received_at)"
                    " values (gen_random_uuid(), :o, :c, 'orders/create', :d, :d, '{}', 'dead', 3, now()) "
                    "returning id"
                ),
                {"o": org.id, "c": channel.json()["channel"]["id"], "d": str(uuid.uuid4())},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "insert into dead_letters (id, org_id, kind, ref_id, job_name, payload, error, "
                "attempts, status,"
                " first_failed_at, last_failed_at) values (:i, :o, 'webhook_event', :e, "
                "'process_webhook_event', '{}',"
                " 'boom', 3, 'dead', now(), now())"
            ),
            {"i": dead_id, "o": org.id, "e": event_id},
        )
        await conn.execute(  # a bought label, as the purchase saga records it
            text(
                "insert into shipments (id, org_id, order_id, carrier_account_id, carrier, service, status,"
                " ship_date, request, lines, carrier_shipment_id, label_document, label_format)"
                " values (:i, :o, :ord, :acc, 'fedex', 'FEDEX_GROUND', 'label_purchased', current_date,"
                " '{}', '[]', '794000000001', 'pdf', 'pdf')"
            ),
            {
                "i": shipment_id,
                "o": org.id,
                "ord": order.json()["order"]["id"],
                "acc": account.json()["account"]["id"],
            },
        )
    return {
        "account_id": account.json()["account"]["id"],
        "shipment_id": str(shipment_id),
        "order_id": order.json()["order"]["id"],
        "dead_letter_id": str(dead_id),
        "channel_id": channel.json()["channel"]["id"],
        "user_id": user.json()["id"],
        "token_id": token.json()["details"]["id"],
        "reservation_id": hold.json()["reservations"][0]["id"],
        "import_id": import_id,
        "sku": sku,
        "warehouse_code": wh,
    }


def api_routes(app) -> list[tuple[str, str, list[str]]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/"):
            continue
        for method in sorted(route.methods):
            if method in ("HEAD", "OPTIONS"):
                continue
            found.append((method, route.path, list(route.path_parameters)))
    return found


async def snapshot(admin_engine, org_id) -> dict[str, list]:
    tables = sorted({m.local_table.name for m in Base.registry.mappers if issubclass(m.class_, TenantMixin)})
    state = {}
    async with admin_engine.connect() as conn:
        for table in tables:
            rows = await conn.execute(
                text(f"select * from {table} where org_id = :o order by id"), {"o": org_id}
            )
            state[table] = [tuple(r) for r in rows]
        state["organizations"] = [
            tuple(r)
            for r in await conn.execute(text("select * from organizations where id = :o"), {"o": org_id})
        ]
    return state


async def test_org_b_cannot_see_or_change_org_a_through_any_route(
    app, client, make_org, admin_engine
) -> None:
    a, b = await make_org("Org A"), await make_org("Org B")
    seeds = await seed_org_a(client, a, admin_engine)
    before = await snapshot(admin_engine, a.id)
    routes = api_routes(app)
    assert routes, "no routes found"
    with_params = 0
    for method, template, params in routes:
        missing = [p for p in params if p not in seeds]
        assert not missing, f"{method} {template}: seed a value for {missing} in seed_org_a()"
        path = template
        for name in params:
            path = re.sub(r"\{" + name + r"(:[^}]*)?\}", seeds[name], path)
        kwargs: dict[str, Any] = {"headers": b.headers}
        if (method, template) in BODIES:
            kwargs["json"] = BODIES[(method, template)]
        resp = await client.request(method, path, **kwargs)
        if params:
            with_params += 1
            assert resp.status_code == 404, f"{method} {path} answered {resp.status_code}: {resp.text}"
        elif method == "GET":
            assert resp.status_code == 200, f"{method} {path}: {resp.status_code}"
            for value in [*seeds.values(), str(a.id), a.code]:
                assert value not in resp.text, f"{method} {path} leaked org A's {value}"
    assert with_params >= 10  # grows as routes are added; guards against an empty walk
    assert await snapshot(admin_engine, a.id) == before, "org A's rows changed"
