from __future__ import annotations

import hashlib

from sqlalchemy import text

from tests.conftest import admin_scalar


async def test_tokens_are_stored_only_as_sha256_hashes(client, make_org, admin_engine) -> None:
    org = await make_org()
    resp = await client.post("/api/v1/tokens", json={"name": "ci", "role": "staff"}, headers=org.headers)
    assert resp.status_code == 201
    plaintext = resp.json()["token"]
    assert plaintext.startswith("rpt_") and len(plaintext) > 40
    async with admin_engine.connect() as conn:
        rows = (
            (await conn.execute(text("select * from api_tokens where org_id = :o"), {"o": org.id}))
            .mappings()
            .all()
        )
    stored = [str(v) for row in rows for v in row.values()]
    assert not any(plaintext in v or org.token in v for v in stored), "a plaintext token reached the database"
    assert hashlib.sha256(plaintext.encode()).hexdigest() in stored
    # The listing never shows a token again, only its prefix.
    listing = (await client.get("/api/v1/tokens", headers=org.headers)).text
    assert plaintext not in listing and plaintext[:10] in listing
    # And the new token works.
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"})
    assert me.status_code == 200 and me.json()["role"] == "staff"


async def test_missing_malformed_and_unknown_credentials_get_401_envelopes(client) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer rpt_nope"}):
        resp = await client.get("/api/v1/me", headers=headers)
        assert resp.status_code == 401
        error = resp.json()["error"]
        assert error["code"] == "UNAUTHORIZED" and error["request_id"] == resp.headers["x-request-id"]


async def test_revoked_token_stops_working(client, make_org) -> None:
    org = await make_org()
    issued = (
        await client.post("/api/v1/tokens", json={"name": "tmp", "role": "viewer"}, headers=org.headers)
    ).json()
    headers = {"Authorization": f"Bearer {issued['token']}"}
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    revoked = await client.post(f"/api/v1/tokens/{issued['details']['id']}/revoke", headers=org.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_expired_token_is_rejected(client, make_org, admin_engine) -> None:
    org = await make_org()
    issued = (
        await client.post(
            "/api/v1/tokens",
            json={"name": "soon", "role": "viewer", "expires_at": "2999-01-01T00:00:00Z"},
            headers=org.headers,
        )
    ).json()
    bearer = {"Authorization": f"Bearer {issued['token']}"}
    assert (await client.get("/api/v1/me", headers=bearer)).status_code == 200
    async with admin_engine.begin() as conn:  # time passes (the API refuses an expiry in the past)
        await conn.execute(
            text("update api_tokens set expires_at = now() - interval '1 minute' where id = :id"),
            {"id": issued["details"]["id"]},
        )
    resp = await client.get("/api/v1/me", headers=bearer)
    assert resp.status_code == 401


async def test_roles_map_to_permissions(client, make_org) -> None:
    org = await make_org()
    viewer = (
        await client.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}, headers=org.headers)
    ).json()
    vh = {"Authorization": f"Bearer {viewer['token']}"}
    me = (await client.get("/api/v1/me", headers=vh)).json()
    assert "inventory:read" in me["permissions"] and "inventory:write" not in me["permissions"]
    denied = await client.get("/api/v1/users", headers=vh)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "FORBIDDEN"
    assert "users:manage" in denied.json()["error"]["message"]


async def test_nobody_grants_a_role_above_their_own(client, make_org) -> None:
    org = await make_org()
    admin = (
        await client.post("/api/v1/tokens", json={"name": "a", "role": "admin"}, headers=org.headers)
    ).json()
    ah = {"Authorization": f"Bearer {admin['token']}"}
    resp = await client.post("/api/v1/tokens", json={"name": "escalate", "role": "owner"}, headers=ah)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ROLE_TOO_HIGH"
    assert resp.json()["error"]["message"] == "an admin cannot issue an owner token"
    resp = await client.post("/api/v1/users", json={"email": "boss@x.test", "role": "owner"}, headers=ah)
    assert resp.status_code == 403 and resp.json()["error"]["message"] == "an admin cannot create an owner"


async def test_users_are_created_with_argon2_hashes_and_duplicates_conflict(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    body = {"email": "Staff@Example.test", "role": "staff", "password": "a long enough password"}
    created = await client.post("/api/v1/users", json=body, headers=org.headers)
    assert created.status_code == 201 and created.json()["email"] == "staff@example.test"
    stored = await admin_scalar(
        admin_engine, "select password_hash from users where id = :i", i=created.json()["id"]
    )
    assert stored.startswith("$argon2id$")
    again = await client.post("/api/v1/users", json=body, headers=org.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "USER_EXISTS"


async def test_dashboard_login_sets_a_session_cookie_that_authenticates(client, make_org) -> None:
    org = await make_org()
    bad = await client.post(
        "/auth/login", json={"org_code": org.code, "email": org.owner_email, "password": "wrong password!"}
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "INVALID_CREDENTIALS"
    good = await client.post(
        "/auth/login", json={"org_code": org.code, "email": org.owner_email, "password": org.password}
    )
    assert good.status_code == 200
    cookie = good.cookies.get("rappit_session")
    assert cookie
    me = await client.get("/api/v1/me", headers={"Cookie": f"rappit_session={cookie}"})
    assert (
        me.status_code == 200 and me.json()["org_code"] == org.code and me.json()["actor"].startswith("user:")
    )
    await client.post("/auth/logout", headers={"Cookie": f"rappit_session={cookie}"})
    client.cookies.clear()
    assert (await client.get("/api/v1/me", headers={"Cookie": f"rappit_session={cookie}"})).status_code == 401


async def test_an_admin_cannot_revoke_an_owner_token(client, make_org) -> None:
    org = await make_org()
    admin = (
        await client.post("/api/v1/tokens", json={"name": "a", "role": "admin"}, headers=org.headers)
    ).json()
    owner_tokens = (await client.get("/api/v1/tokens", headers=org.headers)).json()
    bootstrap = next(t for t in owner_tokens if t["role"] == "owner")
    resp = await client.post(
        f"/api/v1/tokens/{bootstrap['id']}/revoke", headers={"Authorization": f"Bearer {admin['token']}"}
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ROLE_TOO_HIGH"
    assert resp.json()["error"]["message"] == "an admin cannot revoke an owner token"
    assert (await client.get("/api/v1/me", headers=org.headers)).status_code == 200
