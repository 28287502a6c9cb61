"""`rappit verify`'s shipments check: a shipment in transit or delivered has its lines' stock committed
exactly once (the commit ledger rows naming it), no other shipment has commit rows. An org that shipped
verifies clean; drift made by hand as the table owner is reported exactly and fails the command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rappit.integrations.sandboxes.fedex import FakeFedEx
from tests.ops.test_verify import admin_exec, run_verify, verify_api
from tests.shipping.conftest import order_with_stock, shipment_body
from tests.shipping.helpers import bought_label


@pytest.fixture
def fake_fedex() -> Iterator[FakeFedEx]:
    fake = FakeFedEx().start()
    yield fake
    fake.stop()


async def test_shipments_against_committed_stock(
    client, make_org, settings, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account, _, first_order, shipped = await bought_label(client, org, fake_fedex, on_hand=10, quantity=2)
    assert (
        await client.post(f"/api/v1/shipments/{shipped['id']}/ship", headers=org.headers)
    ).status_code == 200
    second_order = await order_with_stock(client, org, on_hand=0, quantity=3)
    resp = await client.post(
        "/api/v1/shipments", json=shipment_body(second_order["id"], account["id"]), headers=org.headers
    )
    waiting = resp.json()
    assert resp.status_code == 201 and waiting["status"] == "label_purchased"

    clean = await verify_api(client, org)  # a shipped order's committed reservations are no drift either
    assert clean["findings"] == [] and "shipments_vs_committed_stock" in clean["checks"]

    # Drift 1: a shipment marked in transit without its stock ever committed.
    await admin_exec(
        admin_engine, "update shipments set status = 'in_transit' where id = :i", i=waiting["id"]
    )
    # Drift 2: a shipment whose stock was committed, set back to label_purchased.
    await admin_exec(
        admin_engine, "update shipments set status = 'label_purchased' where id = :i", i=shipped["id"]
    )
    [commit_id] = [
        r[0]
        for r in await admin_exec(
            admin_engine,
            "select id from inventory_ledger where org_id = :o and reason = 'commit'",
            o=org.id,
        )
    ]
    report = await verify_api(client, org)
    expected = sorted(
        [
            {
                "check": "shipments_vs_committed_stock",
                "message": f"shipment {waiting['id']} is in_transit carrying 3 of MUG; commit ledger rows "
                "naming it took 0",
                "rows": {
                    "shipment_id": waiting["id"],
                    "shipment_status": "in_transit",
                    "order_id": second_order["id"],
                    "sku": "MUG",
                    "commit_ledger_ids": [],
                },
                "expected": {"committed": 3},
                "found": {"committed": 0},
            },
            {
                "check": "shipments_vs_committed_stock",
                "message": f"shipment {shipped['id']} is label_purchased yet commit ledger rows naming "
                "it took 2 of MUG",
                "rows": {
                    "shipment_id": shipped["id"],
                    "shipment_status": "label_purchased",
                    "order_id": first_order["id"],
                    "sku": "MUG",
                    "commit_ledger_ids": [commit_id],
                },
                "expected": {"committed": 0},
                "found": {"committed": 2},
            },
        ],
        key=lambda f: f["rows"]["shipment_id"],
    )
    assert report["clean"] is False and report["findings"] == expected

    # Drift 3: the commit row names a shipment that does not exist (the real one is now uncommitted).
    await admin_exec(
        admin_engine, "update shipments set status = 'in_transit' where id = :i", i=shipped["id"]
    )
    await admin_exec(
        admin_engine,
        "update inventory_ledger set reference_id = '00000000-0000-0000-0000-000000000000' where id = :i",
        i=commit_id,
    )
    messages = [f["message"] for f in (await verify_api(client, org))["findings"]]
    assert (
        "commit ledger rows name shipment 00000000-0000-0000-0000-000000000000, which does not exist; "
        "they took 2 of MUG"
    ) in messages
    assert (
        f"shipment {shipped['id']} is in_transit carrying 2 of MUG; commit ledger rows naming it took 0"
        in messages
    )

    proc = run_verify(settings, "--org", org.code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[shipments_vs_committed_stock]" in proc.stdout
