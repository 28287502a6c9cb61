"""Cancelling an order with shipments: bought labels voided by a job (retried, dead-lettered when the
carrier refuses), reservations released, an order in transit refused with a 409 naming the shipment."""

from __future__ import annotations

import asyncio
import uuid

from httpx import Response

from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.platform.db import provide_session
from rappit.shipping import cancellation
from rappit.tenancy.context import Actor, org_context
from tests.conftest import client_for
from tests.inventory.helpers import assert_inventory_consistent
from tests.shipping.conftest import DE_FROM, FULL_CUSTOMS, add_account, order_with_stock, shipment_body
from tests.shipping.helpers import bought_label, commit_rows, enqueue, rows, run_worker


async def status_of(client, org, shipment_id: str) -> str:
    return (await client.get(f"/api/v1/shipments/{shipment_id}", headers=org.headers)).json()["shipment"][
        "status"
    ]


async def dead_letters(admin_engine, org_id) -> list:
    return await rows(
        admin_engine, "select kind, ref_id, attempts, error from dead_letters where org_id = :o", o=org_id
    )


async def test_cancel_with_a_bought_label_voids_it_at_the_carrier_and_releases_the_stock(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex, on_hand=10, quantity=4)
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=org.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["order"]["status"] == "cancelled"
    assert {r["status"] for r in body["reservations"]} == {"released"}
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(10, 0)]
    early = await client.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)
    assert (early.status_code, early.json()["error"]["code"]) == (409, "ORDER_CANCELLED")
    await run_worker(settings)
    assert await status_of(client, org, shipment["id"]) == "voided"
    [label] = fake_fedex.sold_for(shipment["id"])
    assert label.cancelled  # voided at the carrier, through the account that bought it
    assert await dead_letters(admin_engine, org.id) == []
    # A cancelled order neither ships nor buys another label.
    again = await client.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)
    assert again.status_code == 409
    account_id = shipment["carrier_account_id"]
    buy = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account_id), headers=org.headers
    )
    assert (buy.status_code, buy.json()["error"]["code"]) == (422, "ORDER_CANCELLED")


async def test_cancel_with_a_dhl_label_marks_it_void_requested(
    client, make_org, settings, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "dhl_express", fake_dhl.api_url))["account"]
    order = await order_with_stock(client, org)
    body = shipment_body(order["id"], account["id"], service="P", ship_from=DE_FROM, customs=FULL_CUSTOMS)
    shipment = (await client.post("/api/v1/shipments", json=body, headers=org.headers)).json()
    assert (await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=org.headers)).status_code == 200
    await run_worker(settings)
    assert await status_of(client, org, shipment["id"]) == "void_requested"  # DHL has no void


async def test_an_order_with_a_shipment_in_transit_cannot_be_cancelled(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex, on_hand=10, quantity=2)
    assert (
        await client.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)
    ).status_code == 200
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=org.headers)
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == "ORDER_SHIPPED" and shipment["id"] in error["message"]
    assert [s["id"] for s in error["details"]["shipments"]] == [shipment["id"]]
    shown = (await client.get(f"/api/v1/orders/{order['id']}", headers=org.headers)).json()
    assert shown["order"]["status"] == "open"
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(8, 0)]


async def test_a_cancel_racing_hand_overs_either_ships_or_cancels_never_both(
    app, client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    """Hand-over and cancel lock the order in the same order: a cancelled order never ships (its stock
    was released) and a shipped order is never cancelled."""
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex, on_hand=10, quantity=2)

    async def call(path: str) -> int:
        async with client_for(app) as c:
            return (await c.post(path, headers=org.headers)).status_code

    ships = [call(f"/api/v1/shipments/{shipment['id']}/ship") for _ in range(4)]
    cancels = [call(f"/api/v1/orders/{order['id']}/cancel") for _ in range(2)]
    statuses = await asyncio.gather(*ships, *cancels)
    shipped, cancelled = statuses[:4].count(200), statuses[4:].count(200)
    assert (shipped, cancelled) in ((1, 0), (0, 2)), statuses
    levels = list((await assert_inventory_consistent(admin_engine, org.id)).values())
    assert levels == ([(8, 0)] if shipped else [(10, 0)])
    assert len(await commit_rows(admin_engine, org.id)) == shipped
    await run_worker(settings)  # a cancelled order's label is voided (nothing left for later tests' sweeps)
    assert await status_of(client, org, shipment["id"]) == ("in_transit" if shipped else "voided")


async def test_a_hand_over_waiting_on_a_cancel_in_progress_is_refused_once_it_commits(
    app, client, make_org, settings, sessionmaker, admin_engine, fake_fedex: FakeFedEx
) -> None:
    """The cancel holds the order (and its shipments) until it commits; a hand-over arriving meanwhile
    waits for the order, then finds it cancelled: 409, nothing committed, the stock released."""
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex, on_hand=10, quantity=2)

    async def hand_over() -> Response:
        async with client_for(app) as c:
            return await c.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)

    with org_context(org.id, Actor(kind="user", id="test")):
        async with provide_session(sessionmaker) as session:
            await cancellation.cancel_order(session, uuid.UUID(order["id"]))
            waiting = asyncio.create_task(hand_over())
            await asyncio.sleep(0.5)  # let it reach the locks; the outcome does not depend on it
    resp = await waiting
    assert (resp.status_code, resp.json()["error"]["code"]) == (409, "ORDER_CANCELLED")
    assert await commit_rows(admin_engine, org.id) == []
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(10, 0)]
    # The service alone enqueues nothing (the route does, after the commit): the sweeper finds the label.
    await enqueue(settings, "sweep_cancelled_labels")
    await run_worker(settings)
    assert await status_of(client, org, shipment["id"]) == "voided"


async def test_a_void_the_carrier_refuses_is_retried_then_dead_lettered(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex)
    fake_fedex.faults.refuse_void = True
    assert (await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=org.headers)).status_code == 200
    await run_worker(settings, label_void_attempts=3)
    assert await status_of(client, org, shipment["id"]) == "label_purchased"  # never voided unconfirmed
    [letter] = await dead_letters(admin_engine, org.id)
    assert (letter.kind, str(letter.ref_id), letter.attempts) == ("label_void", shipment["id"], 3)
    assert "SHIPMENT.CANCELLATION.NOTALLOWED" in letter.error
    timeline = (await client.get(f"/api/v1/shipments/{shipment['id']}", headers=org.headers)).json()[
        "timeline"
    ]
    kinds = [e["kind"] for e in timeline]
    assert kinds.count("void_refused") == 3 and kinds[-1] == "void_dead_lettered"
    # The sweeper leaves a dead-lettered label alone (an operator voids it by hand).
    await enqueue(settings, "sweep_cancelled_labels")
    await run_worker(settings, label_void_attempts=3)
    assert [
        e["kind"]
        for e in (await client.get(f"/api/v1/shipments/{shipment['id']}", headers=org.headers)).json()[
            "timeline"
        ]
    ].count("void_refused") == 3


async def test_the_sweeper_voids_a_cancelled_orders_label_whose_job_was_lost(
    client, make_org, settings, redis, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    _, _, order, shipment = await bought_label(client, org, fake_fedex)
    assert (await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=org.headers)).status_code == 200
    await redis.flushdb()  # the void job is lost with Redis
    await enqueue(settings, "sweep_cancelled_labels")
    await run_worker(settings)
    assert await status_of(client, org, shipment["id"]) == "voided"
    assert all(label.cancelled for label in fake_fedex.sold_for(shipment["id"]))
