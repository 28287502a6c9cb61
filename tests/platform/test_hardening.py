"""Inputs the database cannot store, and other edges a reviewer found: always a 4xx, never a 500."""

from __future__ import annotations

from tests.inventory.helpers import setup_stock


async def test_nul_bytes_and_huge_numbers_are_client_errors(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    nul_note = await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "A", "warehouse_code": "W1", "quantity": 1, "note": "a\x00b"},
        headers=org.headers,
    )
    assert nul_note.status_code == 400 and nul_note.json()["error"]["code"] == "INVALID_TEXT"
    nul_login = await client.post(
        "/auth/login", json={"org_code": "XX", "email": "a\x00@b.c", "password": "x"}
    )
    assert nul_login.status_code in (400, 401)
    big = await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "A", "warehouse_code": "W1", "quantity": 1_000_000_000},
        headers=org.headers,
    )
    assert big.status_code == 200
    over = await client.post(
        "/api/v1/inventory/adjust",
        json={"sku": "A", "warehouse_code": "W1", "quantity": 1_000_000_000},
        headers=org.headers,
    )
    assert over.status_code == 422 and over.json()["error"]["code"] == "NUMBER_OUT_OF_RANGE"
    lines = [{"sku": "A", "warehouse_code": "W1", "quantity": 1_000_000_000}] * 3
    huge = await client.post("/api/v1/reservations", json={"lines": lines}, headers=org.headers)
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "INVALID_QUANTITY"
    bulk = await client.post(
        "/api/v1/inventory/bulk",
        content=b"sku,quantity,warehouse_code,mode\nA,999999999,W1,add\nA\x00,1,W1,\n",
        headers={**org.headers, "content-type": "text/csv"},
    )
    assert bulk.status_code == 200
    assert [e["code"] for e in bulk.json()["errors"]] == ["NUMBER_OUT_OF_RANGE", "INVALID_TEXT"]
    assert (
        await client.post("/api/v1/skus", json={"code": "bad\x7fcode"}, headers=org.headers)
    ).status_code == 400


async def test_listing_totals_count_only_the_callers_org(client, make_org) -> None:
    a, b = await make_org(), await make_org()
    await setup_stock(client, a, {("SAME", "W1"): 1})
    await setup_stock(client, b, {("SAME", "W1"): 1})
    page = (
        await client.get("/api/v1/inventory", params={"sku": "SAME", "offset": 0}, headers=a.headers)
    ).json()
    assert page["total"] == 1 and len(page["items"]) == 1


async def test_multipart_import_with_an_idempotency_key_replays(client, make_org) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 0})
    # A retrying client resends the same bytes (httpx would pick a new multipart boundary each time).
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nsku,quantity,warehouse_code\nA,4,W1\n\r\n--XyZ--\r\n"
    )
    headers = {
        **org.headers,
        "Idempotency-Key": "upload-1",
        "content-type": "multipart/form-data; boundary=XyZ",
    }
    first = await client.post("/api/v1/inventory/bulk", content=body, headers=headers)
    again = await client.post("/api/v1/inventory/bulk", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["applied"] == 1
    assert (
        again.headers.get("idempotent-replayed") == "true"
        and again.json()["import_id"] == first.json()["import_id"]
    )
    assert "set-cookie" not in first.headers  # token calls get no session cookie


async def test_login_issues_a_fresh_session_id_not_a_planted_one(client, make_org) -> None:
    org = await make_org()
    planted = "a" * 64
    resp = await client.post(
        "/auth/login",
        json={"org_code": org.code, "email": org.owner_email, "password": org.password},
        headers={"Cookie": f"rappit_session={planted}"},
    )
    assert resp.status_code == 200
    fresh = resp.cookies.get("rappit_session")
    assert fresh and fresh != planted
    client.cookies.clear()
    assert (
        await client.get("/api/v1/me", headers={"Cookie": f"rappit_session={planted}"})
    ).status_code == 401
    assert (await client.get("/api/v1/me", headers={"Cookie": f"rappit_session={fresh}"})).status_code == 200


async def test_offset_limit_and_before_id_beyond_int64_are_400s(client, make_org) -> None:
    org = await make_org()
    huge = str(2**63)
    for path, params in (
        ("/api/v1/skus", {"offset": huge}),
        ("/api/v1/skus", {"limit": huge}),
        ("/api/v1/inventory", {"offset": str(2**70)}),
        ("/api/v1/inventory/A/ledger", {"before_id": huge}),
    ):
        resp = await client.get(path, params=params, headers=org.headers)
        assert resp.status_code == 400, (path, params, resp.text)
        assert resp.json()["error"]["code"] == "VALIDATION_ERROR"
    ok = await client.get("/api/v1/skus", params={"offset": str(2**63 - 1)}, headers=org.headers)
    assert ok.status_code == 200 and ok.json() == []


async def test_a_token_that_expired_before_it_was_made_is_a_400(client, make_org) -> None:
    org = await make_org()
    resp = await client.post(
        "/api/v1/tokens",
        json={"name": "old", "role": "viewer", "expires_at": "2000-01-01T00:00:00Z"},
        headers=org.headers,
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "INVALID_EXPIRY" and "2000-01-01" in error["message"]
    future = await client.post(
        "/api/v1/tokens",
        json={"name": "new", "role": "viewer", "expires_at": "2999-01-01T00:00:00Z"},
        headers=org.headers,
    )
    assert future.status_code == 201, future.text


async def test_a_bulk_upload_with_an_unknown_mode_names_the_value_and_the_allowed_ones(
    client, make_org
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 1})
    resp = await client.post(
        "/api/v1/inventory/bulk",
        files={"file": ("s.csv", b"sku,quantity,warehouse_code\nA,4,W1\n", "text/csv")},
        data={"mode": "nuke"},
        headers=org.headers,
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "INVALID_MODE"
    assert "'nuke'" in error["message"] and "set" in error["message"] and "add" in error["message"]
    assert "None" not in error["message"]
