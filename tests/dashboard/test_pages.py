"""Server-side rules of the dashboard, through the in-process client: sign-in, CSRF, roles, idle timeout,
and that pages show what the services hold (with the services' own messages on failure)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import time
import uuid

from rappit.inventory import imports
from rappit.platform.db import provide_session
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.login import SEEN_KEY
from rappit.tenancy.sessions import SESSION_COOKIE
from tests.conftest import admin_scalar
from tests.dashboard.helpers import page_token, post_form, sign_in
from tests.inventory.test_import_jobs import run_worker


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


async def upload(client, kind: str, body: bytes, **fields: str):
    """Send a CSV through the bulk-import page's form, as the browser does."""
    token = await page_token(client, "/dashboard/imports/")
    return await client.post(
        f"/dashboard/imports/{kind}",
        data={"_csrf_token": token, **fields},
        files={"file": (f"{kind}.csv", body, "text/csv")},
        headers={"Referer": "http://testserver/dashboard/imports/"},
    )


def rejected_rows(page: str) -> list[str]:
    table = html.unescape(page).split('data-testid="rejected"')[1].split("</table>")[0]
    return re.findall(r"<tr><td class=\"num\">.*?</tr>", table)


async def test_a_stock_upload_lists_each_rejected_line_with_its_reason_and_offers_them_as_csv(
    client, make_org
) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    body = b"sku,quantity,warehouse_code\nTEE-M,25,MAIN\nNOPE,3,MAIN\nTEE-M,x,MAIN\n"
    response = await upload(client, "stock", body, mode="set")
    assert response.status_code == 303, response.text
    import_id = re.fullmatch(r"/dashboard/imports/([0-9a-f-]{36})", response.headers["location"]).group(1)
    page = (await client.get(response.headers["location"])).text
    assert re.search(r'data-testid="applied">1<', page) and re.search(r'data-testid="failed">2<', page)
    assert await on_hand(client, org) == 25
    # The page shows the service's own record of this import: its reasons, line by line ...
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert shown["status"] == "done" and [e["line"] for e in shown["rejected"]] == [3, 4]
    rows = rejected_rows(page)
    assert len(rows) == 2
    for row, error in zip(rows, shown["rejected"], strict=True):
        assert f'<td class="num">{error["line"]}</td><td>{error["sku"]}</td>' in row
        assert f"<td>{error['message']}</td><td>{error['code']}</td>" in row
    assert "no SKU 'NOPE' in this organization" in rows[0]
    # ... and its rejected-lines CSV, byte for byte the API's.
    csv_link = re.search(r'href="(/dashboard/imports/[0-9a-f-]+/rejected.csv)"', page).group(1)
    rejected = await client.get(csv_link)
    assert rejected.status_code == 200 and rejected.headers["content-type"].startswith("text/csv")
    api_csv = await client.get(f"/api/v1/imports/{import_id}/rejected.csv", headers=org.headers)
    assert rejected.text == api_csv.text
    assert rejected.text.splitlines()[0] == "line,sku,field,code,message"
    assert [ln.split(",")[:2] for ln in rejected.text.splitlines()[1:]] == [["3", "NOPE"], ["4", "TEE-M"]]
    # Listed among the recent imports, linked to its page.
    recent = (await client.get("/dashboard/imports/")).text.split('data-testid="recent-imports"')[1]
    assert f'href="/dashboard/imports/{import_id}"' in recent and "stock levels" in recent
    # A file that cannot be read at all comes back to the form with the service's message, unrecorded.
    unreadable = await upload(client, "stock", b"sku,qty\nTEE-M,1\n")
    assert unreadable.status_code == 303 and unreadable.headers["location"] == "/dashboard/imports/"
    assert notices((await client.get("/dashboard/imports/")).text) == [
        "line 1: header must be sku,quantity,warehouse_code[,mode]; got sku,qty"
    ]
    assert len((await client.get("/api/v1/imports", headers=org.headers)).json()) == 1


async def test_a_catalogue_upload_upserts_skus_with_customs_fields_and_shows_the_bad_field(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    await sign_in(client, org)
    body = (
        b"code,name,reorder_point,hs_code,country_of_origin,customs_value_minor,customs_currency,weight_grams\n"
        b"MUG-1,Mug,4,691200,PT,1250,EUR,350\n"
        b"MUG-2,Mug two,1,12AB,PT,,,\n"
    )
    response = await upload(client, "skus", body)
    assert response.status_code == 303, response.text
    import_id = response.headers["location"].rsplit("/", 1)[1]
    page = (await client.get(response.headers["location"])).text
    assert "Import of catalogue" in page
    assert re.search(r'data-testid="applied">1<', page) and re.search(r'data-testid="failed">1<', page)
    rows = rejected_rows(page)
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    [error] = shown["rejected"]
    assert (error["line"], error["sku"], error["field"]) == (3, "MUG-2", "hs_code")
    assert rows == [
        f'<tr><td class="num">3</td><td>MUG-2</td><td>hs_code</td><td>{error["message"]}</td>'
        f"<td>{error['code']}</td></tr>"
    ]
    stored = await admin_scalar(
        admin_engine,
        "select array[name, reorder_point::text, hs_code, country_of_origin, customs_value_minor::text, "
        "customs_currency, weight_grams::text] from skus where org_id = :o and code = 'MUG-1'",
        o=org.id,
    )
    assert stored == ["Mug", "4", "691200", "PT", "1250", "EUR", "350"]
    assert (
        await admin_scalar(
            admin_engine, "select count(*) from skus where org_id = :o and code = 'MUG-2'", o=org.id
        )
        == 0
    )
    rejected = await client.get(f"/dashboard/imports/{import_id}/rejected.csv")
    assert rejected.text.splitlines()[1].startswith("3,MUG-2,hs_code,")


async def test_a_file_over_the_threshold_runs_as_a_job_whose_progress_the_page_polls(
    client, make_org, app, settings, sessionmaker, redis, monkeypatch
) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(client, org)
    # The API's own threshold setting, lowered so that a small file is job-sized.
    monkeypatch.setattr(
        app.state, "settings", dataclasses.replace(app.state.settings, import_job_threshold_bytes=50)
    )
    body = b"sku,quantity,warehouse_code\nTEE-M,30,MAIN\nNOPE,3,MAIN\nTEE-M,-1,MAIN\n"
    small = b"sku,quantity,warehouse_code\nTEE-M,11,MAIN\n"
    assert len(small) <= 50 < len(body)
    assert (await upload(client, "stock", small)).status_code == 303
    assert await on_hand(client, org) == 11  # under the threshold: applied in the request
    response = await upload(client, "stock", body)
    assert response.status_code == 303
    location = response.headers["location"]
    import_id = uuid.UUID(location.rsplit("/", 1)[1])
    assert await on_hand(client, org) == 11  # stored for its job, nothing applied yet
    assert await redis.exists(f"arq:job:import:{import_id}")  # enqueued once the row was committed
    page = (await client.get(location)).text
    assert f'hx-get="/dashboard/imports/{import_id}/progress"' in page and 'hx-trigger="every 1s"' in page
    assert "Waiting for a worker to start the import (3 lines)" in page
    # The job's gauge, as its first progress write sets it, is what the poll shows.
    with org_context(org.id, Actor(kind="system", id="import")):
        async with provide_session(sessionmaker) as session:
            assert await imports.start_attempt(session, import_id) is not None
        await imports.write_progress(sessionmaker, import_id, 2)
    sid = client.cookies.get(SESSION_COOKIE)
    key = next(k for k in await redis.keys("*") if sid in k.decode())
    stored = json.loads(await redis.get(key))
    stored[SEEN_KEY] = seen = int(time.time()) - 600
    await redis.set(key, json.dumps(stored).encode(), keepttl=True)
    poll = await client.get(f"{location}/progress", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and "HX-Refresh" not in poll.headers
    assert json.loads(await redis.get(key))[SEEN_KEY] == seen  # a poll is not activity
    assert "Importing: 2 of 3 lines read" in poll.text and '<progress max="3" value="2">' in poll.text
    await run_worker(settings)
    poll = await client.get(f"{location}/progress", headers={"HX-Request": "true"})
    assert poll.headers["HX-Refresh"] == "true"  # done: the page reloads to show the outcome
    page = (await client.get(location)).text
    assert re.search(r'data-testid="applied">1<', page) and re.search(r'data-testid="failed">2<', page)
    assert "hx-get" not in page.split("<main")[-1]
    assert [r.split("</td><td>")[1] for r in rejected_rows(page)] == ["NOPE", "TEE-M"]
    assert await on_hand(client, org) == 30
    rejected = await client.get(f"{location}/rejected.csv")
    assert [ln.split(",")[0] for ln in rejected.text.splitlines()[1:]] == ["3", "4"]


async def test_a_viewer_cannot_upload_either_kind(client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    email, password = await add_user(client, org, "viewer")
    await sign_in(client, org, email=email, password=password)
    page = (await client.get("/dashboard/imports/")).text
    assert 'type="file"' not in page and "Recent imports" in page
    for kind, body in (
        ("stock", b"sku,quantity,warehouse_code\nTEE-M,99,MAIN\n"),
        ("skus", b"code\nNEW-1\n"),
    ):
        refused = await upload(client, kind, body)
        assert refused.status_code == 403 and "lacks: inventory:write" in html.unescape(refused.text), kind
    assert await on_hand(client, org) == 10
    imports_seen = await client.get("/api/v1/imports", headers=org.headers)
    assert imports_seen.json() == []


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
