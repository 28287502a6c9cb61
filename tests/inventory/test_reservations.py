"""Reservations under real concurrency: no oversell, no lost update, no deadlock reaching a client."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta

from sqlalchemy import text

from rappit.inventory import jobs as inventory_jobs
from rappit.inventory import reservations, stock
from rappit.platform.db import provide_session, utcnow
from rappit.platform.errors import BusinessRuleViolation
from rappit.tenancy.context import Actor, org_context
from rappit.workers.settings import (
    WorkerSettings,
    release_expired_reservations,
)
from tests.inventory.helpers import assert_inventory_consistent, setup_stock

ONE = [{"sku": "HOT", "warehouse_code": "W1", "quantity": 1}]


async def test_fifty_concurrent_holds_on_ten_units_exactly_ten_succeed(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("HOT", "W1"): 10})
    responses = await asyncio.gather(
        *[client.post("/api/v1/reservations", json={"lines": ONE}, headers=org.headers) for _ in range(50)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 10 and statuses.count(422) == 40, statuses
    short = next(r for r in responses if r.status_code == 422).json()["error"]
    assert short["code"] == "INSUFFICIENT_STOCK"
    assert short["details"]["lines"] == [{"sku": "HOT", "warehouse": "W1", "requested": 1, "available": 0}]
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(10, 10)]
    async with admin_engine.connect() as conn:
        reserves = (
            await conn.execute(
                text("select count(*) from inventory_ledger where org_id = :o and reason = 'reserve'"),
                {"o": org.id},
            )
        ).scalar_one()
    assert reserves == 10


async def test_multi_line_hold_is_all_or_nothing_and_lists_every_short_sku(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5, ("B", "W1"): 1, ("C", "W1"): 0})
    lines = [
        {"sku": "A", "warehouse_code": "W1", "quantity": 2},
        {"sku": "B", "warehouse_code": "W1", "quantity": 3},
        {"sku": "C", "warehouse_code": "W1", "quantity": 1},
        {"sku": "A", "warehouse_code": "W1", "quantity": 2},  # repeated SKU: 4 of A in total
    ]
    resp = await client.post("/api/v1/reservations", json={"lines": lines}, headers=org.headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["lines"] == [
        {"sku": "B", "warehouse": "W1", "requested": 3, "available": 1},
        {"sku": "C", "warehouse": "W1", "requested": 1, "available": 0},
    ]
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert all(reserved == 0 for _, reserved in levels.values())  # nothing was reserved
    ok = await client.post("/api/v1/reservations", json={"lines": [lines[0], lines[3]]}, headers=org.headers)
    assert ok.status_code == 201 and [r["quantity"] for r in ok.json()["reservations"]] == [4]
    unknown = await client.post(
        "/api/v1/reservations",
        json={"lines": [{"sku": "ZZ", "warehouse_code": "W1", "quantity": 1}]},
        headers=org.headers,
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["details"]["skus"] == ["ZZ"]


async def test_opposite_order_multi_line_holds_never_deadlock_to_the_client(
    client, make_org, admin_engine
) -> None:
    org = await make_org()
    skus = ["P", "Q", "R", "S"]
    await setup_stock(client, org, {(s, "W1"): 1000 for s in skus})

    def body(order: list[str]) -> dict:
        return {"lines": [{"sku": s, "warehouse_code": "W1", "quantity": 1} for s in order]}

    async def deadlocks() -> int:
        # pg_stat_database is flushed by each backend at most once a second: wait that out first.
        await asyncio.sleep(1.2)
        async with admin_engine.connect() as conn:
            await conn.execute(text("select pg_stat_clear_snapshot()"))
            return int(
                (
                    await conn.execute(
                        text("select deadlocks from pg_stat_database where datname = current_database()")
                    )
                ).scalar_one()
            )

    before = await deadlocks()
    orders = [skus if i % 2 else list(reversed(skus)) for i in range(60)]
    responses = await asyncio.gather(
        *[client.post("/api/v1/reservations", json=body(o), headers=org.headers) for o in orders]
    )
    assert [r.status_code for r in responses] == [201] * 60
    # Retries would hide deadlocks from the client: the lock order must prevent them altogether.
    assert await deadlocks() == before
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert sorted(levels.values()) == [(1000, 60)] * 4


async def test_release_is_idempotent_and_returns_stock(client, make_org, admin_engine) -> None:
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 3})
    hold = (
        await client.post(
            "/api/v1/reservations",
            json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 3}]},
            headers=org.headers,
        )
    ).json()["reservations"][0]
    results = await asyncio.gather(
        *[client.post(f"/api/v1/reservations/{hold['id']}/release", headers=org.headers) for _ in range(10)]
    )
    assert all(r.status_code == 200 and r.json()["status"] == "released" for r in results)
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(3, 0)]
    shown = await client.get(f"/api/v1/reservations/{hold['id']}", headers=org.headers)
    assert shown.json()["close_reason"] == "release"
    assert (await client.get(f"/api/v1/reservations/{uuid.uuid4()}", headers=org.headers)).status_code == 404


async def test_randomized_concurrent_mix_keeps_every_invariant(
    sessionmaker, client, make_org, admin_engine
) -> None:
    """reserve / release / adjust / commit over 20 SKUs x 2 warehouses from 16 tasks at once."""
    org = await make_org()
    skus = [f"S{i:02d}" for i in range(20)]
    whs = ["W1", "W2"]
    await setup_stock(client, org, {(s, w): 5 for s in skus for w in whs})
    rng = random.Random(20261123)
    held: list[uuid.UUID] = []
    outcomes = {"ok": 0, "refused": 0}
    unexpected: list[tuple[str, BaseException]] = []
    current_op: dict[int, str] = {}

    async def one_operation(worker: int, step: int) -> None:
        op = rng.choice(["reserve", "reserve", "release", "adjust", "commit"])
        current_op[worker] = op
        with org_context(org.id, Actor(kind="system", id=f"w{worker}")):
            async with provide_session(sessionmaker) as session:
                if op == "reserve":
                    lines = [
                        (rng.choice(skus), rng.choice(whs), rng.randint(1, 3))
                        for _ in range(rng.randint(1, 4))
                    ]
                    made = await stock.with_retries(
                        session,
                        lambda: reservations.reserve_by_codes(session, lines, reference_type="manual"),
                    )
                    held.extend(m.reservation_id for m in made)
                elif op in ("release", "commit") and held:
                    picked = [
                        held.pop(rng.randrange(len(held))) for _ in range(min(len(held), rng.randint(1, 3)))
                    ]
                    fn = reservations.release if op == "release" else reservations.commit
                    await stock.with_retries(session, lambda: fn(session, picked))
                else:
                    await stock.with_retries(
                        session,
                        lambda: stock.adjust(
                            session,
                            sku=rng.choice(skus),
                            warehouse=rng.choice(whs),
                            quantity=rng.randint(-3, 4),
                        ),
                    )

    async def worker(n: int) -> None:
        for step in range(25):
            try:
                await one_operation(n, step)
                outcomes["ok"] += 1
            except BusinessRuleViolation:
                outcomes["refused"] += 1  # insufficient stock / below reserved: a clean 422
            except BaseException as exc:  # anything else (a CHECK escaping, a deadlock) fails the test
                unexpected.append((current_op[n], exc))

    await asyncio.gather(*[worker(n) for n in range(16)])
    assert not unexpected, unexpected[:3]
    assert outcomes["ok"] > 100 and outcomes["refused"] > 0, outcomes
    await assert_inventory_consistent(admin_engine, org.id)


async def test_expired_holds_are_released_by_the_cron_job(
    client, make_org, admin_engine, sessionmaker, system_sessionmaker
) -> None:
    assert any(job.coroutine is release_expired_reservations for job in WorkerSettings.cron_jobs)
    org = await make_org()
    await setup_stock(client, org, {("A", "W1"): 5})
    short = (
        await client.post(
            "/api/v1/reservations",
            json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 2}], "expires_in_seconds": 60},
            headers=org.headers,
        )
    ).json()["reservations"][0]
    forever = (
        await client.post(
            "/api/v1/reservations",
            json={"lines": [{"sku": "A", "warehouse_code": "W1", "quantity": 1}]},
            headers=org.headers,
        )
    ).json()["reservations"][0]
    async with admin_engine.begin() as conn:
        await conn.execute(
            text("update reservations set expires_at = :t where id = :i"),
            {"t": utcnow() - timedelta(seconds=1), "i": short["id"]},
        )
    released = await inventory_jobs.release_expired_reservations(sessionmaker, system_sessionmaker)
    assert released >= 1
    assert (await client.get(f"/api/v1/reservations/{short['id']}", headers=org.headers)).json()[
        "close_reason"
    ] == "expire"
    assert (await client.get(f"/api/v1/reservations/{forever['id']}", headers=org.headers)).json()[
        "status"
    ] == "active"
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(5, 1)]
    ledger = (await client.get("/api/v1/inventory/A/ledger", headers=org.headers)).json()["items"]
    assert ledger[0]["reason"] == "expire" and ledger[0]["actor"] == "system:reservation-expiry"
