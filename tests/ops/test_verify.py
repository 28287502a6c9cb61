"""`rappit verify` and `GET /api/v1/admin/verify`: a healthy org verifies clean; each kind of drift,
made by hand as the table owner, is reported exactly (rows, expected, found) and fails the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import text

from tests.inventory.helpers import setup_stock
from tests.orders.helpers import run_worker, send_shopify, shopify_channel, shopify_order

VERIFY = "/api/v1/admin/verify"


def run_verify(settings, *args: str, system: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SYSTEM_DATABASE_URL", None)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url,
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        REDIS_URL=settings.redis_url,
    )
    if system:
        env["SYSTEM_DATABASE_URL"] = settings.system_database_url
    return subprocess.run(
        [sys.executable, "-m", "rappit.app.cli", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def admin_exec(admin_engine, sql: str, **params) -> list:
    async with admin_engine.begin() as conn:
        result = await conn.execute(text(sql), params)
        return list(result.all()) if result.returns_rows else []


async def busy_org(client, make_org, settings):
    """An org that has used everything verify looks at: received stock, a channel order edited up,
    down and across SKUs (with a line that has no SKU), a cancelled order, an order on hold, a manual
    order and a manual hold, and a webhook event that arrived moments ago and is not processed yet."""
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 20, ("B", "W1"): 20, ("C", "W1"): 0})
    channel = await shopify_channel(client, org)
    deliveries = [
        (shopify_order(1, [("A", 2), ("B", 1), (None, 1), ("A", 1)]), "orders/create"),
        (shopify_order(1, [("A", 5), ("B", 1)], minutes=1), "orders/updated"),
        (shopify_order(1, [("A", 1)], minutes=2), "orders/updated"),
        (shopify_order(2, [("B", 4)]), "orders/create"),
        (shopify_order(2, [("B", 4)], minutes=1, cancelled=True), "orders/cancelled"),
        (shopify_order(3, [("C", 1)]), "orders/create"),  # no stock of C: on hold
    ]
    for payload, topic in deliveries:
        assert (await send_shopify(client, channel, payload, topic=topic)).status_code == 200
        await run_worker(settings)
    manual = await client.post(
        "/api/v1/orders",
        json={"currency": "EUR", "lines": [{"sku": "B", "quantity": 3}]},
        headers=org.headers,
    )
    assert manual.status_code == 201, manual.text
    hold = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 2}], "reference": "show"},
        headers=org.headers,
    )
    assert hold.status_code == 201, hold.text
    assert (await send_shopify(client, channel, shopify_order(4, [("A", 1)]))).status_code == 200
    statuses = {
        o["external_name"]: o["status"]
        for o in (await client.get("/api/v1/orders", headers=org.headers)).json()["items"]
        if o["external_name"]
    }
    assert statuses == {"#1": "open", "#2": "cancelled", "#3": "on_hold"}
    return org


async def verify_api(client, org, **params):
    resp = await client.get(VERIFY, headers=org.headers, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def level(admin_engine, org, sku: str):
    return (
        await admin_exec(
            admin_engine,
            """select v.id, v.on_hand, v.reserved from inventory_levels v join skus s on s.id = v.sku_id
                where v.org_id = :o and s.code = :sku""",
            o=org.id,
            sku=sku,
        )
    )[0]


async def test_a_busy_org_verifies_clean_through_the_api_and_the_cli(client, make_org, settings) -> None:
    org = await busy_org(client, make_org, settings)
    report = await verify_api(client, org)
    assert report["clean"] is True and report["findings"] == []
    assert report["org_code"] == org.code and report["org_id"] == str(org.id)
    assert report["checks"] == [
        "ledger_chain",
        "level_vs_ledger",
        "reserved_vs_reservations",
        "order_reservations",
        "stuck_webhook",
        "shipments_vs_committed_stock",
    ]
    assert report["not_checked"] == {}

    proc = run_verify(settings, "--org", org.code.lower())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{org.code}: clean (6 checks)" in proc.stdout
    assert "verify: 1 organization(s) clean" in proc.stdout


async def test_on_hand_bumped_without_a_ledger_row_is_reported(
    client, make_org, settings, admin_engine
) -> None:
    org = await busy_org(client, make_org, settings)
    b = await level(admin_engine, org, "B")
    await admin_exec(admin_engine, "update inventory_levels set on_hand = on_hand + 5 where id = :i", i=b.id)
    last = (
        await admin_exec(admin_engine, "select max(id) from inventory_ledger where level_id = :i", i=b.id)
    )[0][0]

    report = await verify_api(client, org)
    assert report["clean"] is False
    assert report["findings"] == [
        {
            "check": "level_vs_ledger",
            "message": f"level B @ W1 holds on_hand {b.on_hand + 5}, reserved {b.reserved}; its ledger "
            f"ends at {b.on_hand}, {b.reserved} and replays to {b.on_hand}, {b.reserved}",
            "rows": {"level_id": str(b.id), "last_ledger_id": last, "sku": "B", "warehouse": "W1"},
            "expected": {
                "on_hand": b.on_hand,
                "reserved": b.reserved,
                "replay_on_hand": b.on_hand,
                "replay_reserved": b.reserved,
            },
            "found": {"on_hand": b.on_hand + 5, "reserved": b.reserved},
        }
    ]
    proc = run_verify(settings, "--org", org.code)
    assert proc.returncode == 1
    assert f"{org.code}: 1 drift(s)" in proc.stdout
    assert f"[level_vs_ledger] {report['findings'][0]['message']}" in proc.stdout
    assert f"level_id={b.id}" in proc.stdout
    assert "verify: 1 drift(s) in 1 of 1 organization(s)" in proc.stderr


async def test_a_missing_ledger_row_breaks_the_chain_and_the_replay(
    client, make_org, settings, admin_engine
) -> None:
    org = await busy_org(client, make_org, settings)
    a = await level(admin_engine, org, "A")
    rows = await admin_exec(
        admin_engine,
        """select id, on_hand_after, reserved_after, on_hand_delta, reserved_delta
             from inventory_ledger where level_id = :i order by id""",
        i=a.id,
    )
    gone, after = rows[1], rows[2]
    await admin_exec(admin_engine, "delete from inventory_ledger where id = :i", i=gone.id)

    findings = (await verify_api(client, org))["findings"]
    assert [f["check"] for f in findings] == ["ledger_chain", "level_vs_ledger"]
    chain, replay = findings
    assert chain["rows"] == {
        "ledger_id": after.id,
        "previous_ledger_id": rows[0].id,
        "level_id": str(a.id),
        "sku": "A",
        "warehouse": "W1",
    }
    assert chain["expected"] == {
        "on_hand_before": rows[0].on_hand_after,
        "reserved_before": rows[0].reserved_after,
    }
    assert chain["found"] == {"on_hand_before": gone.on_hand_after, "reserved_before": gone.reserved_after}
    # The level still equals the last row, but the deltas no longer add up to it.
    assert replay["expected"] == {
        "on_hand": a.on_hand,
        "reserved": a.reserved,
        "replay_on_hand": a.on_hand - gone.on_hand_delta,
        "replay_reserved": a.reserved - gone.reserved_delta,
    }
    assert replay["found"] == {"on_hand": a.on_hand, "reserved": a.reserved}
    assert run_verify(settings, "--org", org.code).returncode == 1


async def test_a_deleted_reservation_is_reported_on_its_level_and_its_order(
    client, make_org, settings, admin_engine
) -> None:
    org = await busy_org(client, make_org, settings)
    b = await level(admin_engine, org, "B")
    order_id, number, reservation_id = (
        await admin_exec(
            admin_engine,
            """select o.id::text, o.number, r.id::text from orders o
                 join reservations r on r.reference_id = o.id::text and r.status = 'active'
                where o.org_id = :o and o.source = 'manual'""",
            o=org.id,
        )
    )[0]
    await admin_exec(admin_engine, "delete from reservations where id = cast(:i as uuid)", i=reservation_id)

    findings = (await verify_api(client, org))["findings"]
    assert findings == [
        {
            "check": "reserved_vs_reservations",
            "message": f"level B @ W1 has reserved {b.reserved}; its active reservations add up to 0",
            "rows": {"level_id": str(b.id), "sku": "B", "warehouse": "W1", "active_reservation_ids": []},
            "expected": {"reserved": 0},
            "found": {"reserved": b.reserved},
        },
        {
            "check": "order_reservations",
            "message": f"open order {number} wants 3 of B; active reservations hold 0",
            "rows": {
                "order_id": order_id,
                "order_number": number,
                "order_status": "open",
                "sku": "B",
                "active_reservation_ids": [],
            },
            "expected": {"reserved": 3},
            "found": {"reserved": 0},
        },
    ]
    proc = run_verify(settings, "--org", org.code)
    assert proc.returncode == 1 and f"{org.code}: 2 drift(s)" in proc.stdout


async def test_orders_whose_reservations_disagree_with_their_status_or_lines_are_reported(
    client, make_org, settings, admin_engine
) -> None:
    org = await busy_org(client, make_org, settings)
    orders = {
        r.external_name: r
        for r in await admin_exec(
            admin_engine,
            "select id, number, external_name from orders where org_id = :o and source = 'shopify'",
            o=org.id,
        )
    }
    (first,) = [
        r[0]
        for r in await admin_exec(
            admin_engine,
            "select id::text from reservations where reference_id = :r and status = 'active'",
            r=str(orders["#1"].id),
        )
    ]
    # #1 gains a new version of its lines (A 1 -> A 4) with no reservation change; the manual order is
    # marked cancelled behind its reservations' back.
    await admin_exec(
        admin_engine,
        """insert into order_lines (id, org_id, order_id, version, position, sku, title, quantity,
                                    unit_price_minor, currency)
           select gen_random_uuid(), org_id, order_id, version + 1, 1, 'A', 'A', 4, 100, currency
             from order_lines where order_id = :i and version = 3""",
        i=orders["#1"].id,
    )
    manual_id, manual_number, manual_res = (
        await admin_exec(
            admin_engine,
            """update orders o set status = 'cancelled', cancelled_at = now() from reservations r
                where o.org_id = :o and o.source = 'manual' and r.reference_id = o.id::text
            returning o.id::text, o.number, r.id::text""",
            o=org.id,
        )
    )[0]

    findings = (await verify_api(client, org))["findings"]
    assert [(f["check"], f["message"], f["expected"], f["found"]) for f in findings] == sorted(
        [
            (
                "order_reservations",
                f"open order {orders['#1'].number} wants 4 of A; active reservations hold 1",
                {"reserved": 4},
                {"reserved": 1},
            ),
            (
                "order_reservations",
                f"order {manual_number} is cancelled yet its active reservations hold 3 of B",
                {"reserved": 0},
                {"reserved": 3},
            ),
        ],
        key=lambda f: f[1].split("order ")[1],
    )
    rows = {f["rows"]["order_id"]: f["rows"] for f in findings}
    assert rows[str(orders["#1"].id)]["active_reservation_ids"] == [first]
    assert rows[manual_id]["active_reservation_ids"] == [manual_res]
    assert rows[manual_id]["order_status"] == "cancelled"


async def test_an_open_order_whose_units_were_shipped_is_clean(
    client, make_org, settings, admin_engine, sessionmaker
) -> None:
    """Found by the chaos soak (seed 1201): a hand-over commits the order's reservations (stock left
    the building), the order stays open, and verify reported it as holding nothing."""
    import uuid

    from rappit.inventory import reservations
    from rappit.platform.db import provide_session
    from rappit.tenancy.context import org_context

    org = await busy_org(client, make_org, settings)
    (order_id,) = (
        await admin_exec(
            admin_engine, "select id from orders where org_id = :o and external_name = '#1'", o=org.id
        )
    )[0]
    ids = [
        r[0]
        for r in await admin_exec(
            admin_engine,
            "select id from reservations where reference_id = :r and status = 'active'",
            r=str(order_id),
        )
    ]
    assert ids
    with org_context(org.id):
        async with provide_session(sessionmaker) as session:
            await reservations.commit(session, ids, reference=("shipment", str(uuid.uuid4())))
    # (No shipment row stands behind this commit, which the shipments check reports; this test is about
    # the order check, so it reads only that one.)
    assert [
        f for f in (await verify_api(client, org))["findings"] if f["check"] == "order_reservations"
    ] == []
    # Shipped, then the order grew a line: that is drift again (wanted 4 of A, shipped 1).
    await admin_exec(
        admin_engine,
        """insert into order_lines (id, org_id, order_id, version, position, sku, title, quantity,
                                    unit_price_minor, currency)
           select gen_random_uuid(), org_id, order_id, version + 1, 1, 'A', 'A', 4, 100, currency
             from order_lines where order_id = :i and version = 3""",
        i=order_id,
    )
    findings = [f for f in (await verify_api(client, org))["findings"] if f["check"] == "order_reservations"]
    assert [(f["check"], f["expected"], f["found"]) for f in findings] == [
        ("order_reservations", {"reserved": 4}, {"reserved": 1})
    ]


async def test_a_webhook_event_pending_past_the_threshold_is_stuck(
    client, make_org, settings, admin_engine
) -> None:
    org = await busy_org(client, make_org, settings)
    ((event_id, channel_id),) = await admin_exec(
        admin_engine,
        """update webhook_events set received_at = now() - interval '1 hour'
            where org_id = :o and status = 'pending' returning id::text, channel_id::text""",
        o=org.id,
    )
    findings = (await verify_api(client, org))["findings"]
    assert len(findings) == 1
    stuck = findings[0]
    assert stuck["check"] == "stuck_webhook"
    assert stuck["rows"]["webhook_event_id"] == event_id and stuck["rows"]["channel_id"] == channel_id
    assert stuck["rows"]["topic"] == "orders/create"
    assert stuck["expected"] == {"status": "processed, ignored or dead", "within_seconds": 900}
    assert stuck["found"]["status"] == "pending" and stuck["found"]["attempts"] == 0
    assert 3600 <= stuck["found"]["age_seconds"] < 3700
    assert stuck["message"].startswith(f"webhook event {event_id} (orders/create, channel Shop) is pending")

    assert (await verify_api(client, org, stuck_after=7200))["clean"] is True
    assert run_verify(settings, "--org", org.code).returncode == 1
    assert run_verify(settings, "--org", org.code, "--stuck-after", "7200").returncode == 0


async def test_only_owners_may_verify(client, make_org) -> None:
    org = await make_org()
    assert (await client.get(VERIFY, headers=org.headers)).status_code == 200
    for role in ("admin", "staff", "viewer"):
        made = await client.post("/api/v1/tokens", json={"name": role, "role": role}, headers=org.headers)
        assert made.status_code == 201, made.text
        resp = await client.get(VERIFY, headers={"Authorization": f"Bearer {made.json()['token']}"})
        assert resp.status_code == 403, (role, resp.text)
    assert (await client.get(VERIFY)).status_code == 401


async def test_another_orgs_drift_is_reported_to_that_org_only(
    client, make_org, settings, admin_engine
) -> None:
    mine = await make_org()
    await setup_stock(client, mine, {("A", "W1"): 5})
    theirs = await make_org()
    await setup_stock(client, theirs, {("A", "W1"): 5})
    await admin_exec(admin_engine, "update inventory_levels set on_hand = 50 where org_id = :o", o=theirs.id)

    assert (await verify_api(client, mine))["findings"] == []
    assert [f["check"] for f in (await verify_api(client, theirs))["findings"]] == ["level_vs_ledger"]
    assert run_verify(settings, "--org", mine.code).returncode == 0
    assert run_verify(settings, "--org", theirs.code).returncode == 1

    # Every org, each checked as itself: the list of orgs needs the system role.
    every = run_verify(settings, system=True)
    assert every.returncode == 1
    assert f"{mine.code}: clean (6 checks)" in every.stdout
    assert f"{theirs.code}: 1 drift(s)" in every.stdout
    as_json = run_verify(settings, "--json", system=True)  # stdout is the report alone (logs: stderr)
    reports = {r["org_code"]: r for r in json.loads(as_json.stdout)}
    assert as_json.returncode == 1 and reports[mine.code]["clean"] is True
    assert [f["check"] for f in reports[theirs.code]["findings"]] == ["level_vs_ledger"]
    refused = run_verify(settings)
    assert refused.returncode == 2 and "needs SYSTEM_DATABASE_URL" in refused.stderr
    unknown = run_verify(settings, "--org", "ZZNOPE")
    assert unknown.returncode == 2 and "no organization with code ZZNOPE" in unknown.stderr
