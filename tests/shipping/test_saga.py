"""The label purchase saga (no orphan labels) and the hand-over that commits stock exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import text

from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.carriers.transport import Timeouts
from rappit.integrations.sandboxes._loopback import Drop, Reply
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.platform.crypto import SecretBox
from rappit.shipping import jobs, service
from rappit.shipping.accounts import Carriers
from tests.conftest import client_for
from tests.inventory.helpers import assert_inventory_consistent
from tests.shipping.conftest import DE_FROM, FULL_CUSTOMS, add_account, order_with_stock, shipment_body


@pytest.fixture
async def carriers(settings, stack):
    """What the worker holds (its own client and board), with a short read timeout."""
    async with httpx.AsyncClient() as http:
        board = BreakerBoard(stack.redis_url)
        yield Carriers(http, board, SecretBox(settings.encryption_keys), Timeouts(connect=1.0, read=1.0))
        board.close()


async def recover(sessionmaker, system_sessionmaker, carriers) -> dict[str, int]:
    return await jobs.recover_pending(sessionmaker, system_sessionmaker, carriers, older_than_seconds=0)


async def orphans(admin_engine, org_id, sold: dict[str, str]) -> list[str]:
    """Labels the carrier sold (tracking number -> our reference) that no shipment of ours records."""
    async with admin_engine.connect() as conn:
        recorded = {
            r.carrier_shipment_id: str(r.id)
            for r in await conn.execute(
                text("select id, carrier_shipment_id from shipments where org_id = :o"), {"o": org_id}
            )
        }
    return [t for t, ref in sold.items() if recorded.get(t) != ref]


async def test_failure_right_after_the_carrier_answers_is_recovered_and_the_label_voided(
    client,
    make_org,
    admin_engine,
    sessionmaker,
    system_sessionmaker,
    carriers,
    monkeypatch,
    fake_fedex: FakeFedEx,
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("process died after the carrier sold the label")

    monkeypatch.setattr(service, "finish_purchase", crash)
    resp = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
    )
    assert resp.status_code == 500
    monkeypatch.undo()
    [pending] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    assert pending["status"] == "pending"  # committed before the carrier call
    assert len(fake_fedex.sold_for(pending["id"])) == 1
    assert await recover(sessionmaker, system_sessionmaker, carriers) == {"voided": 1}
    shown = (await client.get(f"/api/v1/shipments/{pending['id']}", headers=org.headers)).json()
    assert shown["shipment"]["status"] == "voided"
    assert [e["kind"] for e in shown["timeline"]][-2:] == ["label_recovered", "voided_by_carrier"]
    sold = {label.tracking_number: label.reference for label in fake_fedex.labels.values()}
    assert await orphans(admin_engine, org.id, sold) == []
    assert all(label.cancelled for label in fake_fedex.labels.values())
    assert await recover(sessionmaker, system_sessionmaker, carriers) == {}  # nothing left pending


async def test_sold_but_the_answer_never_arrives_then_recovery_records_it(
    client, make_org, admin_engine, sessionmaker, system_sessionmaker, carriers, fake_dhl: FakeDhlExpress
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "dhl_express", fake_dhl.api_url))["account"]
    order = await order_with_stock(client, org)
    fake_dhl.faults.sell_then_drop = True
    body = shipment_body(order["id"], account["id"], service="P", ship_from=DE_FROM, customs=FULL_CUSTOMS)
    resp = await client.post("/api/v1/shipments", json=body, headers=org.headers)
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["details"]["shipment_status"] == "pending"
    fake_dhl.faults.sell_then_drop = False
    shipment_id = resp.json()["error"]["details"]["shipment_id"]
    assert len(fake_dhl.sold_for(shipment_id)) == 1
    # DHL cannot void: the recovered label is recorded and marked void_requested, never "voided".
    assert await recover(sessionmaker, system_sessionmaker, carriers) == {"void_requested": 1}
    sold = {s.tracking_number: s.reference for s in fake_dhl.shipments.values()}
    assert await orphans(admin_engine, org.id, sold) == []


async def test_recovery_marks_failed_when_the_carrier_sold_nothing_and_waits_when_it_cannot_tell(
    client, make_org, sessionmaker, system_sessionmaker, carriers, monkeypatch, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("died before the carrier call")

    monkeypatch.setattr(service, "buy", crash)
    assert (
        await client.post(
            "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
        )
    ).status_code == 500
    monkeypatch.undo()
    fake_fedex.faults.server_error = -1
    assert await recover(sessionmaker, system_sessionmaker, carriers) == {"unknown": 1}
    [row] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    assert row["status"] == "pending"  # "no answer" is never read as "no label"
    fake_fedex.faults.server_error = 0
    board_key = carriers.breakers.for_account("fedex", account["id"])
    board_key.cb.close()
    assert await recover(sessionmaker, system_sessionmaker, carriers) == {"failed": 1}
    [row] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    assert row["status"] == "failed" and fake_fedex.labels == {}


async def test_concurrent_hand_overs_commit_the_reserved_stock_exactly_once(
    app, client, make_org, admin_engine, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org, on_hand=10, quantity=3)
    shipment = (
        await client.post(
            "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
        )
    ).json()

    async def hand_over() -> int:
        async with client_for(app) as c:
            return (await c.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)).status_code

    statuses = await asyncio.gather(*(hand_over() for _ in range(20)))
    assert sorted(statuses) == [200] + [409] * 19
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(7, 0)]  # 10 on hand, 3 reserved -> 3 left the building, once
    async with admin_engine.connect() as conn:
        commits = (
            await conn.execute(
                text(
                    "select count(*), sum(on_hand_delta), min(reference_type), min(reference_id)"
                    " from inventory_ledger where org_id = :o and reason = 'commit'"
                ),
                {"o": org.id},
            )
        ).one()
    assert tuple(commits) == (1, -3, "shipment", shipment["id"])  # the ledger names the shipment
    again = await client.post(f"/api/v1/shipments/{shipment['id']}/ship", headers=org.headers)
    assert again.json()["error"]["details"] == {
        "shipment_id": shipment["id"],
        "from": "in_transit",
        "to": "in_transit",
    }


async def test_only_pending_rows_old_enough_are_recovered(
    client, make_org, sessionmaker, system_sessionmaker, carriers, monkeypatch, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "finish_purchase", crash)
    await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
    )
    monkeypatch.undo()
    # A purchase still in flight (younger than the grace) is not touched.
    assert (
        await jobs.recover_pending(sessionmaker, system_sessionmaker, carriers, older_than_seconds=3600) == {}
    )


async def test_the_worker_runs_recovery_with_its_own_carrier_client(
    client, make_org, settings, monkeypatch, fake_fedex: FakeFedEx
) -> None:
    """The job table's recovery job, in a real arq worker whose Deps hold the httpx client and breakers."""
    from arq import create_pool
    from arq.worker import Worker

    from rappit.workers.settings import WorkerSettings, redis_settings

    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("died after the carrier answered")

    monkeypatch.setattr(service, "finish_purchase", crash)
    body = shipment_body(order["id"], account["id"])
    assert (await client.post("/api/v1/shipments", json=body, headers=org.headers)).status_code == 500
    monkeypatch.undo()
    pool = await create_pool(redis_settings(settings))
    try:
        assert await pool.enqueue_job("recover_pending_shipments") is not None
    finally:
        await pool.aclose()
    worker = Worker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        redis_settings=redis_settings(settings),
        burst=True,
        ctx={"settings": settings, "shipment_recovery_after_seconds": 0},
        poll_delay=0.05,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=60)
    finally:
        await worker.close()
    [row] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    assert row["status"] == "voided"
    assert all(label.cancelled for label in fake_fedex.labels.values())


async def test_concurrent_purchases_with_one_idempotency_key_buy_one_label(
    app, client, make_org, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    fake_fedex.faults.delay = 0.3  # every attempt overlaps the first one's carrier call
    headers = {**org.headers, "Idempotency-Key": f"k-{order['id']}"}

    async def attempt() -> int:
        async with client_for(app) as c:
            body = shipment_body(order["id"], account["id"])
            return (await c.post("/api/v1/shipments", json=body, headers=headers)).status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(8)))
    assert statuses.count(201) == 1 and set(statuses) <= {201, 200, 409}, statuses
    assert len(fake_fedex.labels) == 1
    assert len((await client.get("/api/v1/shipments", headers=org.headers)).json()) == 1


async def test_a_purchase_while_the_breaker_is_open_fails_fast_and_sends_nothing(
    client, make_org, stack, fake_fedex: FakeFedEx
) -> None:
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    board = BreakerBoard(stack.redis_url)
    try:
        board.for_account("fedex", account["id"]).cb.open()
    finally:
        board.close()
    sent = len(fake_fedex.requests)
    resp = await client.post(
        "/api/v1/shipments", json=shipment_body(order["id"], account["id"]), headers=org.headers
    )
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
    error = resp.json()["error"]
    assert error["code"] == "CARRIER_UNAVAILABLE" and error["details"]["breaker_state"] == "open"
    assert error["details"]["shipment_status"] == "failed"  # nothing reached the carrier: no label
    assert len(fake_fedex.requests) == sent


async def test_a_purchase_killed_after_the_carrier_sold_the_label_leaves_no_orphan(
    client,
    make_org,
    settings,
    admin_engine,
    sessionmaker,
    system_sessionmaker,
    carriers,
    repo_root,
    fake_fedex: FakeFedEx,
) -> None:
    """The process variant of the test above: the purchase runs in a child process (the real API), which
    the sandbox SIGKILLs right after it has sold the label, before its answer reaches the child and so
    before the record commits. The recovery job then finds the `pending` row and voids the label."""
    org = await make_org()
    account = (await add_account(client, org, "fedex", fake_fedex.url))["account"]
    order = await order_with_stock(client, org)
    child: dict[str, subprocess.Popen[bytes]] = {}
    sell = fake_fedex.handle

    def sell_then_kill(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        reply = sell(method, path, headers, body)
        if path == "/ship/v1/shipments" and reply.status == 200:
            os.kill(child["proc"].pid, signal.SIGKILL)  # the label is sold; the buyer dies now
            child["proc"].wait(30)
            raise Drop
        return reply

    fake_fedex.handle = sell_then_kill  # type: ignore[method-assign]
    env = {k: v for k, v in os.environ.items() if k != "SYSTEM_DATABASE_URL"}
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url,
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        REDIS_URL=settings.redis_url,
        PURCHASE_TOKEN=org.token,
        PURCHASE_BODY=json.dumps(shipment_body(order["id"], account["id"])),
    )
    child["proc"] = subprocess.Popen(
        [sys.executable, "-m", "tests.shipping.purchase_child"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.to_thread(child["proc"].communicate, timeout=120)
    assert child["proc"].returncode == -signal.SIGKILL, out.decode()[-2000:]

    [pending] = (await client.get("/api/v1/shipments", headers=org.headers)).json()
    assert pending["status"] == "pending"  # committed before the carrier call; the record never came
    [sold] = fake_fedex.sold_for(pending["id"])
    assert not sold.cancelled
    # (Other tests may have left pending rows whose sandboxes are gone: those count as "unknown".)
    assert (await recover(sessionmaker, system_sessionmaker, carriers)).get("voided") == 1
    shown = (await client.get(f"/api/v1/shipments/{pending['id']}", headers=org.headers)).json()
    assert [e["kind"] for e in shown["timeline"]][-2:] == ["label_recovered", "voided_by_carrier"]
    sold_labels = {label.tracking_number: label.reference for label in fake_fedex.labels.values()}
    assert await orphans(admin_engine, org.id, sold_labels) == []
    assert sold.cancelled  # voided at the sandbox: nobody is charged for it
