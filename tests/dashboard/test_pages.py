"""Server-side rules of the dashboard, through the in-process client: sign-in, CSRF, roles, idle timeout,
and that pages show what the services hold (with the services' own messages on failure)."""

from __future__ import annotations

import html
import json
import re
import time

from rappit.tenancy.login import SEEN_KEY
from rappit.tenancy.sessions import SESSION_COOKIE
from tests.dashboard.helpers import page_token, post_form, sign_in


async def stock(client, org, sku: str = "TEE-M", quantity: int = 10, warehouse: str = "MAIN") -> None:
    for path, body in (
        ("/api/v1/skus", {"code": sku, "reorder_point": 2}),
        ("/api/v1/warehouses", {"code": warehouse}),
    ):
        r = await client.post(path, json=body, headers=org.headers)
        assert r.status_code in (201, 409), r.text
    r = await client.post(
        "/api/v1/inventory/adjust",
        json={
            "sku": sku,
            "warehouse_code": warehouse,
            "quantity": quantity,
            "mode": "delta",
            "reason": "receive",
        },
        headers=org.headers,
    )
    assert r.status_code == 200, r.text


async def add_user(client, org, role: str) -> tuple[str, str]:
    email, password = f"{role}@{org.code.lower()}.test", "a long enough password"
    r = await client.post(
        "/api/v1/users", json={"email": email, "role": role, "password": password}, headers=org.headers
    )
    assert r.status_code == 201, r.text
    return email, password


async def on_hand(client, org, sku: str = "TEE-M") -> int:
    r = await client.get(f"/api/v1/inventory?sku={sku}", headers=org.headers)
    return r.json()["items"][0]["on_hand"]


def notices(page: str) -> list[str]:
    return [
        html.unescape(m) for m in re.findall(r'<div class="notice [a-z]+" role="\w+">([^<]*)</div>', page)
    ]


async def test_sign_in_opens_the_overview_and_sign_out_closes_it(client, make_org) -> None:
    org = await make_org()
    response = await sign_in(client, org)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/"
    overview = await client.get("/dashboard/")
    assert overview.status_code == 200 and "Orders today" in overview.text
    assert f"Signed in to {org.code} as owner." in notices(overview.text)
    out = await post_form(client, "/dashboard/", "/dashboard/logout", {})
    assert out.status_code == 303
    again = await client.get("/dashboard/")
    assert again.status_code == 303 and again.headers["location"].startswith("/dashboard/login")


async def test_a_wrong_password_shows_the_api_message_and_signs_nobody_in(client, make_org) -> None:
    org = await make_org()
    response = await sign_in(client, org, password="not the password at all")
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    login = await client.get("/dashboard/login")
    assert notices(login.text) == ["wrong organization, e-mail or password"]
    assert (await client.get("/dashboard/")).status_code == 303


async def test_a_post_without_the_csrf_token_is_refused(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    body = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": "5", "mode": "delta", "reason": "receive"}
    refused = await client.post("/dashboard/inventory/adjust", data=body)
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = await client.post("/dashboard/inventory/adjust", data={**body, "_csrf_token": "forged.token"})
    assert forged.status_code == 403
    assert await on_hand(client, org) == 10
    accepted = await post_form(client, "/dashboard/inventory/", "/dashboard/inventory/adjust", body)
    assert accepted.status_code == 303
    assert await on_hand(client, org) == 15


async def test_a_viewer_sees_no_mutating_control_and_the_server_refuses_one_anyway(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    email, password = await add_user(client, org, "viewer")
    await sign_in(client, org, email=email, password=password)
    page = await client.get("/dashboard/inventory/sku/TEE-M")
    assert page.status_code == 200 and "Ledger" in page.text
    assert 'method="post"' not in page.text.replace('action="/dashboard/logout"', "").split("Sign out")[-1]
    assert "adjust-form" not in page.text and "hold-form" not in page.text
    body = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": "5", "mode": "delta", "reason": "receive"}
    forged = await post_form(client, "/dashboard/inventory/sku/TEE-M", "/dashboard/inventory/adjust", body)
    assert forged.status_code == 403 and "lacks: inventory:write" in html.unescape(forged.text)
    assert await on_hand(client, org) == 10


async def test_an_idle_session_is_signed_out_and_polling_does_not_keep_it_alive(
    client, make_org, redis
) -> None:
    org = await make_org()
    await sign_in(client, org)
    sid = client.cookies.get(SESSION_COOKIE)
    key = next(k for k in await redis.keys("*") if sid in k.decode())
    stored = json.loads(await redis.get(key))

    async def last_seen(seconds_ago: int) -> None:
        stored[SEEN_KEY] = int(time.time()) - seconds_ago
        await redis.set(key, json.dumps(stored).encode(), keepttl=True)

    await last_seen(29 * 60)
    assert (await client.get("/dashboard/overview/live")).status_code == 200  # a poll: served ...
    assert json.loads(await redis.get(key))[SEEN_KEY] == stored[SEEN_KEY]  # ... but not counted as use
    await last_seen(31 * 60)
    response = await client.get("/dashboard/inventory/")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Finventory&reason=idle"
    assert await redis.get(key) is None  # the server forgot the session
    login = await client.get(response.headers["location"])
    assert "signed out after 30 minutes without activity" in login.text
    poll = await client.get("/dashboard/overview/live", headers={"HX-Request": "true"})
    assert poll.headers["HX-Redirect"].startswith("/dashboard/login")


async def test_adjusting_stock_writes_a_ledger_row_with_who_and_why(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    body = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": "-3", "mode": "delta", "reason": "adjust",
            "note": "two torn in the stock room"}  # fmt: skip
    done = await post_form(client, "/dashboard/inventory/sku/TEE-M", "/dashboard/inventory/adjust", body)
    assert done.status_code == 303 and done.headers["location"] == "/dashboard/inventory/sku/TEE-M"
    page = (await client.get(done.headers["location"])).text
    assert "TEE-M at MAIN: on hand 10 → 7 (adjust)." in notices(page)
    ledger = page.split('data-testid="ledger"')[1]
    first_row = ledger.split("<tr>")[2]
    assert "adjust: two torn in the stock room" in first_row and "10 → 7" in first_row
    assert org.owner_email in first_row
    assert "<polyline" in page  # the on-hand/reserved chart from the ledger


async def test_holding_more_than_is_in_stock_shows_the_api_message(client, make_org) -> None:
    org = await make_org()
    await stock(client, org, quantity=7)
    await sign_in(client, org)
    body = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": "100"}
    refused = await post_form(client, "/dashboard/inventory/sku/TEE-M", "/dashboard/inventory/hold", body)
    assert refused.status_code == 303 and refused.headers["location"] == "/dashboard/inventory/sku/TEE-M"
    api = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": 100}]},
        headers=org.headers,
    )
    message = api.json()["error"]["message"]
    assert message == "not enough stock for TEE-M (7 of 100)"
    assert message in notices((await client.get(refused.headers["location"])).text)


async def test_orders_page_by_keyset_shows_every_order_once(client, make_org) -> None:
    org = await make_org()
    await stock(client, org, quantity=100)
    for _ in range(30):
        r = await client.post(
            "/api/v1/orders",
            json={"currency": "USD", "lines": [{"sku": "TEE-M", "quantity": 1}]},
            headers=org.headers,
        )
        assert r.status_code == 201, r.text
    await sign_in(client, org)
    seen: list[str] = []
    url = "/dashboard/orders/"
    for _ in range(5):  # 30 orders are two pages; a cursor that goes nowhere must not loop forever
        if not url:
            break
        page = (await client.get(url)).text
        seen += re.findall(rf">({org.code}-M-\d+)</a>", page)
        nxt = re.search(r'<a href="(\?[^"]*after=[^"]+)">Next page</a>', page)
        url = "/dashboard/orders/" + html.unescape(nxt.group(1)) if nxt else ""
    assert len(seen) == 30 and len(set(seen)) == 30
    assert seen == sorted(seen, reverse=True)


async def test_order_page_shows_what_the_api_detail_holds(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    r = await client.post(
        "/api/v1/orders",
        json={"currency": "USD", "lines": [{"sku": "TEE-M", "quantity": 2}]},
        headers=org.headers,
    )
    detail = r.json()
    await sign_in(client, org)
    page = (await client.get(f"/dashboard/orders/{detail['order']['id']}")).text
    reservations = page.split('data-testid="reservations"')[1].split("</table>")[0]
    for res in detail["reservations"]:
        assert (
            f'<td>{res["sku"]}</td><td>{res["warehouse_code"]}</td><td class="num">{res["quantity"]}</td>'
            in (reservations)
        )
    for event in detail["timeline"]:
        assert f"<strong>{event['kind']}</strong>" in page
    await page_token(client, f"/dashboard/orders/{detail['order']['id']}")


PAGES = [
    "/dashboard/",
    "/dashboard/orders/",
    "/dashboard/inventory/",
    "/dashboard/inventory/sku/TEE-M",
    "/dashboard/imports/",
    "/dashboard/channels/",
    "/dashboard/carriers/",
    "/dashboard/jobs/",
    "/dashboard/team/",
]


def mutating_forms(page: str) -> list[str]:
    """Every form that POSTs, except signing out."""
    return [f for f in re.findall(r'<form method="post" action="([^"]+)"', page) if f != "/dashboard/logout"]


async def test_every_page_renders_and_a_viewer_gets_no_mutating_form_on_any(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    for path in PAGES:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert mutating_forms(page.text) or path in ("/dashboard/", "/dashboard/orders/"), path
    client.cookies.clear()
    email, password = await add_user(client, org, "viewer")
    await sign_in(client, org, email=email, password=password)
    for path in PAGES:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert mutating_forms(page.text) == [], path


async def test_a_bulk_upload_lists_each_rejected_line_with_its_reason_and_offers_them_as_csv(
    client, make_org
) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    token = await page_token(client, "/dashboard/imports/")
    body = b"sku,quantity,warehouse_code\nTEE-M,25,MAIN\nNOPE,3,MAIN\nTEE-M,x,MAIN\n"
    response = await client.post(
        "/dashboard/imports/stock",
        data={"_csrf_token": token, "mode": "set"},
        files={"file": ("levels.csv", body, "text/csv")},
    )
    assert response.status_code == 303, response.text
    page = (await client.get(response.headers["location"])).text
    assert re.search(r'data-testid="applied">1<', page) and re.search(r'data-testid="failed">2<', page)
    api = await client.post(
        "/api/v1/inventory/bulk", content=body, headers={**org.headers, "Content-Type": "text/csv"}
    )
    for error in api.json()["errors"]:  # the API's own reasons, line by line
        assert f'<td class="num">{error["line"]}</td><td>{error["message"]}</td>' in html.unescape(page)
    csv_link = re.search(r'href="(/dashboard/imports/[0-9a-f]+/rejected.csv)"', page).group(1)
    rejected = await client.get(csv_link)
    assert rejected.headers["content-type"].startswith("text/csv")
    lines = rejected.text.splitlines()
    assert lines[0] == "line,error_code,error_message,sku,quantity,warehouse_code"
    assert [ln.split(",")[0] for ln in lines[1:]] == ["3", "4"]
    assert lines[1].endswith("NOPE,3,MAIN") and lines[2].endswith("TEE-M,x,MAIN")
    assert await on_hand(client, org) == 25


async def test_a_channel_secret_and_a_new_token_are_shown_once(client, make_org) -> None:
    org = await make_org()
    await sign_in(client, org)
    made = await post_form(
        client,
        "/dashboard/channels/",
        "/dashboard/channels/",
        {"type": "shopify", "name": "Shop", "address": f"{org.code.lower()}.myshopify.com"},
    )
    assert made.status_code == 201
    secret = re.findall(r'<dd class="secret">([^<]+)</dd>', made.text)
    assert secret[0].startswith("http://") and "/webhooks/shopify/" in secret[0] and len(secret[1]) >= 32
    channel_id = secret[0].rsplit("/", 1)[1]
    page = (await client.get(f"/dashboard/channels/{channel_id}")).text
    assert secret[1] not in page and secret[0] in page
    issued = await post_form(
        client, "/dashboard/team/", "/dashboard/team/tokens", {"name": "erp", "role": "staff"}
    )
    token = re.findall(r'<dd class="secret">([^<]+)</dd>', issued.text)[0]
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    team = (await client.get("/dashboard/team/")).text
    assert token not in team
    erp_row = next(row for row in team.split("<tr>") if row.startswith("<td>erp</td>"))
    token_id = re.search(r'action="/dashboard/team/tokens/([0-9a-f-]+)/revoke"', erp_row).group(1)
    revoked = await post_form(client, "/dashboard/team/", f"/dashboard/team/tokens/{token_id}/revoke", {})
    assert revoked.status_code == 303
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401


async def test_sign_in_only_returns_to_a_dashboard_page(client, make_org) -> None:
    org = await make_org()
    token = await page_token(client)
    form = {"_csrf_token": token, "org_code": org.code, "email": org.owner_email, "password": org.password}
    for target, expected in (
        ("/dashboard/orders/", "/dashboard/orders/"),
        ("//evil.example/dashboard/", "/dashboard/"),
        ("https://evil.example/", "/dashboard/"),
        ("/dashboard/\\\\evil.example", "/dashboard/"),
    ):
        response = await client.post("/dashboard/login", data={**form, "next": target})
        assert response.status_code == 303 and response.headers["location"] == expected, target
