"""Listing at any history size: keyset paging (an opaque cursor, a stable order, every row once) over
orders and inventory levels, and the plans of those queries read an index range, never the history."""

from __future__ import annotations

from sqlalchemy import text

from tests.inventory.helpers import setup_stock


async def seed_orders(admin_engine, org_id, n: int) -> None:
    """n orders, three to a timestamp (the id breaks the ties)."""
    async with admin_engine.begin() as conn:
        await conn.execute(
            text(
                """insert into orders (id, org_id, number, source, status, currency, created_at, updated_at)
                   select gen_random_uuid(), :o, 'L-M-' || g, 'manual', 'open', 'EUR',
                          timestamptz '2026-01-01' + (g / 3) * interval '1 minute', now()
                     from generate_series(1, :n) g"""
            ),
            {"o": org_id, "n": n},
        )


async def test_orders_page_by_cursor_newest_first_each_once(client, make_org, admin_engine) -> None:
    org = await make_org()
    await seed_orders(admin_engine, org.id, 10)
    seen, cursor, pages = [], None, 0
    for _ in range(10):  # bounded: a cursor that does not advance must fail, not hang
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/orders", params=params, headers=org.headers)).json()
        assert page["total"] is None and page["offset"] is None  # no count on the keyset path
        seen += [(o["created_at"], o["id"]) for o in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == 10 and len(set(seen)) == 10
    assert seen == sorted(seen, reverse=True)  # created_at, then id, descending: stable across pages
    with_offset = (await client.get("/api/v1/orders", params={"offset": 9}, headers=org.headers)).json()
    assert with_offset["total"] == 10 and [o["id"] for o in with_offset["items"]] == [seen[-1][1]]


async def test_a_cursor_from_elsewhere_or_with_offset_is_a_400(client, make_org) -> None:
    org = await make_org()
    for params, code in (
        ({"cursor": "not-a-cursor"}, "INVALID_CURSOR"),
        ({"cursor": "WyJ4Il0"}, "INVALID_CURSOR"),  # ["x"]: one value where two belong
        ({"cursor": "WyIyMDI2LTAxLTAxIiwgIngiXQ"}, "INVALID_CURSOR"),  # a naive time, not an id
        ({"cursor": "WyJ4IiwgIngiXQ", "offset": 0}, "INVALID_PAGING"),
    ):
        for path in ("/api/v1/orders", "/api/v1/inventory"):
            if path == "/api/v1/inventory" and params.get("cursor") == "WyIyMDI2LTAxLTAxIiwgIngiXQ":
                continue  # two strings are a valid inventory cursor
            resp = await client.get(path, params=params, headers=org.headers)
            assert resp.status_code == 400, (path, params, resp.text)
            assert resp.json()["error"]["code"] == code


async def test_inventory_pages_by_sku_then_warehouse(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {(s, w): 1 for s in ("A", "B", "C", "D") for w in ("W1", "W2", "W3")})
    seen, cursor = [], None
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/inventory", params=params, headers=org.headers)).json()
        seen += [(i["sku"], i["warehouse_code"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(s, w) for s in ("A", "B", "C", "D") for w in ("W1", "W2", "W3")]


async def explain(admin_engine, org_id, sql: str, **params) -> str:
    async with admin_engine.connect() as conn:
        await conn.execute(text("set enable_seqscan = off"))  # tiny test tables: plan as for big ones
        rows = await conn.execute(text("explain " + sql), {"o": org_id, **params})
        return "\n".join(r[0] for r in rows)


async def test_hot_listing_plans_read_an_index_range_and_sort_nothing(make_org, admin_engine) -> None:
    """The listing queries (orders/service.py list_orders, the ledger page) explained: an index scan in
    the wanted order from the cursor, no Sort of the whole history (bench/history.py records the plans
    at a million rows, where the planner's choice is the real one)."""
    org = await make_org()
    await seed_orders(admin_engine, org.id, 30)
    plan = await explain(
        admin_engine,
        org.id,
        """select * from orders where org_id = :o and (created_at, id) < (timestamptz '2026-01-01 00:05', :i)
            order by created_at desc, id desc limit 50""",
        i="ffffffff-ffff-ffff-ffff-ffffffffffff",
    )
    assert "ix_orders_org_created" in plan and "Sort" not in plan, plan
    assert "Index Cond" in plan and "created_at" in plan.split("Index Cond")[1], plan
    plan = await explain(
        admin_engine,
        org.id,
        """select * from orders where org_id = :o and status = 'open'
            order by created_at desc, id desc limit 50""",
    )
    assert "Index Scan Backward using ix_orders_org_" in plan and "Sort" not in plan, plan
    plan = await explain(
        admin_engine,
        org.id,
        """select * from inventory_ledger where org_id = :o and sku_id = :s and id < 100
            order by id desc limit 100""",
        s="ffffffff-ffff-ffff-ffff-ffffffffffff",
    )
    assert "Index Scan Backward using" in plan and "Sort" not in plan, plan
