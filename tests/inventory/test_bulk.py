from __future__ import annotations

from sqlalchemy import text

from tests.inventory.helpers import assert_inventory_consistent, setup_stock

CSV = {"content-type": "text/csv"}


async def levels_of(client, org) -> dict:
    items = (await client.get("/api/v1/inventory", params={"limit": 200}, headers=org.headers)).json()[
        "items"
    ]
    return {(i["sku"], i["warehouse_code"]): (i["on_hand"], i["reserved"]) for i in items}


async def test_mixed_file_applies_valid_rows_and_reports_every_invalid_one(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(
        client, org, {("A", "W1"): 10, ("B", "W1"): 0, ("C", "W1"): 8, ("D", "W2"): 4, ("E", "W1"): 0}
    )
    await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "C", "warehouse_code": "W1", "quantity": 6}]},
        headers=org.headers,
    )
    body = (
        "sku,quantity,warehouse_code,mode\n"
        "A,25,W1,\n"  # 2 set 10 -> 25
        "B,7,W1,add\n"  # 3 add 0 -> 7
        "D,4,W2,\n"  # 4 unchanged
        "GHOST,1,W1,\n"  # 5 unknown SKU
        "A,1,NOWHERE,\n"  # 6 unknown warehouse
        "C,5,W1,\n"  # 7 below the 6 reserved
        "E,-3,W1,\n"  # 8 negative
        "E,2.5,W1,\n"  # 9 not whole
        "E,abc,W1,\n"  # 10 not a number
        ",3,W1,\n"  # 11 missing sku
        "D,9,W1,\n"  # 12 duplicate of 13
        "D,9,W1,\n"  # 13 duplicate of 12
        "E,1,W1,swap\n"  # 14 bad mode
        "\n"
        "B,2,W2,add\n"  # 16 a level that did not exist yet
    )
    resp = await client.post("/api/v1/inventory/bulk", content=body.encode(), headers={**org.headers, **CSV})
    assert resp.status_code == 200, resp.text
    summary = resp.json()
    assert (summary["received"], summary["applied"], summary["unchanged"], summary["failed"]) == (
        14,
        3,
        1,
        10,
    )
    assert [(e["line"], e["sku"], e["code"]) for e in summary["errors"]] == [
        (5, "GHOST", "UNKNOWN_SKU"),
        (6, "A", "UNKNOWN_WAREHOUSE"),
        (7, "C", "BELOW_RESERVED"),
        (8, "E", "INVALID_QUANTITY"),
        (9, "E", "INVALID_QUANTITY"),
        (10, "E", "INVALID_QUANTITY"),
        (11, "", "MISSING_FIELD"),
        (12, "D", "DUPLICATE_ROW"),
        (13, "D", "DUPLICATE_ROW"),
        (14, "E", "INVALID_MODE"),
    ]
    assert all(e["message"] for e in summary["errors"])
    levels = await levels_of(client, org)
    assert levels[("A", "W1")] == (25, 0)
    assert levels[("B", "W1")] == (7, 0)
    assert levels[("C", "W1")] == (8, 6)  # the refused row left it alone
    assert levels[("B", "W2")] == (2, 0)
    assert levels[("D", "W2")] == (4, 0)
    assert ("D", "W1") not in levels or levels[("D", "W1")] == (0, 0)
    await assert_inventory_consistent(admin_engine, org.id)
    async with admin_engine.connect() as conn:
        reasons = (
            await conn.execute(
                text("select count(*) from inventory_ledger where org_id = :o and reason = 'import'"),
                {"o": org.id},
            )
        ).scalar_one()
    assert reasons == 3  # A, B, B/W2: one audit row per applied change, none for unchanged or failed rows


async def test_json_and_multipart_uploads_use_the_same_rules(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 0, ("B", "W1"): 0})
    resp = await client.post(
        "/api/v1/inventory/bulk",
        json=[
            {"sku": "A", "quantity": 3, "warehouse_code": "W1"},
            {"sku": "B", "quantity": "3", "warehouse_code": "W1"},
            {"sku": "B", "quantity": True, "warehouse_code": "W1"},
            "nonsense",
        ],
        headers=org.headers,
    )
    summary = resp.json()
    assert (summary["received"], summary["applied"], summary["failed"]) == (4, 1, 3), summary
    files = {"file": ("stock.csv", b"sku,quantity,warehouse_code\nB,4,W1\nA,2,W1\n", "text/csv")}
    resp = await client.post(
        "/api/v1/inventory/bulk", params={"mode": "add"}, files=files, headers=org.headers
    )
    assert resp.json()["applied"] == 2
    assert await levels_of(client, org) == {("A", "W1"): (5, 0), ("B", "W1"): (4, 0)}


async def test_malformed_csv_is_a_400_naming_the_line(client, make_org) -> None:
    org = await make_org()
    headers = {**org.headers, **CSV}
    cases = {
        b"sku,qty,warehouse_code\nA,1,W1\n": 1,
        b"sku,quantity,warehouse_code\nA,1,W1\nB,2\n": 3,
        b'sku,quantity,warehouse_code\nA,1,W1\n"B,2,W1\n': 3,
        b"sku,quantity,warehouse_code\nA,1,W1\n\xff\xfe,1,W1\n": 3,
        b"": 1,
    }
    for body, line in cases.items():
        resp = await client.post("/api/v1/inventory/bulk", content=body, headers=headers)
        assert resp.status_code == 400, (body, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "MALFORMED_CSV" and error["details"]["line"] == line, (body, error)
        assert f"line {line}" in error["message"]
    assert (
        await client.post(
            "/api/v1/inventory/bulk",
            content=b"[1,",
            headers={**org.headers, "content-type": "application/json"},
        )
    ).status_code == 400
    assert (
        await client.post(
            "/api/v1/inventory/bulk", content=b"x", headers={**org.headers, "content-type": "image/png"}
        )
    ).status_code == 415


async def test_body_over_the_limit_is_413(client, make_org, settings) -> None:
    org = await make_org()
    body = b"sku,quantity,warehouse_code\n" + b"A,1,W1\n" * (settings.max_import_bytes // 7 + 1)
    resp = await client.post("/api/v1/inventory/bulk", content=body, headers={**org.headers, **CSV})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_one_hundred_thousand_rows_apply_correctly(client, make_org, admin_engine) -> None:
    org = await make_org()
    n_skus, whs = 50_000, ["W1", "W2"]
    async with admin_engine.begin() as conn:  # seed the catalogue directly: this test is about the import
        await conn.execute(
            text(
                "insert into skus (id, org_id, code, name, reorder_point, created_at) "
                "select gen_random_uuid(), :o, 'SKU' || lpad(g::text, 6, '0'), '', 0, now() from "
                "generate_series(1, :n) g"
            ),
            {"o": org.id, "n": n_skus},
        )
        for wh in whs:
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) values "
                    "(gen_random_uuid(), :o, :c, '', now())"
                ),
                {"o": org.id, "c": wh},
            )
    rows = [f"SKU{i:06d},{(i * 7) % 1000},{wh}" for i in range(1, n_skus + 1) for wh in whs]
    body = ("sku,quantity,warehouse_code\n" + "\n".join(rows) + "\n").encode()
    resp = await client.post(
        "/api/v1/inventory/bulk", content=body, headers={**org.headers, **CSV}, timeout=120
    )
    assert resp.status_code == 200, resp.text[:500]
    summary = resp.json()
    zero = sum(1 for i in range(1, n_skus + 1) if (i * 7) % 1000 == 0) * len(whs)
    assert (summary["received"], summary["failed"]) == (100_000, 0)
    assert summary["applied"] == 100_000 - zero and summary["unchanged"] == zero
    async with admin_engine.connect() as conn:
        total, count = (
            await conn.execute(
                text("select sum(on_hand), count(*) from inventory_levels where org_id = :o"), {"o": org.id}
            )
        ).one()
        ledger = (
            await conn.execute(
                text("select count(*), sum(on_hand_delta) from inventory_ledger where org_id = :o"),
                {"o": org.id},
            )
        ).one()
    assert count == 100_000 and total == sum((i * 7) % 1000 for i in range(1, n_skus + 1)) * len(whs)
    assert ledger == (100_000 - zero, total)
