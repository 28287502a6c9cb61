"""Shipping tests: the app in process, the carrier sandboxes on loopback, an order with reserved stock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.inventory.helpers import setup_stock

US_FROM = {
    "name": "Ann Shipper",
    "company": "Acme",
    "street_lines": ["1 Dock St"],
    "city": "Memphis",
    "postal_code": "38118",
    "country_code": "US",
    "phone": "9015550100",
}
US_TO = {
    "name": "Bo Buyer",
    "street_lines": ["2 Main St"],
    "city": "Austin",
    "postal_code": "78701",
    "country_code": "US",
    "phone": "5125550100",
}
DE_FROM = {**US_FROM, "city": "Hamburg", "postal_code": "20457", "country_code": "DE", "phone": "+494055501"}
PARCELS = [{"weight_grams": 1500, "length_cm": 30, "width_cm": 20, "height_cm": 10}]
FULL_CUSTOMS = {
    "skus": {"MUG": {"hs_code": "691200", "origin_country": "PT", "weight_grams": 350}},
    "exporter_eori": "DE123456789012345",
}


@pytest.fixture
def fake_fedex() -> Iterator[FakeFedEx]:
    fake = FakeFedEx().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_dhl() -> Iterator[FakeDhlExpress]:
    fake = FakeDhlExpress().start()
    yield fake
    fake.stop()


async def add_account(
    client: Any, org: Any, carrier: str, base_url: str, name: str | None = None, number: str | None = None
) -> dict:
    creds = (
        {"client_id": "fedex-client", "client_secret": "fedex-secret"}
        if carrier == "fedex"
        else {"username": "dhl-user", "password": "dhl-pass"}
    )
    resp = await client.post(
        "/api/v1/carrier-accounts",
        json={
            "carrier": carrier,
            "name": name or f"{carrier}-{uuid.uuid4().hex[:6]}",
            "credentials": creds,
            "account_number": number or ("510087020" if carrier == "fedex" else "123456789"),
            "base_url": base_url,
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def order_with_stock(client: Any, org: Any, *, on_hand: int = 10, quantity: int = 2) -> dict:
    """A manual order for `quantity` MUGs, reserved from warehouse WH1 (stocked with `on_hand`)."""
    await setup_stock(client, org, {("MUG", "WH1"): on_hand})
    resp = await client.post(
        "/api/v1/orders",
        json={
            "currency": "USD",
            "lines": [{"sku": "MUG", "quantity": quantity, "unit_price_minor": 1200, "title": "Mug"}],
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return body.get("order", body)


def shipment_body(order_id: str, account_id: str, service: str = "FEDEX_GROUND", **extra: Any) -> dict:
    return {
        "order_id": order_id,
        "carrier_account_id": account_id,
        "service": service,
        "ship_from": US_FROM,
        "ship_to": US_TO,
        "parcels": PARCELS,
        **extra,
    }
