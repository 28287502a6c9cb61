"""An order that changes after its label was bought (found by the chaos soak, seed 993011): the hand-over
commits exactly the units the parcel carries, and a later channel update never reserves again what
already shipped. Before, `ship()` committed every active reservation of the shipment's SKUs (an order
raised from 3 to 6 after the label: 6 units left on a 3-unit parcel) and `_update` compared the new
lines with active reservations only (each update after a shipment reserved the shipped units again)."""

from __future__ import annotations

from typing import Any

from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.inventory.helpers import assert_inventory_consistent, setup_stock
from tests.ops.test_verify import admin_exec, verify_api
from tests.orders.helpers import run_worker, send_shopify, shopify_channel, shopify_order
from tests.shipping.conftest import add_account, shipment_body


async def _order_from_shop(client, org, settings, channel, lines, *, minutes: int) -> dict:
    topic = "orders/create" if minutes == 0 else "orders/updated"
    resp = await send_shopify(client, channel, shopify_order(7001, lines, minutes=minutes), topic=topic)
    assert resp.status_code == 200, resp.text
    await run_worker(settings)
    listed = await client.get("/api/v1/orders", headers=org.headers)
    [order] = listed.json()["items"]
    detail = await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)
    assert detail.status_code == 200, detail.text
    return detail.json()


def _active(detail: dict) -> int:
    return sum(r["quantity"] for r in detail["reservations"] if r["status"] == "active")


async def _state(admin_engine, org, shipment_id: str) -> tuple[int, int, int]:
    """(on_hand, reserved) of MUG in WH1, and the units the commit ledger rows naming the shipment took."""
    [(on_hand, reserved)] = await admin_exec(
        admin_engine,
        """select v.on_hand, v.reserved from inventory_levels v join skus s on s.id = v.sku_id
            where v.org_id = :o and s.code = 'MUG'""",
        o=org.id,
    )
    [(took,)] = await admin_exec(
        admin_engine,
        """select coalesce(-sum(on_hand_delta), 0) from inventory_ledger
            where org_id = :o and reason = 'commit' and reference_type = 'shipment' and reference_id = :s""",
        o=org.id,
        s=shipment_id,
    )
    return on_hand, reserved, int(took)


async def _label(client, org, fake: FakeFedEx, order_id: str) -> dict[str, Any]:
    made = await add_account(client, org, "fedex", fake.url)
    resp = await client.post(
        "/api/v1/shipments", json=shipment_body(order_id, made["account"]["id"]), headers=org.headers
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _labelled_order(client, make_org, settings, fake: FakeFedEx, *, on_hand: int):
    """An org with `on_hand` MUGs in WH1, a Shopify order for 3 of them, and a label bought for it."""
    org = await make_org()
    await setup_stock(client, org, {("MUG", "WH1"): on_hand})
    channel = await shopify_channel(client, org, warehouse="WH1")
    order = await _order_from_shop(client, org, settings, channel, [("MUG", 3)], minutes=0)
    return org, channel, await _label(client, org, fake, order["order"]["id"])


async def _verified_clean(client, org, admin_engine) -> None:
    report = await verify_api(client, org)
    assert report["findings"] == [], report["findings"]
    await assert_inventory_consistent(admin_engine, org.id)


async def test_an_order_raised_after_its_label_ships_the_labels_units_and_keeps_the_rest_reserved(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org, channel, label = await _labelled_order(client, make_org, settings, fake_fedex, on_hand=10)
    assert label["lines"] == [{"sku": "MUG", "quantity": 3}]
    raised = await _order_from_shop(client, org, settings, channel, [("MUG", 5)], minutes=1)
    assert _active(raised) == 5  # 3, then 2 more: two reservations

    shipped = await client.post(f"/api/v1/shipments/{label['id']}/ship", headers=org.headers)
    assert shipped.status_code == 200, shipped.text
    assert await _state(admin_engine, org, label["id"]) == (7, 2, 3)  # 3 left; 2 still held
    await _verified_clean(client, org, admin_engine)

    # The shop touches the order again without changing it: nothing is reserved again.
    again = await _order_from_shop(client, org, settings, channel, [("MUG", 5)], minutes=2)
    assert _active(again) == 2
    assert await _state(admin_engine, org, label["id"]) == (7, 2, 3)
    await _verified_clean(client, org, admin_engine)

    # Raised once more: only the new unit is reserved; lowered below what shipped: nothing is held.
    assert _active(await _order_from_shop(client, org, settings, channel, [("MUG", 6)], minutes=3)) == 3
    assert _active(await _order_from_shop(client, org, settings, channel, [("MUG", 2)], minutes=4)) == 0
    assert await _state(admin_engine, org, label["id"]) == (7, 0, 3)
    await _verified_clean(client, org, admin_engine)


async def test_an_order_lowered_after_its_label_ships_the_labels_units_from_free_stock(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org, channel, label = await _labelled_order(client, make_org, settings, fake_fedex, on_hand=10)
    assert _active(await _order_from_shop(client, org, settings, channel, [("MUG", 1)], minutes=1)) == 1

    shipped = await client.post(f"/api/v1/shipments/{label['id']}/ship", headers=org.headers)
    assert shipped.status_code == 200, shipped.text
    # The parcel carries 3: the 1 reserved and 2 free units leave, each on a ledger row naming it.
    assert await _state(admin_engine, org, label["id"]) == (7, 0, 3)
    await _verified_clean(client, org, admin_engine)


async def test_a_parcel_carrying_more_than_free_stock_is_refused_and_changes_nothing(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org, channel, label = await _labelled_order(client, make_org, settings, fake_fedex, on_hand=3)
    assert _active(await _order_from_shop(client, org, settings, channel, [("MUG", 1)], minutes=1)) == 1
    held = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "MUG", "warehouse_code": "WH1", "quantity": 2}], "reference": "other"},
        headers=org.headers,
    )
    assert held.status_code == 201, held.text  # the 2 freed units now belong to someone else

    refused = await client.post(f"/api/v1/shipments/{label['id']}/ship", headers=org.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "INSUFFICIENT_STOCK"
    assert await _state(admin_engine, org, label["id"]) == (3, 3, 0)  # nothing half-written
    detail = await client.get(f"/api/v1/shipments/{label['id']}", headers=org.headers)
    assert detail.json()["shipment"]["status"] == "label_purchased"
