from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.inventory.helpers import assert_inventory_consistent, setup_stock


async def test_database_refuses_negative_available_even_from_raw_sql(
    client, make_org, engine, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    hold = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 3}]},
        headers=org.headers,
    )
    assert hold.status_code == 201
    for sql in (
        "update inventory_levels set reserved = reserved + 3",  # available would be -1
        "update inventory_levels set on_hand = 2",  # below reserved
        "update inventory_levels set on_hand = -1, reserved = 0",
    ):
        with pytest.raises(IntegrityError, match="check constraint"):
            async with engine.begin() as conn:
                await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(org.id)})
                await conn.execute(text(sql))
    # Every statement was refused whole: the level and its ledger are as the hold left them.
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(5, 3)]


async def test_adjust_receive_set_and_refuse_below_reserved(client, make_org, admin_engine) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})

    async def adjust(**body):
        return await client.post(
            "/api/v1/inventory/adjust", json={"sku": "A", "warehouse_code": "W1", **body}, headers=org.headers
        )

    r = await adjust(quantity=-4)
    assert r.status_code == 200
    assert (r.json()["on_hand_before"], r.json()["on_hand"], r.json()["changed"]) == (10, 6, True)
    r = await adjust(quantity=20, mode="set", note="cycle count")
    assert r.json()["on_hand"] == 20
    r = await adjust(quantity=20, mode="set")
    assert r.json()["changed"] is False
    await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 15}]},
        headers=org.headers,
    )
    r = await adjust(quantity=-6)
    assert r.status_code == 422
    err = r.json()["error"]
    assert (
        err["code"] == "BELOW_RESERVED"
        and err["details"]["reserved"] == 15
        and err["details"]["available"] == 5
    )
    assert (await adjust(quantity=14, mode="set")).json()["error"]["code"] == "BELOW_RESERVED"
    bad = await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "NOPE", "warehouse_code": "W1", "quantity": 1},
        headers=org.headers,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "UNKNOWN_SKU"
    assert (await adjust(quantity=-1, reason="receive")).status_code == 422
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(20, 15)]


async def test_ledger_records_every_change_with_actor_reason_and_request_id(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 10})
    headers = {**org.headers, "X-Request-ID": "req-ledger-1"}
    hold = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 4}], "reference": "hold-7"},
        headers=headers,
    )
    await client.post(
        f"/api/v1/reservations/{hold.json()['reservations'][0]['id']}/release", headers=org.headers
    )
    page = (await client.get("/api/v1/inventory/A/ledger", headers=org.headers)).json()
    reasons = [(e["reason"], e["on_hand_delta"], e["reserved_delta"]) for e in page["items"]]
    assert reasons == [("release", 0, -4), ("reserve", 0, 4), ("receive", 10, 0)]
    reserve = page["items"][1]
    assert reserve["request_id"] == "req-ledger-1" and reserve["actor"].startswith("token:")
    assert reserve["reference_type"] == "manual" and reserve["reference_id"] == "hold-7"
    assert (await client.get("/api/v1/inventory/NOPE/ledger", headers=org.headers)).status_code == 404


async def test_inventory_listing_filters_and_paginates(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 1, ("B", "W1"): 50, ("A", "W2"): 7, ("C", "W2"): 0})
    await client.post("/api/v1/skus", json={"code": "LOW", "reorder_point": 5}, headers=org.headers)
    await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "LOW", "warehouse_code": "W1", "quantity": 3, "reason": "receive"},
        headers=org.headers,
    )
    get = lambda **q: client.get("/api/v1/inventory", params=q, headers=org.headers)  # noqa: E731
    assert [(i["sku"], i["warehouse_code"]) for i in (await get(sku="A")).json()["items"]] == [
        ("A", "W1"),
        ("A", "W2"),
    ]
    assert {i["sku"] for i in (await get(warehouse="W1")).json()["items"]} == {"A", "B", "LOW"}
    low = (await get(low_stock="true")).json()["items"]
    assert [i["sku"] for i in low] == ["LOW"] and low[0]["low_stock"] is True
    page = (await get(limit=2, offset=1)).json()
    assert page["total"] == 4 and len(page["items"]) == 2 and page["items"][0]["sku"] == "A"
    assert (await get(limit=0)).status_code == 400


async def test_duplicate_sku_and_warehouse_codes_conflict(client, make_org) -> None:
    org = await make_org()
    assert (await client.post("/api/v1/skus", json={"code": "X"}, headers=org.headers)).status_code == 201
    dup = await client.post("/api/v1/skus", json={"code": "X"}, headers=org.headers)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "SKU_EXISTS"
    assert (await client.post("/api/v1/skus", json={"code": "a/b"}, headers=org.headers)).status_code == 400
    other = await make_org()
    assert (await client.post("/api/v1/skus", json={"code": "X"}, headers=other.headers)).status_code == 201


async def test_catalogue_listings_are_sorted_and_paginated(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("B", "W2"): 0, ("A", "W1"): 0, ("C", "W1"): 0})
    skus = (await client.get("/api/v1/skus", params={"limit": 2, "offset": 1}, headers=org.headers)).json()
    assert [s["code"] for s in skus] == ["B", "C"]
    warehouses = (await client.get("/api/v1/warehouses", headers=org.headers)).json()
    assert [w["code"] for w in warehouses] == ["W1", "W2"]
