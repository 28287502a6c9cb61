"""Inventory benchmarks (issue 3). Run: ./run bench inventory   (writes bench/results/inventory.json)

1. Hot SKU: 64 concurrent clients each reserve 1 unit of one SKU until it runs out, through Rappit's
   combiner (rappit/inventory/combiner.py) and its single conditional UPDATE per reservation, against
   two baselines on the same data in the same process: a naive read-then-write (which oversells) and
   SELECT ... FOR UPDATE then UPDATE (two round trips, one transaction per reservation). Headline:
   combiner reservations/s over SELECT ... FOR UPDATE's (goal: >= 2x, 0 oversold).
2. Bulk import of 100,000 rows through the HTTP endpoint (new levels, then a re-import over existing
   ones) against a raw COPY of the same rows into a scratch table.
3. Reserve latency (p50, p99) with 1,000 and with 1,000,000 inventory rows in the table.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _stack import ClientCpu, api_server, bench_args, bench_stack, headline, write_results
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from rappit.inventory import catalogue, reservations, stock
from rappit.inventory.combiner import ReservationCombiner
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.service import create_organization

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "64"))
HOT_STOCK = int(os.environ.get("BENCH_HOT_STOCK", "6000"))
IMPORT_ROWS = 100_000
LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "2000"))
LATENCY_WARMUP = 200
LATENCY_TABLE_ROWS = (1_000, 1_000_000)


def smoke_sizes() -> None:
    """--smoke: every section, tiny (a run-through in seconds, not a measurement)."""
    global CLIENTS, HOT_STOCK, IMPORT_ROWS, LATENCY_SAMPLES, LATENCY_WARMUP, LATENCY_TABLE_ROWS
    CLIENTS, HOT_STOCK, IMPORT_ROWS = 4, 20, 200
    LATENCY_SAMPLES, LATENCY_WARMUP, LATENCY_TABLE_ROWS = 20, 5, (100, 1_000)


def rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k" if n >= 1_000 else str(n)


async def seed_org(sessionmaker: Any) -> tuple[uuid.UUID, str]:
    async with provide_session(sessionmaker) as session:
        new = await create_organization(
            session,
            name="Bench",
            code="B" + uuid.uuid4().hex[:6].upper(),
            admin_email="bench@bench.test",
            password="bench password 1234",
        )
    return new.org.id, new.token.plaintext


async def stock_one(
    sessionmaker: Any, org_id: uuid.UUID, sku: str, wh: str, qty: int
) -> tuple[uuid.UUID, uuid.UUID]:
    with org_context(org_id):
        async with provide_session(sessionmaker) as session:
            s = await catalogue.create_sku(session, code=sku)
            w = await catalogue.create_warehouse(session, code=wh)
            await stock.adjust(session, sku=sku, warehouse=wh, quantity=qty, reason="receive")
    return s.id, w.id


# ---------------------------------------------------------------- 1. hot SKU


async def hot_sku(sessionmaker: Any, engine: Any, org_id: uuid.UUID) -> dict[str, Any]:
    results: dict[str, Any] = {}

    async def run(name: str, reserve_once: Any, sku_id: uuid.UUID, wh_id: uuid.UUID) -> None:
        granted = 0
        # The naive method loses updates, so its clients would go on "reserving" long after the stock is
        # gone (up to CLIENTS x the stock); stop everyone at twice the stock: the oversell is proven by then.
        cap = 2 * HOT_STOCK

        async def client() -> None:
            nonlocal granted
            while granted < cap:
                if not await reserve_once(sku_id, wh_id):
                    return
                granted += 1

        with ClientCpu(f"hot SKU {name}") as cpu:
            started = time.perf_counter()
            await asyncio.gather(*[client() for _ in range(CLIENTS)])
            elapsed = time.perf_counter() - started
        async with engine.connect() as conn:
            await conn.execute(text("select set_config('app.org_id', :o, false)"), {"o": str(org_id)})
            reserved = (
                await conn.execute(
                    text("select reserved from inventory_levels where sku_id = :s and warehouse_id = :w"),
                    {"s": sku_id, "w": wh_id},
                )
            ).scalar_one()
        results[name] = {
            "reservations_granted": granted,
            "stock": HOT_STOCK,
            "oversold": max(granted - HOT_STOCK, 0),
            "stopped_at_cap": granted >= cap,
            "reserved_in_db": reserved,
            "lost_updates": granted - reserved,
            "seconds": round(elapsed, 3),
            "reservations_per_s": round(granted / elapsed, 1),
            **cpu.report(),
        }

    async def rappit_reserve(sku_id: uuid.UUID, wh_id: uuid.UUID) -> bool:
        with org_context(org_id, Actor(kind="system", id="bench")):
            try:
                async with provide_session(sessionmaker) as session:
                    await reservations.reserve(
                        session, [reservations.ReserveLine(sku_id, wh_id, 1)], reference_type="manual"
                    )
                return True
            except stock.InsufficientStock:
                return False

    async def naive(sku_id: uuid.UUID, wh_id: uuid.UUID) -> bool:
        async with engine.begin() as conn:
            await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(org_id)})
            on_hand, reserved = (
                await conn.execute(
                    text(
                        "select on_hand, reserved from inventory_levels where sku_id = :s and "
                        "warehouse_id = :w"
                    ),
                    {"s": sku_id, "w": wh_id},
                )
            ).one()
            if on_hand - reserved < 1:
                return False
            await conn.execute(
                text("update inventory_levels set reserved = :r where sku_id = :s and warehouse_id = :w"),
                {"r": reserved + 1, "s": sku_id, "w": wh_id},
            )
        return True

    async def for_update(sku_id: uuid.UUID, wh_id: uuid.UUID) -> bool:
        async with engine.begin() as conn:
            await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(org_id)})
            on_hand, reserved = (
                await conn.execute(
                    text(
                        "select on_hand, reserved from inventory_levels where sku_id = :s and "
                        "warehouse_id = :w for update"
                    ),
                    {"s": sku_id, "w": wh_id},
                )
            ).one()
            if on_hand - reserved < 1:
                return False
            await conn.execute(
                text(
                    "update inventory_levels set reserved = reserved + 1 where sku_id = :s and "
                    "warehouse_id = :w"
                ),
                {"s": sku_id, "w": wh_id},
            )
        return True

    combiner = ReservationCombiner(sessionmaker)

    async def rappit_combined(sku_id: uuid.UUID, wh_id: uuid.UUID) -> bool:
        with org_context(org_id, Actor(kind="system", id="bench")):
            try:
                await combiner.reserve(org_id, sku_id, wh_id, 1, reference_type="manual")
                return True
            except stock.InsufficientStock:
                return False

    for name, fn in (
        ("naive_read_then_write", naive),
        ("select_for_update", for_update),
        ("rappit_reserve", rappit_reserve),
        ("rappit_combined", rappit_combined),
    ):
        sku_id, wh_id = await stock_one(sessionmaker, org_id, f"HOT-{name}", f"W-{name[:20]}", HOT_STOCK)
        await run(name, fn, sku_id, wh_id)
    results["rappit_combined"]["statements"] = combiner.batches
    results["rappit_combined"]["reservations_per_statement"] = round(
        results["rappit_combined"]["reservations_granted"] / max(combiner.batches, 1), 1
    )
    base = results["select_for_update"]["reservations_per_s"]
    for r in results.values():
        r["ratio_vs_select_for_update"] = round(r["reservations_per_s"] / base, 2)
    return results


# ---------------------------------------------------------------- 2. bulk import


async def bulk_import(
    settings: Any, engine: Any, admin_url: str, org_id: uuid.UUID, token: str
) -> dict[str, Any]:
    n_skus = IMPORT_ROWS // 2
    admin = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://"))
    async with admin.begin() as conn:
        await conn.execute(
            text(
                "insert into skus (id, org_id, code, name, reorder_point, created_at) select "
                "gen_random_uuid(), :o, "
                "'IMP' || lpad(g::text, 6, '0'), '', 0, now() from generate_series(1, CAST(:n AS int)) g"
            ),
            {"o": org_id, "n": n_skus},
        )
        for wh in ("IW1", "IW2"):
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) "
                    "values (gen_random_uuid(), :o, :c, '', now())"
                ),
                {"o": org_id, "c": wh},
            )
    rows = [
        (f"IMP{i:06d}", (i * 7 + w) % 1000 + 1, wh)
        for i in range(1, n_skus + 1)
        for w, wh in enumerate(("IW1", "IW2"))
    ]
    csv1 = ("sku,quantity,warehouse_code\n" + "".join(f"{s},{q},{w}\n" for s, q, w in rows)).encode()
    csv2 = ("sku,quantity,warehouse_code\n" + "".join(f"{s},{q + 5},{w}\n" for s, q, w in rows)).encode()
    out: dict[str, Any] = {"rows": len(rows), "csv_bytes": len(csv1)}
    with api_server(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            headers = {"Authorization": f"Bearer {token}", "content-type": "text/csv"}
            for label, body in (("http_import_new_levels", csv1), ("http_import_existing_levels", csv2)):
                started = time.perf_counter()
                resp = await client.post("/api/v1/inventory/bulk", content=body, headers=headers)
                elapsed = time.perf_counter() - started
                summary = resp.json()
                assert resp.status_code == 200 and summary["applied"] == len(rows), (
                    resp.status_code,
                    str(summary)[:300],
                )
                out[label] = {"seconds": round(elapsed, 3), "rows_per_s": round(len(rows) / elapsed)}
    async with admin.connect() as conn:
        await conn.execute(text("create table copy_scratch (sku text, quantity int, warehouse_code text)"))
        await conn.commit()
        raw = (await conn.get_raw_connection()).driver_connection
        started = time.perf_counter()
        await raw.copy_records_to_table(
            "copy_scratch", records=rows, columns=["sku", "quantity", "warehouse_code"]
        )
        out["raw_copy"] = {"seconds": round(time.perf_counter() - started, 3)}
        await conn.execute(text("drop table copy_scratch"))
        await conn.commit()
    await admin.dispose()
    for label in ("http_import_new_levels", "http_import_existing_levels"):
        out[label]["ratio_vs_raw_copy"] = round(out[label]["seconds"] / out["raw_copy"]["seconds"], 1)
    return out


# ---------------------------------------------------------------- 3. latency vs table size


async def latency(sessionmaker: Any, admin_url: str, org_id: uuid.UUID) -> dict[str, Any]:
    admin = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://"))
    async with admin.begin() as conn:
        wh = (
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) "
                    "values (gen_random_uuid(), :o, 'LAT', '', now()) returning id"
                ),
                {"o": org_id},
            )
        ).scalar_one()
    out: dict[str, Any] = {}
    have = 0
    for target in LATENCY_TABLE_ROWS:
        async with admin.begin() as conn:
            await conn.execute(
                text(
                    "with s as (insert into skus (id, org_id, code, name, reorder_point, created_at) "
                    " select gen_random_uuid(), :o, 'LAT' || lpad(g::text, 7, '0'), '', 0, now() "
                    " from generate_series(CAST(:a AS int), CAST(:b AS int)) g returning id) "
                    "insert into inventory_levels (id, org_id, sku_id, warehouse_id, on_hand, "
                    "reserved, updated_at) "
                    "select gen_random_uuid(), :o, s.id, :w, 1000000, 0, now() from s"
                ),
                {"o": org_id, "a": have + 1, "b": target, "w": wh},
            )
            await conn.execute(text("analyze skus"))
            await conn.execute(text("analyze inventory_levels"))
            total = (await conn.execute(text("select count(*) from inventory_levels"))).scalar_one()
            ids = (
                (
                    await conn.execute(
                        text(
                            "select sku_id from inventory_levels where warehouse_id = :w order by "
                            "random() limit 500"
                        ),
                        {"w": wh},
                    )
                )
                .scalars()
                .all()
            )
        have = target
        async with admin.connect() as conn:  # settle: no checkpoint or autovacuum of the seed mid-measurement
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("vacuum analyze skus"))
            await conn.execute(text("vacuum analyze inventory_levels"))
            await conn.execute(text("checkpoint"))
        samples = []
        for i in range(-LATENCY_WARMUP, LATENCY_SAMPLES):  # the warm-up runs are not counted
            sku_id = ids[abs(i) % len(ids)]
            started = time.perf_counter()
            with org_context(org_id):
                async with provide_session(sessionmaker) as session:
                    await reservations.reserve(
                        session, [reservations.ReserveLine(sku_id, wh, 1)], reference_type="manual"
                    )
            if i >= 0:
                samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        out[f"rows_{target}"] = {
            "inventory_rows_in_table": total,
            "samples": len(samples),
            "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
        }
    small, large = (f"rows_{n}" for n in LATENCY_TABLE_ROWS)
    ratio = "{}_vs_{}".format(*(rows_label(n) for n in reversed(LATENCY_TABLE_ROWS)))
    out[f"p50_ratio_{ratio}"] = round(out[large]["p50_ms"] / out[small]["p50_ms"], 2)
    out[f"p99_ratio_{ratio}"] = round(out[large]["p99_ms"] / out[small]["p99_ms"], 2)
    await admin.dispose()
    return out


ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))  # e.g. BENCH_ONLY=hot,bulk


async def section(name: str, fn: Any) -> Any:
    """Each section gets a fresh database, so one section's rows cannot skew another's figures."""
    with bench_stack(f"inventory_{name}") as stack:
        engine = make_engine(stack.settings, pool_size=CLIENTS + 4, max_overflow=0)
        try:
            sessionmaker = make_sessionmaker(engine)
            org_id, token = await seed_org(sessionmaker)
            return await fn(stack, engine, sessionmaker, org_id, token)
        finally:
            await engine.dispose()


async def main(results_dir: Path) -> None:
    hot = bulk = lat = None
    if not ONLY or "hot" in ONLY:
        print(f"hot SKU: {CLIENTS} clients, {HOT_STOCK} units per run...", flush=True)
        hot = await section("hot", lambda st, e, sm, o, t: hot_sku(sm, e, o))
    if not ONLY or "bulk" in ONLY:
        print(f"bulk import: {IMPORT_ROWS:,} rows...", flush=True)
        bulk = await section("bulk", lambda st, e, sm, o, t: bulk_import(st.settings, e, st.admin_url, o, t))
    if not ONLY or "latency" in ONLY:
        small, large = (rows_label(n) for n in LATENCY_TABLE_ROWS)
        print(f"reserve latency at {small} and {large} rows (seeding 1M rows takes a minute)...", flush=True)
        lat = await section("latency", lambda st, e, sm, o, t: latency(sm, st.admin_url, o))
    # With BENCH_ONLY the sections not run are null in the JSON (and have no headline).
    path = write_results(
        "inventory",
        {
            "hot_sku": hot,
            "bulk_import": bulk,
            "reserve_latency": lat,
            "config": {"clients": CLIENTS, "hot_stock": HOT_STOCK, "import_rows": IMPORT_ROWS},
        },
        results_dir,
        headlines=[]
        if hot is None
        else [
            headline(
                f"hot SKU, {CLIENTS} clients: combiner vs FOR UPDATE",
                hot["rappit_combined"]["ratio_vs_select_for_update"],
                2.0,
                baseline="SELECT ... FOR UPDATE + UPDATE, one transaction per reservation",
            ),
            headline(
                "hot SKU: units oversold (combiner)",
                hot["rappit_combined"]["oversold"],
                0,
                better="lower",
                unit="",
            ),
        ],
    )
    if hot is not None:
        print(f"\n1. Hot SKU, {CLIENTS} clients, {HOT_STOCK} units")
        print(f"   {'method':<24}{'res/s':>10}{'ratio':>8}{'granted':>9}{'oversold':>10}{'lost upd':>10}")
        for name, r in hot.items():
            print(
                f"   {name:<24}{r['reservations_per_s']:>10}{r['ratio_vs_select_for_update']:>8}"
                f"{r['reservations_granted']:>9}{r['oversold']:>10}{r['lost_updates']:>10}"
            )
    if bulk is not None:
        print(f"\n2. Bulk import, {IMPORT_ROWS:,} rows")
        for label in ("http_import_new_levels", "http_import_existing_levels"):
            print(
                f"   {label:<32}{bulk[label]['seconds']:>8} s   {bulk[label]['ratio_vs_raw_copy']}x raw COPY"
            )
        print(f"   {'raw_copy':<32}{bulk['raw_copy']['seconds']:>8} s")
    if lat is not None:
        print("\n3. Reserve latency")
        for n in LATENCY_TABLE_ROWS:
            r = lat[f"rows_{n}"]
            print(f"   {r['inventory_rows_in_table']:>9} rows: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
        ratios = [k for k in lat if k.startswith("p50_ratio_")]
        for key in ratios:
            name = key.removeprefix("p50_ratio_")
            print(f"   {name} ratio: p50 {lat[key]}, p99 {lat['p99_ratio_' + name]}")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    sys.exit(asyncio.run(main(args.results)))
