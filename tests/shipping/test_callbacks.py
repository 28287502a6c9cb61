"""Carrier callbacks end to end: signed ingress into a durable inbox (stored once per carrier event id,
answered after commit), a real arq worker moving the shipment through `ship()` (stock committed once),
unknown shipments ignored, refusals storing nothing, failures retried then dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from rappit.app.factory import create_app
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.shipping import service
from tests.conftest import client_for, start_app, stop_app
from tests.inventory.helpers import assert_inventory_consistent
from tests.platform.test_ratelimit import clear_of_window_edge
from tests.shipping.conftest import add_account, order_with_stock, shipment_body
from tests.shipping.helpers import (
    bought_label,
    callback_rows,
    commit_rows,
    enqueue,
    fedex_event,
    rows,
    run_worker,
    send_callback,
)


async def shown(client, org, shipment_id: str) -> dict:
    resp = await client.get(f"/api/v1/shipments/{shipment_id}", headers=org.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_signed_callback_is_stored_once_and_moves_the_shipment_in_transit(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    event = fedex_event(shipment["tracking_numbers"][0], "PU", event_id="fx-1")
    first = await send_callback(client, account["id"], secret, event)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "accepted"
    # Stored before the answer: the row is there (committed) when the 200 arrives.
    [row] = await callback_rows(admin_engine, org.id)
    assert (row.carrier_event_id, row.status) == ("fx-1", "pending")
    again = await send_callback(client, account["id"], secret, event)  # the carrier's redelivery
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(await callback_rows(admin_engine, org.id)) == 1

    await run_worker(settings)
    [row] = await callback_rows(admin_engine, org.id)
    assert (row.status, row.outcome, str(row.shipment_id)) == ("processed", "shipped", shipment["id"])
    detail = await shown(client, org, shipment["id"])
    assert detail["shipment"]["status"] == "in_transit"
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds[-3:] == ["handed_over", "stock_committed", "carrier_event"]
    assert detail["timeline"][-1]["detail"]["carrier_event_id"] == "fx-1"
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(8, 0)]
    assert [(r.reference_id, r.on_hand_delta) for r in await commit_rows(admin_engine, org.id)] == [
        (shipment["id"], -2)
    ]


async def test_a_bad_or_missing_signature_is_401_and_stores_nothing(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    event = fedex_event(shipment["tracking_numbers"][0], "PU")
    wrong = await send_callback(client, account["id"], "not-the-secret", event)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "SIGNATURE_INVALID")
    tampered = await send_callback(client, account["id"], secret, event, body=b'{"eventId": "forged"}')
    assert (tampered.status_code, tampered.json()["error"]["code"]) == (401, "SIGNATURE_INVALID")
    missing = await send_callback(client, account["id"], secret, event, headers={})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "SIGNATURE_MISSING")
    assert await callback_rows(admin_engine, org.id) == []


async def test_a_replay_outside_the_five_minute_window_is_401_and_stores_nothing(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    event = fedex_event(shipment["tracking_numbers"][0], "PU")
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        resp = await send_callback(client, account["id"], secret, event, now=datetime.now(UTC) + skew)
        assert (resp.status_code, resp.json()["error"]["code"]) == (401, "STALE_CALLBACK")
    assert await callback_rows(admin_engine, org.id) == []
    inside = await send_callback(
        client, account["id"], secret, event, now=datetime.now(UTC) - timedelta(minutes=4)
    )
    assert inside.status_code == 200, inside.text


async def test_an_unknown_account_or_a_carrier_mismatch_is_404_and_stores_nothing(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    event = fedex_event(shipment["tracking_numbers"][0], "PU")
    for carrier, account_id in (
        ("fedex", str(uuid.uuid4())),
        ("dhl_express", account["id"]),  # the account is FedEx's
        ("ups", account["id"]),
    ):
        resp = await send_callback(client, account_id, secret, event, carrier=carrier)
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "CARRIER_ACCOUNT_NOT_FOUND")
    assert await callback_rows(admin_engine, org.id) == []


async def test_a_callback_for_a_shipment_not_ours_is_stored_and_ignored(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    other = await make_org()  # another org's shipment: its tracking number is not this account's
    _, _, _, theirs = await bought_label(client, other, fake_fedex)
    for tracking, reference in (("999999999999", None), (theirs["tracking_numbers"][0], theirs["id"])):
        resp = await send_callback(
            client, account["id"], secret, fedex_event(tracking, "DL", reference=reference)
        )
        assert resp.status_code == 200, resp.text  # carriers retry a 404 forever
    await run_worker(settings)
    stored = await callback_rows(admin_engine, org.id)
    assert [(r.status, r.outcome, r.shipment_id) for r in stored] == [
        ("ignored", "unknown_shipment", None)
    ] * 2
    assert (await shown(client, org, shipment["id"]))["shipment"]["status"] == "label_purchased"
    assert (await shown(client, other, theirs["id"]))["shipment"]["status"] == "label_purchased"


async def test_delivered_after_in_transit_and_out_of_order_events(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    """In order: in transit, then delivered. Out of order: delivered first ships and delivers in one go
    (stock committed once); the late in-transit scan changes nothing and is noted on the timeline."""
    org = await make_org()
    account, secret, _, first = await bought_label(client, org, fake_fedex, on_hand=10, quantity=2)
    order2 = await order_with_stock(client, org, on_hand=0, quantity=3)  # 10 MUG, 5 reserved in all
    second = (
        await client.post(
            "/api/v1/shipments", json=shipment_body(order2["id"], account["id"]), headers=org.headers
        )
    ).json()
    track1, track2 = first["tracking_numbers"][0], second["tracking_numbers"][0]

    assert (await send_callback(client, account["id"], secret, fedex_event(track1, "PU"))).status_code == 200
    await run_worker(settings)
    assert (await send_callback(client, account["id"], secret, fedex_event(track1, "DL"))).status_code == 200
    # by our reference alone (DHL-style relays may echo it with a number we do not know yet)
    early = fedex_event("unknown-number", "DL", reference=second["id"])
    assert (await send_callback(client, account["id"], secret, early)).status_code == 200
    await run_worker(settings)
    late = fedex_event(track2, "IT")
    assert (await send_callback(client, account["id"], secret, late)).status_code == 200
    await run_worker(settings)

    one, two = await shown(client, org, first["id"]), await shown(client, org, second["id"])
    assert one["shipment"]["status"] == two["shipment"]["status"] == "delivered"
    assert [e["kind"] for e in one["timeline"] if e["to_status"]][-2:] == ["handed_over", "delivered"]
    moves = [(e["from_status"], e["to_status"]) for e in two["timeline"] if e["to_status"]]
    assert moves[-2:] == [("label_purchased", "in_transit"), ("in_transit", "delivered")]
    notes = [e["detail"] for e in two["timeline"] if e["kind"] == "carrier_event"]
    assert [(n["outcome"], n["note"]) for n in notes] == [
        ("shipped_and_delivered", None),
        ("recorded", "late_event"),
    ]
    outcomes = [r.outcome for r in await callback_rows(admin_engine, org.id)]
    assert outcomes == ["shipped", "delivered", "shipped_and_delivered", "recorded"]
    committed = sorted((r.reference_id, r.on_hand_delta) for r in await commit_rows(admin_engine, org.id))
    assert committed == sorted([(first["id"], -2), (second["id"], -3)])
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(5, 0)]


async def test_concurrent_in_transit_callbacks_and_the_api_hand_over_commit_stock_once(
    app, client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex, on_hand=10, quantity=3)
    tracking = shipment["tracking_numbers"][0]
    for code in ("PU", "PU", "AR", "IT", "DP", "AF"):  # six distinct events that each say "in transit"
        resp = await send_callback(client, account["id"], secret, fedex_event(tracking, code))
        assert resp.status_code == 200, resp.text

    async def api_ship() -> int:
        async with client_for(app) as c:
            return (await c.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)).status_code

    # Two workers (ten jobs at a time each) and three API hand-overs, all at once.
    results = await asyncio.gather(
        run_worker(settings), run_worker(settings), api_ship(), api_ship(), api_ship()
    )
    api_statuses = [s for s in results if s is not None]
    assert set(api_statuses) <= {200, 409} and api_statuses.count(200) <= 1, api_statuses
    stored = await callback_rows(admin_engine, org.id)
    assert {r.status for r in stored} == {"processed"} and len(stored) == 6
    shipped_by = [r.outcome for r in stored].count("shipped") + api_statuses.count(200)
    assert shipped_by == 1  # exactly one caller moved it
    assert [(r.reference_id, r.on_hand_delta) for r in await commit_rows(admin_engine, org.id)] == [
        (shipment["id"], -3)
    ]
    assert list((await assert_inventory_consistent(admin_engine, org.id)).values()) == [(7, 0)]
    detail = await shown(client, org, shipment["id"])
    assert [e["kind"] for e in detail["timeline"]].count("stock_committed") == 1


async def test_a_callback_whose_label_is_not_recorded_is_retried_then_dead_lettered(
    client, make_org, settings, admin_engine, monkeypatch, fake_fedex: FakeFedEx
) -> None:
    """A purchase still `pending` (its record crashed): the callback, found by our reference, is a
    retryable failure; after the last attempt it is dead and a dead letter names it."""
    org = await make_org()
    made = await add_account(client, org, "fedex", fake_fedex.url)
    order = await order_with_stock(client, org)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("died after the carrier answered")

    monkeypatch.setattr(service, "finish_purchase", crash)
    body = shipment_body(order["id"], made["account"]["id"])
    assert (await client.post("/api/v1/shipments", json=body, headers=org.headers)).status_code == 500
    monkeypatch.undo()
    [pending] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    [label] = fake_fedex.sold_for(pending["id"])
    event = fedex_event(label.tracking_number, "PU", reference=pending["id"])
    assert (
        await send_callback(client, made["account"]["id"], made["callback_secret"], event)
    ).status_code == 200
    await run_worker(settings)
    [row] = await callback_rows(admin_engine, org.id)
    assert (row.status, row.attempts) == ("dead", 5)
    letters = await rows(
        admin_engine,
        "select kind, job_name, attempts, error from dead_letters where org_id = :o",
        o=org.id,
    )
    assert [(d.kind, d.job_name, d.attempts) for d in letters] == [
        ("carrier_callback", "process_carrier_callback", 5)
    ]
    assert "no recorded label yet" in letters[0].error
    # Leave nothing pending for later tests' recovery runs: the saga's recovery resolves it (voided).
    await enqueue(settings, "recover_pending_shipments")
    await run_worker(settings, shipment_recovery_after_seconds=0, max_seconds=120)
    assert (await shown(client, org, pending["id"]))["shipment"]["status"] == "voided"


async def test_the_sweeper_enqueues_a_callback_whose_job_was_lost(
    client, make_org, settings, admin_engine, redis, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, secret, _, shipment = await bought_label(client, org, fake_fedex)
    resp = await send_callback(
        client, account["id"], secret, fedex_event(shipment["tracking_numbers"][0], "PU")
    )
    assert resp.status_code == 200
    await redis.flushdb()  # Redis lost the job; the inbox row is the truth
    await enqueue(settings, "sweep_pending_callbacks")
    await run_worker(settings, sweep_grace_seconds=0)
    [row] = await callback_rows(admin_engine, org.id)
    assert (row.status, row.outcome) == ("processed", "shipped")


async def test_refused_callbacks_are_rate_limited_per_address(
    settings, make_org, fake_fedex: FakeFedEx
) -> None:
    await clear_of_window_edge()
    app = create_app(replace(settings, rate_limit_webhooks_per_minute=3))
    await start_app(app)
    try:
        async with client_for(app, ip=f"10.9.{uuid.uuid4().int % 250}.7") as c:
            url = f"/callbacks/carriers/fedex/{uuid.uuid4()}"
            statuses = [(await c.post(url, content=b"{}")).status_code for _ in range(4)]
        assert statuses == [404, 404, 404, 429]
    finally:
        await stop_app(app)


async def test_the_callback_shipment_lookup_is_served_by_indexes(
    client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    """`find_shipment` runs for every carrier callback: on an account with thousands of shipments its
    plan must read them through the tracking-number GIN index and the carrier shipment id index (drop
    either and this fails), never by scanning the account's shipments."""
    from types import SimpleNamespace

    from sqlalchemy import event as sa_event
    from sqlalchemy import text

    from rappit.shipping import callbacks

    org = await make_org()
    account, _, _, shipment = await bought_label(client, org, fake_fedex)
    async with admin_engine.begin() as conn:  # 3,000 more labels of the same account
        await conn.execute(
            text(
                """INSERT INTO shipments
                   SELECT (jsonb_populate_record(NULL::shipments, to_jsonb(s) || jsonb_build_object(
                            'id', gen_random_uuid(), 'idempotency_key', NULL,
                            'carrier_shipment_id', 'X' || g,
                            'tracking_numbers', jsonb_build_array('T' || g)))).*
                     FROM shipments s, generate_series(1, 3000) g WHERE s.id = :id"""
            ),
            {"id": shipment["id"]},
        )
        await conn.execute(text("ANALYZE shipments"))
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM shipments" in statement:
            captured.append((statement, parameters))

    sa_event.listen(admin_engine.sync_engine, "before_cursor_execute", grab)
    try:
        async with admin_engine.connect() as conn:
            found = await callbacks.find_shipment(
                AsyncSession(bind=conn),
                SimpleNamespace(  # type: ignore[arg-type]
                    account_id=uuid.UUID(account["id"]),
                    tracking_number=shipment["tracking_numbers"][0],
                    reference=None,
                ),
            )
            assert found is not None and str(found.id) == shipment["id"]
            [(statement, parameters)] = captured
            raw = (await conn.get_raw_connection()).driver_connection
            plan = "\n".join(r[0] for r in await raw.fetch("EXPLAIN " + statement, *parameters))
    finally:
        sa_event.remove(admin_engine.sync_engine, "before_cursor_execute", grab)
    assert "ix_shipments_tracking" in plan, plan
    assert "ix_shipments_carrier_ref" in plan, plan
    assert "Seq Scan" not in plan, plan
