"""POST /api/v1/skus/bulk: upsert the catalogue by code, one line-numbered error per bad field."""

from __future__ import annotations

from sqlalchemy import text

CSV = {"content-type": "text/csv"}
HEADER = (
    "code,name,reorder_point,hs_code,country_of_origin,customs_value_minor,customs_currency,weight_grams\n"
)


async def skus_of(admin_engine, org_id) -> dict:
    async with admin_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "select code, name, reorder_point, hs_code, country_of_origin, customs_value_minor, "
                "customs_currency, weight_grams from skus where org_id = :o"
            ),
            {"o": org_id},
        )
        return {r[0]: tuple(r[1:]) for r in rows}


async def test_every_bad_field_is_its_own_line_numbered_error_and_good_rows_apply(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    body = (
        HEADER
        + (
            "OK-1,Shirt,5,610910,PT,1250,EUR,180\n"  # 2 fine
            "OK-2,,,,,,,\n"  # 3 fine: only a code
            "bad/code,x,1,,,,,\n"  # 4 code with a slash
            "NAME-LONG," + "n" * 301 + ",1,,,,,\n"  # 5 name over 300
            "RP,x,-1,,,,,\n"  # 6 negative reorder point
            "HS,x,1,12AB,,,,\n"  # 7 hs_code not digits
            "CO,x,1,,pt,,,\n"  # 8 country lower case
            "CV,x,1,,,0,EUR,\n"  # 9 customs value 0
            "CC,x,1,,,100,euro,\n"  # 10 currency not ISO
            "WG,x,1,,,,,0\n"  # 11 weight 0
            "WG2,x,1,,,,,10000001\n"  # 12 weight over the limit
            "PAIR,x,1,,,100,,\n"  # 13 value without currency
            "MANY,x,abc,1,XYZ,,,\n"  # 14 three bad fields on one line
            ",x,1,,,,,\n"  # 15 missing code
            "DUP,a,1,,,,,\n"  # 16 duplicate of 17
            "DUP,b,1,,,,,\n"  # 17
        )
    )
    resp = await client.post("/api/v1/skus/bulk", content=body.encode(), headers={**org.headers, **CSV})
    assert resp.status_code == 200, resp.text
    summary = resp.json()
    assert (summary["received"], summary["created"], summary["applied"], summary["failed"]) == (16, 2, 2, 14)
    got = [(e["line"], e["field"], e["code"]) for e in summary["errors"]]
    assert got == [
        (4, "code", "INVALID_CODE"),
        (5, "name", "INVALID_NAME"),
        (6, "reorder_point", "INVALID_REORDER_POINT"),
        (7, "hs_code", "INVALID_HS_CODE"),
        (8, "country_of_origin", "INVALID_COUNTRY_OF_ORIGIN"),
        (9, "customs_value_minor", "INVALID_CUSTOMS_VALUE"),
        (10, "customs_currency", "INVALID_CUSTOMS_CURRENCY"),
        (11, "weight_grams", "INVALID_WEIGHT"),
        (12, "weight_grams", "INVALID_WEIGHT"),
        (13, "customs_currency", "CUSTOMS_VALUE_NEEDS_CURRENCY"),
        (14, "reorder_point", "INVALID_REORDER_POINT"),
        (14, "hs_code", "INVALID_HS_CODE"),
        (14, "country_of_origin", "INVALID_COUNTRY_OF_ORIGIN"),
        (15, "code", "MISSING_FIELD"),
        (16, "code", "DUPLICATE_ROW"),
        (17, "code", "DUPLICATE_ROW"),
    ]
    assert all(e["message"] for e in summary["errors"])
    assert "17" in summary["errors"][-2]["message"]
    assert await skus_of(admin_engine, org.id) == {
        "OK-1": ("Shirt", 5, "610910", "PT", 1250, "EUR", 180),
        "OK-2": ("", 0, None, None, None, None, None),
    }
    # The rejected lines as CSV, for the merchant to fix and resend.
    rejected = await client.get(f"/api/v1/imports/{summary['import_id']}/rejected.csv", headers=org.headers)
    assert rejected.status_code == 200 and rejected.headers["content-type"].startswith("text/csv")
    lines = rejected.text.splitlines()
    assert lines[0] == "line,sku,field,code,message" and len(lines) == 1 + 16
    assert lines[1].startswith("4,bad/code,code,INVALID_CODE,")


async def test_upsert_updates_existing_skus_and_keeps_columns_the_file_leaves_out(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    made = await client.post(
        "/api/v1/skus",
        json={"code": "TEE", "name": "Tee", "reorder_point": 3, "hs_code": "610910", "weight_grams": 200},
        headers=org.headers,
    )
    assert made.status_code == 201
    await client.post("/api/v1/skus", json={"code": "MUG", "name": "Mug"}, headers=org.headers)
    # No name column: names stay. Empty hs_code clears it. MUG changes nothing. CAP is new.
    body = (
        "code,reorder_point,hs_code,customs_value_minor,customs_currency\n"
        "TEE,7,,900,USD\n"
        "MUG,0,,,\n"
        "CAP,2,650500,,\n"
    )
    resp = await client.post("/api/v1/skus/bulk", content=body.encode(), headers={**org.headers, **CSV})
    summary = resp.json()
    assert resp.status_code == 200, summary
    assert (summary["created"], summary["updated"], summary["unchanged"], summary["failed"]) == (1, 1, 1, 0)
    skus = await skus_of(admin_engine, org.id)
    assert skus["TEE"] == ("Tee", 7, None, None, 900, "USD", 200)
    assert skus["MUG"] == ("Mug", 0, None, None, None, None, None)
    assert skus["CAP"] == ("", 2, "650500", None, None, None, None)
    # JSON: a key left out keeps the value, null clears it, and the same rules apply (typed values).
    resp = await client.post(
        "/api/v1/skus/bulk",
        json=[
            {"code": "TEE", "weight_grams": None, "country_of_origin": "BD"},
            {"code": "CAP", "reorder_point": "3"},
            {"code": "MUG", "colour": "red"},
        ],
        headers=org.headers,
    )
    summary = resp.json()
    assert (summary["updated"], summary["failed"]) == (1, 2), summary
    assert [(e["line"], e["code"]) for e in summary["errors"]] == [
        (2, "INVALID_REORDER_POINT"),
        (3, "UNKNOWN_FIELD"),
    ]
    skus = await skus_of(admin_engine, org.id)
    assert skus["TEE"] == ("Tee", 7, None, "BD", 900, "USD", None)
    # The single-SKU routes see the same rows.
    listed = (await client.get("/api/v1/skus", headers=org.headers)).json()
    assert {s["code"] for s in listed} == {"TEE", "MUG", "CAP"}


async def test_multipart_upload_and_malformed_files(client, make_org) -> None:
    org = await make_org()
    files = {"file": ("skus.csv", b"code,name\nA,Alpha\nB,Beta\n", "text/csv")}
    resp = await client.post("/api/v1/skus/bulk", files=files, headers=org.headers)
    assert resp.status_code == 200 and resp.json()["created"] == 2, resp.text
    cases = {
        b"name\nA\n": 1,  # no code column
        b"code,colour\nA,red\n": 1,  # unknown column
        b"code,customs_value_minor\nA,100\n": 1,  # value column without its currency column
        b"code,name\nA,x\nB\n": 3,
        b"code,name\nA,x\n\xff,y\n": 3,
    }
    for body, line in cases.items():
        resp = await client.post("/api/v1/skus/bulk", content=body, headers={**org.headers, **CSV})
        assert resp.status_code == 400, (body, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "MALFORMED_CSV" and error["details"]["line"] == line, (body, error)


async def test_idempotency_key_replays_the_summary_and_applies_once(client, make_org, admin_engine) -> None:
    org = await make_org()
    headers = {**org.headers, **CSV, "Idempotency-Key": "catalogue-1"}
    body = b"code,name\nA,Alpha\nB,Beta\n"
    first = await client.post("/api/v1/skus/bulk", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["created"] == 2
    again = await client.post("/api/v1/skus/bulk", content=body, headers=headers)
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    other = await client.post("/api/v1/skus/bulk", content=b"code\nC\n", headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert set(await skus_of(admin_engine, org.id)) == {"A", "B"}


async def test_viewer_cannot_import(client, make_org) -> None:
    org = await make_org()
    made = await client.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}, headers=org.headers)
    viewer = {"Authorization": f"Bearer {made.json()['token']}"}
    resp = await client.post("/api/v1/skus/bulk", content=b"code\nA\n", headers={**viewer, **CSV})
    assert resp.status_code == 403
    assert (await client.get("/api/v1/imports", headers=viewer)).status_code == 200


def test_the_csv_fast_path_agrees_with_the_full_check_row_by_row() -> None:
    """The CSV reader takes a cheap happy path first; on every row below it must give what the general
    per-field check gives (the same row, or the same errors)."""
    from rappit.inventory import sku_bulk

    columns = HEADER.strip().split(",")
    records = [
        ["A", "n", "1", "610910", "PT", "5", "EUR", "10"],
        [" A2 ", " spaced ", " 2 ", " 6109100 ", " DE ", " 7 ", " USD ", " 3 "],
        ["B", "", "", "", "", "", "", ""],
        ["C", "n", "١٢", "", "", "", "", ""],  # Arabic-Indic digits are not a number here
        ["D", "n", "1", "61091", "", "", "", ""],
        ["E", "n", "1", "", "pt", "", "", ""],
        ["F", "n", "1", "", "ÄB", "", "", ""],
        ["G", "n", "1", "", "", "5", "", ""],
        ["H", "n", "1", "", "", "", "EUR", ""],
        ["I", "n", "1", "", "", "0", "EUR", ""],
        ["J", "n", "1", "", "", "5", "eur", ""],
        ["K", "n", "2147483648", "", "", "", "", ""],
        ["L", "n", "1", "", "", "9223372036854775807", "EUR", "10000000"],
        ["M", "n", "1", "", "", "", "", "10000001"],
        ["bad/code", "n", "1", "", "", "", "", ""],
        ["x" * 101, "n", "1", "", "", "", "", ""],
        ["N", "n" * 301, "1", "", "", "", "", ""],
        ["O\x7f", "n", "1", "", "", "", "", ""],
    ]
    fast = sku_bulk._fast_row(columns)
    for i, record in enumerate(records, start=2):
        full = sku_bulk.ParsedSkus()
        sku_bulk._row(full, i, dict(zip(columns, record, strict=True)), True)
        quick = fast(i, record)
        if quick is not None:
            assert full.rows == [quick] and not full.errors, record
        else:  # the fast path declined: parse_csv then reports the full check's errors
            assert full.errors or full.rows, record
        body = (HEADER + ",".join(f'"{v}"' for v in record) + "\n").encode()
        parsed = sku_bulk.parse_csv(body)
        again = sku_bulk.ParsedSkus()
        sku_bulk._row(again, 2, dict(zip(columns, record, strict=True)), True)
        assert (parsed.rows, parsed.errors) == (again.rows, again.errors), record


TRICKY_SKU_ROWS = [
    "S1,Shirt,5,610910,PT,1250,EUR,200",
    "S2, padded name ,,,,,,",
    "S3,n,007,,,,,",
    "S4,n,1,12345,,,,",
    "S5,n,1,,pt,,,",
    "S6,n,1,,,5,,",
    "S7,n,1,,,0,EUR,",
    "S8,n,1,,,,,10000001",
    "S9,n,2147483648,,,,,",
    "bad/code,n,,,,,,",
    ",n,,,,,,",
    "Ünï,n,,,,,,",
    "S10,n,,,,,,",
    "S10,m,,,,,,",
    " S11,n,,,,,,",
    "S12,n,,,,0005,EUR,1",
    "S13,,,,,,EUR,",
    "S14,Žluť,2147483647,0123456789,DE,9223372036854775807,USD,10000000",
    "EXIST,renamed,,,,,,",
]


async def test_a_plain_file_is_copied_and_checked_in_sql_with_the_python_rules_results(
    client, make_org, admin_engine, monkeypatch
) -> None:
    from rappit.inventory import bulk

    copies: list[str] = []
    real_copy = bulk.copy_file

    async def counting(raw, table, file, seen):
        copies.append(table)
        return await real_copy(raw, table, file, seen)

    monkeypatch.setattr(bulk, "copy_file", counting)
    plain = (HEADER + "\n".join(TRICKY_SKU_ROWS) + "\n").encode()
    quoted = plain.replace(b"\nS1,", b'\n"S1",', 1)
    assert bulk.copyable(plain) is not None and bulk.copyable(quoted) is None
    results = []
    for body in (plain, quoted):
        org = await make_org()
        made = await client.post(
            "/api/v1/skus", json={"code": "EXIST", "name": "old", "reorder_point": 4}, headers=org.headers
        )
        assert made.status_code == 201, made.text
        before = len(copies)
        resp = await client.post("/api/v1/skus/bulk", content=body, headers={**org.headers, **CSV})
        assert resp.status_code == 200, resp.text
        summary = {k: v for k, v in resp.json().items() if k != "import_id"}
        results.append((summary, await skus_of(admin_engine, org.id), len(copies) - before))
    (copied, copied_skus, copy_calls), (python, python_skus, python_calls) = results
    assert (copy_calls, python_calls) == (1, 0)
    assert copied == python and copied_skus == python_skus
    assert [(e["line"], e["code"]) for e in copied["errors"]] == [
        (5, "INVALID_HS_CODE"),
        (6, "INVALID_COUNTRY_OF_ORIGIN"),
        (7, "CUSTOMS_VALUE_NEEDS_CURRENCY"),
        (8, "INVALID_CUSTOMS_VALUE"),
        (9, "INVALID_WEIGHT"),
        (10, "INVALID_REORDER_POINT"),
        (11, "INVALID_CODE"),
        (12, "MISSING_FIELD"),
        (14, "DUPLICATE_ROW"),
        (15, "DUPLICATE_ROW"),
        (18, "CUSTOMS_VALUE_NEEDS_CURRENCY"),
    ]
    assert copied_skus["S2"][:2] == ("padded name", 0) and copied_skus["S3"][1] == 7
    assert copied_skus["S12"][4:] == (5, "EUR", 1) and copied_skus["S11"][0] == "n"
    assert copied_skus["Ünï"][0] == "n" and copied_skus["EXIST"][:2] == ("renamed", 0)
    assert (copied["created"], copied["updated"]) == (7, 1)
