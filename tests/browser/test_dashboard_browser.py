"""The dashboard in a real Chromium, one scenario per test, each ending in a screenshot
(.artifacts/screenshots/<test name>.png). Setup goes through the JSON API (in process); everything the
scenario is about goes through the browser against the live server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import Page, expect

from rappit.integrations.carriers.breaker import BreakerBoard
from tests.dashboard.test_pages import add_user, on_hand, stock
from tests.orders.helpers import SECRET, send_shopify, shopify_channel, shopify_order
from tests.shipping.conftest import US_FROM, US_TO, add_account, order_with_stock


async def sign_in(page: Page, org, *, email: str | None = None, password: str | None = None) -> None:
    await page.goto("/dashboard/login")
    await page.get_by_label("Organization code").fill(org.code)
    await page.get_by_label("E-mail").fill(email or org.owner_email)
    await page.get_by_label("Password").fill(password or org.password)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_and_out(page: Page, make_org) -> None:
    org = await make_org()
    await sign_in(page, org)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.get_by_role("status").first).to_have_text(f"Signed in to {org.code} as owner.")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    await page.goto("/dashboard/orders/")
    await expect(page).to_have_url(re.compile(r"/dashboard/login\?next=%2Fdashboard%2Forders"))


async def test_a_wrong_password_is_refused_with_the_reason(page: Page, make_org) -> None:
    org = await make_org()
    await sign_in(page, org, password="not the password at all")
    await expect(page.get_by_role("alert")).to_have_text("wrong organization, e-mail or password")
    await expect(page.get_by_role("heading", name="Sign in to Rappit")).to_be_visible()


async def test_a_bulk_upload_shows_each_bad_line_and_its_reason(page: Page, client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(page, org)
    await page.get_by_role("link", name="Bulk import").click()
    await page.get_by_label("Stock CSV file").set_input_files(
        files=[
            {
                "name": "levels.csv",
                "mimeType": "text/csv",
                "buffer": b"sku,quantity,warehouse_code\nTEE-M,25,MAIN\nNOPE,3,MAIN\n",
            }
        ]
    )
    await page.get_by_role("button", name="Upload stock levels").click()
    await expect(page.get_by_test_id("applied")).to_have_text("1")
    rejected = page.get_by_test_id("rejected")
    await expect(rejected).to_contain_text("no SKU 'NOPE' in this organization")
    await expect(rejected.locator("tbody tr")).to_have_count(1)
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download the rejected lines as CSV").click()
    saved = await (await download.value).path()
    lines = (await asyncio.to_thread(Path(saved).read_text)).splitlines()
    assert lines[0] == "line,sku,field,code,message" and lines[1].startswith("3,NOPE,,UNKNOWN_SKU,")
    assert await on_hand(client, org) == 25


async def test_a_catalogue_upload_shows_the_bad_field_and_lists_the_import(
    page: Page, client, make_org
) -> None:
    org = await make_org()
    await sign_in(page, org)
    await page.goto("/dashboard/imports/")
    await page.get_by_label("Catalogue CSV file").set_input_files(
        files=[
            {
                "name": "catalogue.csv",
                "mimeType": "text/csv",
                "buffer": b"code,name,hs_code,country_of_origin,customs_value_minor,customs_currency\n"
                b"MUG-1,Mug,691200,PT,1250,EUR\nMUG-2,Mug two,691200,Portugal,1250,EUR\n",
            }
        ]
    )
    await page.get_by_role("button", name="Upload the catalogue").click()
    await expect(page.get_by_role("heading", name=re.compile("Import of catalogue"))).to_be_visible()
    await expect(page.get_by_test_id("applied")).to_have_text("1")
    row = page.get_by_test_id("rejected").locator("tbody tr")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("MUG-2")
    await expect(row).to_contain_text("country_of_origin")
    await page.get_by_role("link", name="Import another file").click()
    await expect(page.get_by_test_id("recent-imports").locator("tbody tr")).to_have_count(1)
    await expect(page.get_by_test_id("recent-imports")).to_contain_text("catalogue")


async def test_adjusting_stock_shows_the_ledger_row(page: Page, client, make_org) -> None:
    org = await make_org()
    await stock(client, org)
    await sign_in(page, org)
    await page.goto("/dashboard/inventory/?q=tee")
    await page.get_by_role("link", name="TEE-M").click()
    form = page.get_by_test_id("adjust-form")
    await form.get_by_label("Quantity").fill("-3")
    await form.get_by_label("Reason").select_option("adjust")
    await form.get_by_label("Note").fill("two torn in the stock room")
    await form.get_by_role("button", name="Apply").click()
    await expect(page.get_by_role("status").first).to_have_text("TEE-M at MAIN: on hand 10 → 7 (adjust).")
    newest = page.get_by_test_id("ledger").locator("tbody tr").first
    await expect(newest).to_contain_text("adjust: two torn in the stock room")
    await expect(newest).to_contain_text("10 → 7")
    await expect(newest).to_contain_text(org.owner_email)


async def test_holding_more_than_in_stock_shows_the_api_message(page: Page, client, make_org) -> None:
    org = await make_org()
    await stock(client, org, quantity=7)
    await sign_in(page, org)
    await page.goto("/dashboard/inventory/sku/TEE-M")
    form = page.get_by_test_id("hold-form")
    await form.get_by_label("Quantity").fill("100")
    await form.get_by_role("button", name="Hold").click()
    await expect(page.get_by_role("alert")).to_have_text("not enough stock for TEE-M (7 of 100)")


async def test_an_order_arriving_by_webhook_appears_on_the_overview_without_reload(
    page: Page, client, make_org
) -> None:
    org = await make_org()
    await stock(client, org, sku="A")
    channel = await shopify_channel(client, org)
    await sign_in(page, org)
    await expect(page.get_by_test_id("orders-today")).to_have_text("0")
    await page.evaluate("window.stillTheSamePage = true")
    assert (await send_shopify(client, channel, shopify_order(1001, [("A", 1)]))).status_code == 200
    await expect(page.get_by_test_id("latest-orders")).to_contain_text(f"{org.code}-S-000001")
    await expect(page.get_by_test_id("orders-today")).to_have_text("1")
    await expect(page.get_by_test_id("webhooks")).to_contain_text("Shop")
    assert await page.evaluate("window.stillTheSamePage") is True  # polled in, not reloaded
    assert SECRET  # the channel's signing secret the webhook was signed with


async def test_retrying_an_on_hold_order_after_receiving_stock_reserves_it(
    page: Page, client, make_org
) -> None:
    org = await make_org()
    await stock(client, org, quantity=1)
    made = await client.post(
        "/api/v1/orders",
        json={"currency": "USD", "lines": [{"sku": "TEE-M", "quantity": 3}]},
        headers=org.headers,
    )
    order = made.json()["order"]
    assert order["status"] == "on_hold", made.text
    await sign_in(page, org)
    await page.goto(f"/dashboard/orders/{order['id']}")
    await expect(page.get_by_test_id("order-status")).to_have_text("on_hold")
    await page.goto("/dashboard/inventory/")
    form = page.get_by_test_id("adjust-form")
    await form.get_by_label("SKU").fill("TEE-M")
    await form.get_by_label("Warehouse").fill("MAIN")
    await form.get_by_label("Quantity").fill("5")
    await form.get_by_role("button", name="Apply").click()
    await expect(page.get_by_role("status").first).to_contain_text("on hand 1 → 6 (receive)")
    await page.goto("/dashboard/orders/?status=on_hold")
    await page.get_by_role("link", name=order["number"]).click()
    await page.get_by_role("button", name="Retry reservation").click()
    await expect(page.get_by_test_id("order-status")).to_have_text("open")
    await expect(page.get_by_test_id("reservations")).to_contain_text("TEE-M")


async def fill_addresses(page: Page) -> None:
    for legend, address in (("Ship from", US_FROM), ("Ship to", US_TO)):
        group = page.get_by_role("group", name=legend)
        await group.get_by_label("Name").fill(address["name"])
        await group.get_by_label("Street").fill(address["street_lines"][0])
        await group.get_by_label("City").fill(address["city"])
        await group.get_by_label("Postal code").fill(address["postal_code"])
        await group.get_by_label("Country (2 letters)").fill(address["country_code"])
        await group.get_by_label("Phone").fill(address["phone"])
    await page.get_by_label("Parcel weight (grams)").fill("1500")


async def test_buy_a_label_download_it_and_void_it(page: Page, client, make_org, fake_fedex) -> None:
    org = await make_org()
    await add_account(client, org, "fedex", fake_fedex.url, name="FedEx main")
    order = await order_with_stock(client, org)
    await sign_in(page, org)
    await page.goto(f"/dashboard/orders/{order['id']}")
    await fill_addresses(page)
    await page.get_by_role("button", name="Get rates from every carrier").click()
    await expect(page.get_by_test_id("quotes")).to_contain_text("FedEx main")
    await page.get_by_test_id("quotes").get_by_role("button").first.click()
    await expect(page.get_by_role("status").first).to_contain_text("Label bought: fedex")
    await expect(page.get_by_test_id("shipment-status")).to_have_text("label_purchased")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download label").click()
    got = await download.value
    assert got.suggested_filename.endswith(".pdf")
    assert await asyncio.to_thread(Path(await got.path()).read_bytes)
    await page.get_by_role("button", name="Void label").click()
    await expect(page.get_by_role("status").first).to_have_text("Label voided.")
    await expect(page.get_by_test_id("shipment-status")).to_have_text("voided")


async def test_a_carrier_whose_breaker_is_open_is_shown_unavailable(
    page: Page, client, make_org, stack, fake_fedex, fake_dhl
) -> None:
    org = await make_org()
    await add_account(client, org, "fedex", fake_fedex.url, name="FedEx main")
    dhl = (await add_account(client, org, "dhl_express", fake_dhl.api_url, name="DHL express"))["account"]
    order = await order_with_stock(client, org)
    board = BreakerBoard(stack.redis_url)
    try:
        board.for_account("dhl_express", dhl["id"]).cb.open()
    finally:
        board.close()
    await sign_in(page, org)
    await page.goto(f"/dashboard/orders/{order['id']}")
    await fill_addresses(page)
    await page.get_by_role("button", name="Get rates from every carrier").click()
    unavailable = page.get_by_test_id("unavailable")
    await expect(unavailable).to_have_count(1)
    await expect(unavailable).to_contain_text("DHL express")
    await expect(unavailable).to_contain_text("breaker_open")
    await expect(page.get_by_test_id("quotes")).to_contain_text("FedEx main")
    await page.goto("/dashboard/carriers/")
    row = page.get_by_test_id("carrier-accounts").locator("tr", has_text="DHL express")
    await expect(row).to_contain_text("open")


async def test_retrying_a_dead_letter_queues_it_again(page: Page, client, make_org, admin_engine) -> None:
    from tests.conftest import admin_scalar

    org = await make_org()
    await stock(client, org, sku="A")
    channel = await shopify_channel(client, org)  # no Admin API token: an order edit cannot be applied
    await send_shopify(client, channel, shopify_order(99, [("A", 1)]))
    edit = {
        "order_edit": {
            "id": 1,
            "order_id": 99,
            "line_items": {"additions": [{"id": 9901, "delta": 2}], "removals": []},
        }
    }
    await send_shopify(client, channel, edit, topic="orders/edited")
    await sign_in(page, org)
    await expect(page.get_by_test_id("dead-letters")).to_have_text("1", timeout=30_000)
    await page.get_by_role("link", name="Dead letters waiting").click()
    table = page.get_by_test_id("dead-letters")
    await expect(table.locator("tbody tr")).to_have_count(1)
    await table.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.get_by_role("status").first).to_have_text("Retried 1 dead letter: queued again.")
    assert (
        await admin_scalar(
            admin_engine,
            "select count(*) from dead_letters where org_id = :o and status = 'retried'",
            o=org.id,
        )
        == 1
    )


async def test_a_viewer_sees_no_mutating_control_and_forged_posts_are_refused(
    page: Page, client, make_org
) -> None:
    org = await make_org()
    await stock(client, org)
    email, password = await add_user(client, org, "viewer")
    await sign_in(page, org, email=email, password=password)
    await expect(page.get_by_test_id("role")).to_have_text("viewer")
    for path in (
        "/dashboard/inventory/sku/TEE-M",
        "/dashboard/team/",
        "/dashboard/channels/",
        "/dashboard/jobs/",
    ):
        await page.goto(path)
        await expect(page.locator("form[method=post]:not([action='/dashboard/logout'])")).to_have_count(0)
    token = await page.locator("input[name=_csrf_token]").first.input_value()
    body = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": "5", "mode": "delta", "reason": "receive"}
    forged = await page.request.post("/dashboard/inventory/adjust", form={**body, "_csrf_token": token})
    assert forged.status == 403 and "lacks: inventory:write" in await forged.text()
    no_token = await page.request.post("/dashboard/inventory/adjust", form=body)
    assert no_token.status == 403 and "CSRF" in await no_token.text()
    assert await on_hand(client, org) == 10
