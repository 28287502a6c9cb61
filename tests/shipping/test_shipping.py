"""Carrier accounts, rate shopping with breakers, label purchase, download and void, through the API."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.conftest import admin_scalar
from tests.shipping.conftest import (
    DE_FROM,
    FULL_CUSTOMS,
    PARCELS,
    US_FROM,
    US_TO,
    add_account,
    order_with_stock,
    shipment_body,
)


async def test_account_secrets_are_encrypted_and_the_callback_secret_is_shown_once(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    made = await add_account(client, org, "fedex", fake_fedex.url, name="FedEx main")
    secret = made["callback_secret"]
    assert len(secret) >= 32
    account_id = made["account"]["id"]
    listed = await client.get("/api/v1/carrier-accounts", headers=org.headers)
    shown = await client.get(f"/api/v1/carrier-accounts/{account_id}", headers=org.headers)
    for resp in (listed, shown):
        assert resp.status_code == 200
        assert (
            secret not in resp.text and "fedex-secret" not in resp.text and "callback_secret" not in resp.text
        )
    stored = await admin_scalar(
        admin_engine, "select credentials from carrier_accounts where id = :i", i=uuid.UUID(account_id)
    )
    assert b"fedex-secret" not in bytes(stored)
    refused = await client.post(
        "/api/v1/carrier-accounts",
        json={"carrier": "fedex", "name": "x", "credentials": {"client_id": "a"}, "account_number": "1"},
        headers=org.headers,
    )
    assert refused.status_code == 400 and "client_secret" in refused.json()["error"]["message"]
    disabled = await client.post(f"/api/v1/carrier-accounts/{account_id}/disable", headers=org.headers)
    assert disabled.json()["status"] == "disabled"


async def test_rates_list_an_account_with_an_open_breaker_as_unavailable_beside_the_others_quotes(
    client, make_org, stack, fake_fedex: FakeFedEx, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    fedex = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    dhl = (await add_account(client, org, "dhl_express", fake_dhl.api_url))["account"]
    order = await order_with_stock(client, org)
    board = BreakerBoard(stack.redis_url)  # another process's view: the state is shared through Redis
    try:
        board.for_account("dhl_express", dhl["id"]).cb.open()
    finally:
        board.close()
    body = {"order_id": order["id"], "ship_from": US_FROM, "ship_to": US_TO, "parcels": PARCELS}
    dhl_calls = len(fake_dhl.requests)
    resp = await client.post("/api/v1/shipments/rates", json=body, headers=org.headers)
    assert resp.status_code == 200, resp.text
    quotes = {q["account_id"]: q for q in resp.json()["quotes"]}
    assert quotes[fedex["id"]]["available"] is True
    assert {r["service"] for r in quotes[fedex["id"]]["rates"]} == {"FEDEX_GROUND", "FEDEX_2_DAY"}
    assert quotes[dhl["id"]]["available"] is False and quotes[dhl["id"]]["reason"] == "breaker_open"
    assert len(fake_dhl.requests) == dhl_calls  # nothing reached DHL
    breakers = await client.get("/api/v1/carriers/breakers", headers=org.headers)
    states = {b["account_id"]: b["state"] for b in breakers.json()}
    assert states == {fedex["id"]: "closed", dhl["id"]: "open"}


async def test_cross_border_shipment_with_missing_customs_is_422_naming_sku_and_field_before_any_call(
    client, make_org, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    await add_account(client, org, "dhl_express", fake_dhl.api_url)
    order = await order_with_stock(client, org)
    body = {"order_id": order["id"], "ship_from": DE_FROM, "ship_to": US_TO, "parcels": PARCELS}
    before = len(fake_dhl.requests)
    resp = await client.post(
        "/api/v1/shipments/rates",
        json={**body, "customs": {"skus": {"MUG": {"hs_code": "691200"}}}},
        headers=org.headers,
    )
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "CUSTOMS_INCOMPLETE"
    missing = {(m["sku"], m["field"]) for m in error["details"]["missing"]}
    assert {("MUG", "origin_country"), ("MUG", "weight")} <= missing
    assert len(fake_dhl.requests) == before
    full = await client.post(
        "/api/v1/shipments/rates", json={**body, "customs": FULL_CUSTOMS}, headers=org.headers
    )
    assert full.status_code == 200 and full.json()["quotes"][0]["available"] is True


async def test_buy_download_and_void_a_fedex_label(client, make_org, fake_fedex: FakeFedEx) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    key = {"Idempotency-Key": f"buy-{uuid.uuid4()}"}
    bought = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers={**org.headers, **key}
    )
    assert bought.status_code == 201, bought.text
    shipment = bought.json()
    assert shipment["status"] == "label_purchased" and shipment["cost_minor"] == 1234
    [sold] = fake_fedex.sold_for(shipment["id"])  # our shipment id is the carrier's reference
    assert sold.tracking_number == shipment["carrier_shipment_id"]
    again = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers={**org.headers, **key}
    )
    assert again.status_code == 200 and again.json()["id"] == shipment["id"]
    assert len(fake_fedex.labels) == 1  # the retry bought nothing
    label = await client.get(f"/api/v1/shipments/{shipment['id']}/label", headers=org.headers)
    assert label.headers["content-type"] == "application/pdf" and label.content.startswith(b"%PDF")
    listed = await client.get(
        "/api/v1/shipments",
        params={"order_id": order["id"], "status": "label_purchased"},
        headers=org.headers,
    )
    assert [s["id"] for s in listed.json()] == [shipment["id"]]
    voided = await client.post(f"/api/v1/shipments/{shipment['id']}/void", headers=org.headers)
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    assert fake_fedex.labels[sold.tracking_number].cancelled
    shown = (await client.get(f"/api/v1/shipments/{shipment['id']}", headers=org.headers)).json()
    assert [e["kind"] for e in shown["timeline"]] == ["created", "label_purchased", "voided_by_carrier"]
    twice = await client.post(f"/api/v1/shipments/{shipment['id']}/void", headers=org.headers)
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "INVALID_TRANSITION"
    assert twice.json()["error"]["details"] == {
        "shipment_id": shipment["id"],
        "from": "voided",
        "to": "voided",
    }


async def test_refused_void_leaves_the_label_purchased_and_returns_the_carriers_reason(
    client, make_org, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    shipment = (
        await client.post(
            "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
        )
    ).json()
    fake_fedex.faults.refuse_void = True
    refused = await client.post(f"/api/v1/shipments/{shipment['id']}/void", headers=org.headers)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "VOID_REFUSED"
    assert error["details"]["carrier_messages"][0]["code"] == "SHIPMENT.CANCELLATION.NOTALLOWED"
    shown = (await client.get(f"/api/v1/shipments/{shipment['id']}", headers=org.headers)).json()
    assert shown["shipment"]["status"] == "label_purchased"
    assert shown["timeline"][-1]["kind"] == "void_refused"


async def test_dhl_void_is_only_requested_never_shown_as_voided_by_the_carrier(
    client, make_org, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "dhl_express", fake_dhl.api_url))["account"]
    order = await order_with_stock(client, org)
    body = shipment_body(order["id"], account["id"], service="P", ship_from=DE_FROM, customs=FULL_CUSTOMS)
    bought = await client.post("/api/v1/shipments", json=body, headers=org.headers)
    assert bought.status_code == 201, bought.text
    shipment = bought.json()
    resp = await client.post(f"/api/v1/shipments/{shipment['id']}/void", headers=org.headers)
    assert resp.status_code == 200 and resp.json()["status"] == "void_requested"
    shown = (await client.get(f"/api/v1/shipments/{shipment['id']}", headers=org.headers)).json()
    kinds = [e["kind"] for e in shown["timeline"]]
    assert "voided_by_carrier" not in kinds and kinds[-1] == "carrier_cannot_void"
    assert "no shipment cancel" in shown["timeline"][-1]["detail"]["why"]


async def test_status_set_is_enforced_by_the_database(client, make_org, admin_engine, fake_fedex) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    shipment = (
        await client.post(
            "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
        )
    ).json()
    async with admin_engine.connect() as conn:
        try:
            await conn.execute(
                text("update shipments set status = 'lost' where id = :i"), {"i": uuid.UUID(shipment["id"])}
            )
        except Exception as exc:
            assert "ck_shipments_status_known" in str(exc)
        else:
            raise AssertionError("the database accepted an unknown status")


async def test_an_account_that_misses_the_rate_deadline_is_listed_unavailable(
    client, make_org, monkeypatch, fake_fedex: FakeFedEx, fake_dhl: FakeDhlExpress
) -> None:
    from rappit.shipping import saga

    monkeypatch.setattr(saga, "RATE_DEADLINE_SECONDS", 1.0)
    org = await make_org()
    fedex = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    dhl = (await add_account(client, org, "dhl_express", fake_dhl.api_url))["account"]
    order = await order_with_stock(client, org)
    fake_fedex.faults.hang = True
    body = {"order_id": order["id"], "ship_from": US_FROM, "ship_to": US_TO, "parcels": PARCELS}
    resp = await client.post("/api/v1/shipments/rates", json=body, headers=org.headers)
    assert resp.status_code == 200, resp.text
    quotes = {q["account_id"]: q for q in resp.json()["quotes"]}
    assert quotes[fedex["id"]]["available"] is False and quotes[fedex["id"]]["reason"] == "deadline"
    assert quotes[dhl["id"]]["available"] is True and quotes[dhl["id"]]["rates"]


async def test_customs_facts_stored_on_the_sku_are_used_and_a_missing_one_is_named(
    client, make_org, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    await add_account(client, org, "dhl_express", fake_dhl.api_url)
    sku = {"code": "MUG", "hs_code": "691200", "customs_value_minor": 900, "customs_currency": "EUR"}
    made = await client.post("/api/v1/skus", json=sku, headers=org.headers)
    assert made.status_code == 201 and made.json()["hs_code"] == "691200", made.text
    order = await order_with_stock(client, org)
    body = {
        "order_id": order["id"],
        "ship_from": DE_FROM,
        "ship_to": US_TO,
        "parcels": PARCELS,
        "customs": {"exporter_eori": "DE123456789012345"},
    }
    resp = await client.post("/api/v1/shipments/rates", json=body, headers=org.headers)
    assert resp.status_code == 422
    missing = {(m["sku"], m["field"]) for m in resp.json()["error"]["details"]["missing"]}
    assert missing == {("MUG", "origin_country"), ("MUG", "weight")}  # hs_code and value came from the SKU
    body["customs"]["skus"] = {"MUG": {"origin_country": "PT", "weight_grams": 350}}
    resp = await client.post("/api/v1/shipments/rates", json=body, headers=org.headers)
    assert resp.status_code == 200 and resp.json()["quotes"][0]["available"] is True
    half = await client.post(
        "/api/v1/skus", json={"code": "CUP", "customs_value_minor": 5}, headers=org.headers
    )
    assert half.status_code == 422 and half.json()["error"]["code"] == "CUSTOMS_VALUE_NEEDS_CURRENCY"


async def test_a_partial_quantity_of_one_sku_is_refused_before_any_carrier_call(
    client, make_org, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org, quantity=2)
    body = shipment_body(order["id"], account["id"], lines=[{"sku": "MUG", "quantity": 1}])
    resp = await client.post("/api/v1/shipments", json=body, headers=org.headers)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "PARTIAL_QUANTITY_NOT_SUPPORTED"
    assert fake_fedex.labels == {}
    assert (await client.get("/api/v1/shipments", headers=org.headers)).json() == []


async def test_the_account_that_bought_the_label_is_the_one_that_voids_it(
    client, make_org, fake_fedex: FakeFedEx
) -> None:
    """Two accounts of one carrier: the void goes through the buyer (the sandbox, as FedEx does, refuses
    a cancel from another account), never the org's first or any other account."""
    org = await make_org()
    await add_account(client, org, "fedex", fake_fedex.url, name="A other", number="600000001")
    buyer = (await add_account(client, org, "fedex", fake_fedex.url, name="B buyer"))["account"]
    order = await order_with_stock(client, org)
    bought = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], buyer["id"]), headers=org.headers
    )
    shipment = bought.json()
    assert fake_fedex.labels[shipment["carrier_shipment_id"]].account_number == "510087020"
    voided = await client.post(f"/api/v1/shipments/{shipment['id']}/void", headers=org.headers)
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    assert fake_fedex.labels[shipment["carrier_shipment_id"]].cancelled
