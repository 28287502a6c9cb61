"""The hot-SKU reservation combiner: many tasks and several processes reserving one SKU past its stock
get exactly the stock, each refusal is its own INSUFFICIENT_STOCK, and the ledger still replays."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid

from sqlalchemy import text

from rappit.inventory import catalogue, stock
from rappit.inventory.combiner import ReservationCombiner
from rappit.platform.db import provide_session
from rappit.tenancy.context import Actor, org_context
from tests.inventory.helpers import assert_inventory_consistent


async def stocked(sessionmaker, org_id, qty: int) -> tuple[uuid.UUID, uuid.UUID]:
    with org_context(org_id, Actor(kind="system", id="test")):
        async with provide_session(sessionmaker) as session:
            sku = await catalogue.create_sku(session, code="HOT")
            wh = await catalogue.create_warehouse(session, code="W1")
            await stock.adjust(session, sku="HOT", warehouse="W1", quantity=qty, reason="receive")
    return sku.id, wh.id


async def reserve_many(combiner, org_id, sku_id, wh_id, n: int, tag: str) -> tuple[list, list]:
    granted, refused = [], []

    async def one(i: int) -> None:
        with org_context(org_id, Actor(kind="system", id=f"{tag}-{i}")):
            try:
                granted.append(
                    await combiner.reserve(
                        org_id, sku_id, wh_id, 1, reference_type="manual", reference_id=f"{tag}-{i}"
                    )
                )
            except stock.InsufficientStock as exc:
                refused.append(exc)

    await asyncio.gather(*[one(i) for i in range(n)])
    return granted, refused


async def test_two_hundred_tasks_on_fifty_units_get_exactly_fifty_each_its_own_row(
    sessionmaker, make_org, admin_engine
) -> None:
    org = await make_org()
    sku_id, wh_id = await stocked(sessionmaker, org.id, 50)
    combiner = ReservationCombiner(sessionmaker)
    granted, refused = await reserve_many(combiner, org.id, sku_id, wh_id, 200, "t")
    assert len(granted) == 50 and len(refused) == 150
    assert len({g.reservation_id for g in granted}) == 50
    assert combiner.batches < 200  # they were combined, not written one by one
    for exc in refused:
        assert exc.code == "INSUFFICIENT_STOCK"
        assert exc.details == {
            "lines": [{"sku": str(sku_id), "warehouse": str(wh_id), "requested": 1, "available": 0}]
        }
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(50, 50)]
    async with admin_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "select r.reference_id, r.actor, l.reserved_before, l.reserved_after from reservations r "
                    "join inventory_ledger l on l.org_id = r.org_id and l.reference_id = r.reference_id "
                    "where r.org_id = :o and l.reason = 'reserve' order by l.id"
                ),
                {"o": org.id},
            )
        ).all()
    # one reservation and one ledger row per grant, the ledger chained 0->1->...->50, each row its caller's
    assert [(r.reserved_before, r.reserved_after) for r in rows] == [(i, i + 1) for i in range(50)]
    assert all(r.actor == f"system:{r.reference_id}" for r in rows)


async def test_requests_are_answered_in_order_as_if_each_reserved_alone(sessionmaker, make_org, admin_engine):
    """Available 2: 3 units refused (2 available at its turn), then 1 granted, then 2 refused (1 left)."""
    org = await make_org()
    sku_id, wh_id = await stocked(sessionmaker, org.id, 2)
    combiner = ReservationCombiner(sessionmaker, linger=0.2)  # all three land in one batch

    async def one(qty: int) -> object:
        with org_context(org.id, Actor(kind="system", id="t")):
            try:
                return await combiner.reserve(org.id, sku_id, wh_id, qty, reference_type="manual")
            except stock.InsufficientStock as exc:
                return exc.details["lines"][0]["available"]

    three, one_, two = await asyncio.gather(one(3), one(1), one(2))
    assert three == 2 and two == 1
    assert getattr(one_, "quantity", None) == 1
    assert combiner.batches == 2  # one statement, then a second round for the one that fitted later
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(2, 1)]


async def test_unknown_level_is_refused_with_nothing_available(sessionmaker, make_org) -> None:
    org = await make_org()
    combiner = ReservationCombiner(sessionmaker)
    with org_context(org.id, Actor(kind="system", id="t")):
        try:
            await combiner.reserve(org.id, uuid.uuid4(), uuid.uuid4(), 1, reference_type="manual")
        except stock.InsufficientStock as exc:
            assert exc.details["lines"][0]["available"] == 0
        else:
            raise AssertionError("a level that does not exist reserved stock")


PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    from rappit.inventory import stock
    from rappit.inventory.combiner import ReservationCombiner
    from rappit.platform.db import make_engine, make_sessionmaker
    from rappit.platform.settings import Settings
    from rappit.tenancy.context import Actor, org_context
    from rappit.tenancy.scoping import install_scoping

    async def main(url, org, sku, wh, n, tag):
        install_scoping()
        engine = make_engine(Settings(env="test"), url=url, pool_size=5, max_overflow=0)
        combiner = ReservationCombiner(make_sessionmaker(engine))
        out = {"granted": 0, "refused": 0}
        async with engine.connect():  # connected before the start line, so the processes overlap
            pass
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def client(i):  # reserves one unit at a time until refused, like a shopper refreshing
            with org_context(uuid.UUID(org), Actor(kind="system", id=tag)):
                while True:
                    try:
                        await combiner.reserve(uuid.UUID(org), uuid.UUID(sku), uuid.UUID(wh), 1,
                                               reference_type="manual", reference_id=f"{tag}-{i}")
                        out["granted"] += 1
                    except stock.InsufficientStock:
                        out["refused"] += 1
                        return

        await asyncio.gather(*[client(i) for i in range(n)])
        out["batches"] = combiner.batches
        await engine.dispose()
        print(json.dumps(out))

    asyncio.run(main(*sys.argv[1:5], int(sys.argv[5]), sys.argv[6]))
    """
)


async def test_three_processes_past_the_stock_get_exactly_the_stock(
    settings, sessionmaker, make_org, admin_engine
) -> None:
    org = await make_org()
    sku_id, wh_id = await stocked(sessionmaker, org.id, 600)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PROCESS,
            settings.database_url or "",
            str(org.id),
            str(sku_id),
            str(wh_id),
            "16",
            f"p{n}",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(3)
    ]
    for proc in procs:  # all three connected, then all three start at once
        assert (await proc.stdout.readline()).strip() == b"ready"
    for proc in procs:
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    outs = []
    for proc in procs:
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-3000:]
        outs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert sum(o["granted"] for o in outs) == 600, outs
    assert [o["refused"] for o in outs] == [16, 16, 16], outs  # each client's first refusal ends it
    levels = await assert_inventory_consistent(admin_engine, org.id)
    assert list(levels.values()) == [(600, 600)]
