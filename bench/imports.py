"""Import benchmarks (issue 11, goal 4). Run: ./run bench imports   (writes bench/results/imports.json)

A 1,000,000-row stock-level CSV and a 1,000,000-SKU catalogue CSV through the real API (uvicorn) and a
real worker (`rappit worker`): POST answered 202, then GET /api/v1/imports/{id} polled until done; the
clock runs from the first byte sent to the poll that sees `done`. Each is run twice (new rows, then a
re-import that changes every row) and set against two baselines in the same run, on the same
database: a raw COPY of the same rows into a scratch table, and the write floor: the import's own
final INSERT (new levels with their ledger rows; new SKUs) run alone on a stage table with every row
already resolved, then rolled back. The client only uploads and polls: its CPU share is reported
(and flagged if it nears a core). The load average is recorded before and after each import: the
machine may be shared, and the figures mean little without it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from _stack import ClientCpu, api_server, bench_args, bench_stack, headline, write_results
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from rappit.inventory import sku_bulk
from rappit.inventory.bulk import BULK_NO_NESTLOOP, BULK_WORK_MEM, FRESH_PLANS, INSERT_NEW_LEVELS, new_id
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.service import create_organization

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
GOAL_SECONDS = 10.0
SKU_HEADER = (
    "code,name,reorder_point,hs_code,country_of_origin,customs_value_minor,customs_currency,weight_grams"
)


def smoke_sizes() -> None:
    """--smoke: a run-through in seconds, not a measurement."""
    global ROWS
    ROWS = 300


async def seed(settings: Any, admin_url: str) -> tuple[uuid.UUID, str]:
    engine = make_engine(settings)
    try:
        async with provide_session(make_sessionmaker(engine)) as session:
            new = await create_organization(
                session,
                name="Bench imports",
                code="I" + uuid.uuid4().hex[:6].upper(),
                admin_email="bench@imports.test",
                password="bench password 1234",
            )
    finally:
        await engine.dispose()
    admin = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://"))
    async with admin.begin() as conn:
        await conn.execute(
            text(
                "insert into skus (id, org_id, code, name, reorder_point, created_at) select "
                "gen_random_uuid(), :o, 'IMP' || lpad(g::text, 7, '0'), '', 0, now() "
                "from generate_series(1, CAST(:n AS int)) g"
            ),
            {"o": new.org.id, "n": ROWS // 2},
        )
        for wh in ("IW1", "IW2"):
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) "
                    "values (gen_random_uuid(), :o, :c, '', now())"
                ),
                {"o": new.org.id, "c": wh},
            )
        await conn.execute(text("analyze skus"))
    await admin.dispose()
    return new.org.id, new.token.plaintext


def stock_rows(bump: int) -> list[tuple[str, int, str]]:
    return [
        (f"IMP{i:07d}", (i * 7 + w) % 1000 + 1 + bump, wh)
        for i in range(1, ROWS // 2 + 1)
        for w, wh in enumerate(("IW1", "IW2"))
    ]


def sku_rows(tag: str) -> list[tuple[Any, ...]]:
    return [
        (
            f"NEW{i:07d}",
            f"Item {i} {tag}",
            i % 20,
            f"6109{i % 100:02d}",
            "PT",
            i % 5000 + 1,
            "EUR",
            i % 900 + 100,
        )
        for i in range(ROWS)
    ]


def as_csv(header: str, rows: list[tuple[Any, ...]]) -> bytes:
    return (header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)).encode()


async def http_import(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    with ClientCpu(f"import {path}") as cpu:
        started = time.perf_counter()
        resp = await client.post(path, content=body, headers=headers)
        accepted = time.perf_counter() - started
        assert resp.status_code == 202, (resp.status_code, resp.text[:300])
        import_id = resp.json()["import_id"]
        polls = 0
        while True:
            shown = (await client.get(f"/api/v1/imports/{import_id}", headers=headers)).json()
            polls += 1
            if shown["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
    assert shown["status"] == "done", shown.get("error")
    summary = shown["summary"]
    assert summary["failed"] == 0 and summary["received"] == ROWS, {
        k: summary[k] for k in summary if k != "errors"
    }
    return {
        "seconds": round(elapsed, 3),
        "rows_per_s": round(ROWS / elapsed),
        "upload_answered_202_after_s": round(accepted, 3),
        # From the 202 to done: the worker's share (queue pick-up, reading the stored file, applying).
        "job_seconds": round(elapsed - accepted, 3),
        "applied": summary["applied"],
        **cpu.report(),
        "polls": polls,
        "under_10_s": elapsed < GOAL_SECONDS,
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


async def attempt(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    """One import; a failed one is recorded (with its answer) instead of losing the whole run."""
    try:
        return await http_import(client, path, body, headers)
    except AssertionError as exc:
        print(f"   FAILED: {exc}", flush=True)
        return {"failed": str(exc)[:500]}


async def raw_copy(admin_url: str, columns: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The floor: the same rows COPYed (binary, asyncpg) into a table with no index, check or trigger."""
    admin = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://"))
    names = [c.split()[0] for c in columns.split(",")]
    async with admin.connect() as conn:
        await conn.execute(text(f"create table copy_scratch ({columns})"))
        await conn.commit()
        raw = (await conn.get_raw_connection()).driver_connection
        started = time.perf_counter()
        await raw.copy_records_to_table("copy_scratch", records=rows, columns=names)  # type: ignore[union-attr]
        seconds = time.perf_counter() - started
        await conn.execute(text("drop table copy_scratch"))
        await conn.commit()
    await admin.dispose()
    return {"seconds": round(seconds, 3), "rows_per_s": round(len(rows) / seconds)}


async def write_floor(
    admin_url: str,
    stage: Callable[[Any], Awaitable[None]],
    statement: str,
    params: dict[str, Any],
    tables: tuple[str, ...],
    *,
    also_without_fk_checks: bool = False,
) -> dict[str, Any]:
    """The floor under an import: its own final INSERT statement (`statement`, the import's SQL with
    `{new_id}`), on a stage table that `stage` fills with every row already resolved, untimed, and
    with the import's transaction settings (`bulk.prepare`'s): no upload, parsing, validation,
    look-up or job. Timed to the statement's end (the commit's last WAL flush aside), then rolled
    back and `tables` vacuumed, so the HTTP imports start from the same tables.
    `also_without_fk_checks`: once more with PostgreSQL's triggers off (superuser only, never done by
    Rappit), to show what the per-row foreign-key checks cost."""
    admin = create_async_engine(admin_url.replace("postgresql://", "postgresql+asyncpg://"))
    timed: dict[bool, float] = {}
    try:
        async with admin.connect() as conn:
            version = (
                await conn.execute(text("SELECT current_setting('server_version_num')::int"))
            ).scalar_one()
            sql = text(statement.format(new_id=new_id(int(version))))
            for fk_checks in (True, False) if also_without_fk_checks else (True,):
                await stage(conn)  # in the transaction: the stage tables are ON COMMIT DROP
                for setting in (FRESH_PLANS, BULK_WORK_MEM, BULK_NO_NESTLOOP):  # as `bulk.prepare` does
                    await conn.execute(setting)
                if not fk_checks:
                    await conn.execute(text("SET LOCAL session_replication_role = replica"))
                started = time.perf_counter()
                await conn.execute(sql, params)
                timed[fk_checks] = time.perf_counter() - started
                await conn.rollback()
        async with admin.connect() as conn:
            ac = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in tables:
                await ac.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        await admin.dispose()
    result = {"seconds": round(timed[True], 3), "rows": ROWS, "rows_per_s": round(ROWS / timed[True])}
    if False in timed:
        result["seconds_without_foreign_key_checks"] = round(timed[False], 3)
    return result


def stage_levels(org_id: uuid.UUID) -> Callable[[Any], Awaitable[None]]:
    """`import_stage` as the stock import leaves it for its insert: every (SKU, warehouse) of the org,
    ids resolved, no level yet."""

    async def stage(conn: Any) -> None:
        await conn.execute(
            text(
                "CREATE TEMP TABLE import_stage ON COMMIT DROP AS SELECT s.id AS sku_id, w.id AS wh_id, "
                "(row_number() OVER ())::int % 1000 + 1 AS qty, NULL::uuid AS level_id "
                "FROM skus s CROSS JOIN warehouses w WHERE s.org_id = :o AND w.org_id = :o"
            ),
            {"o": org_id},
        )
        await conn.execute(text("ANALYZE import_stage"))

    return stage


async def stage_skus(conn: Any) -> None:
    """`sku_stage` as the catalogue import leaves it for its insert: the file's rows, typed."""
    await conn.execute(text(sku_bulk.STAGE))
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table("sku_stage", records=sku_rows("a"), columns=list(sku_bulk.COLUMNS))
    await conn.execute(text("ANALYZE sku_stage"))


def worker_process(settings: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url or "",
        SYSTEM_DATABASE_URL=settings.system_database_url or "",
        REDIS_URL=settings.redis_url or "",
        MIGRATION_DATABASE_URL=settings.migration_database_url or "",
        LOG_LEVEL="WARNING",
        JOB_TIMEOUT_SECONDS="900",
    )
    return subprocess.Popen([sys.executable, "-m", "rappit.app.cli", "worker"], env=env)


async def main(results_dir: Path) -> None:
    out: dict[str, Any] = {"rows": ROWS, "goal_seconds": GOAL_SECONDS}
    # The API process reads these (api_server copies os.environ): a 1M-row file is ~25 MB, and every
    # upload here runs as a job, the path a file this size takes.
    os.environ.update(MAX_IMPORT_BYTES=str(2**30), IMPORT_JOB_THRESHOLD_BYTES="0", JOB_TIMEOUT_SECONDS="900")
    with bench_stack("imports") as stack:
        org_id, token = await seed(stack.settings, stack.admin_url)
        worker = worker_process(stack.settings)
        try:
            with api_server(stack.settings) as base:
                async with httpx.AsyncClient(base_url=base, timeout=900) as client:
                    headers = {"Authorization": f"Bearer {token}", "content-type": "text/csv"}
                    floor = await write_floor(
                        stack.admin_url,
                        stage_levels(org_id),
                        INSERT_NEW_LEVELS,
                        {"org": org_id, "actor": "bench:floor", "import_id": "floor", "request_id": None},
                        ("inventory_ledger", "inventory_levels"),
                        also_without_fk_checks=True,
                    )
                    stock: dict[str, Any] = {"write_floor": floor}
                    print(f"   write floor (levels + ledger): {stock['write_floor']}", flush=True)
                    for label, bump in (("new_levels", 0), ("existing_levels", 5)):
                        rows = stock_rows(bump)
                        body = as_csv("sku,quantity,warehouse_code", rows)
                        print(
                            f"stock import, {label}: {ROWS:,} rows, {len(body) / 2**20:.1f} MiB...",
                            flush=True,
                        )
                        stock[label] = await attempt(client, "/api/v1/inventory/bulk", body, headers)
                        stock[label]["csv_bytes"] = len(body)
                        print(f"   {stock[label]}", flush=True)
                    stock["raw_copy"] = await raw_copy(
                        stack.admin_url, "sku text, quantity int, warehouse_code text", stock_rows(0)
                    )
                    floor = await write_floor(
                        stack.admin_url, stage_skus, sku_bulk.INSERT_NEW_SKUS, {"org": org_id}, ("skus",)
                    )
                    skus: dict[str, Any] = {"write_floor": floor}
                    print(f"   write floor (skus): {skus['write_floor']}", flush=True)
                    for label, tag in (("new_skus", "a"), ("existing_skus", "b")):
                        rows = sku_rows(tag)
                        body = as_csv(SKU_HEADER, rows)
                        print(
                            f"SKU import, {label}: {ROWS:,} rows, {len(body) / 2**20:.1f} MiB...", flush=True
                        )
                        skus[label] = await attempt(client, "/api/v1/skus/bulk", body, headers)
                        skus[label]["csv_bytes"] = len(body)
                        print(f"   {skus[label]}", flush=True)
                    skus["raw_copy"] = await raw_copy(
                        stack.admin_url,
                        "code text, name text, reorder_point int, hs_code text, country_of_origin text, "
                        "customs_value_minor bigint, customs_currency text, weight_grams int",
                        sku_rows("a"),
                    )
        finally:
            worker.terminate()
            worker.wait(30)
    for section, labels in (
        (stock, ("new_levels", "existing_levels")),
        (skus, ("new_skus", "existing_skus")),
    ):
        for label in labels:
            if "seconds" in section[label]:
                section[label]["ratio_vs_raw_copy"] = round(
                    section[label]["seconds"] / section["raw_copy"]["seconds"], 1
                )
                section[label]["ratio_vs_write_floor"] = round(
                    section[label]["seconds"] / section["write_floor"]["seconds"], 2
                )
    out["stock_levels"] = stock
    out["skus"] = skus
    out["load_average_at_end"] = os.getloadavg()
    n_rows = f"{ROWS:,}"
    path = write_results(
        "imports",
        out,
        results_dir,
        headlines=[
            headline(
                f"{n_rows}-row {what} import over HTTP, {label.replace('_', ' ')}",
                section[label]["seconds"],
                GOAL_SECONDS,
                better="lower",
                unit="s",
                baseline=f"raw COPY of the same rows: {section['raw_copy']['seconds']} s; "
                f"the import's own INSERT alone, rows resolved: {section['write_floor']['seconds']} s",
            )
            for what, section, labels in (
                ("stock", stock, ("new_levels", "existing_levels")),
                ("catalogue", skus, ("new_skus", "existing_skus")),
            )
            for label in labels
            if "seconds" in section[label]
        ],
    )
    print(f"\nImports of {ROWS:,} rows over HTTP (202, then polled until done), against a raw COPY")
    for name, section in (("stock", stock), ("skus", skus)):
        for label, r in section.items():
            if "failed" in r:
                print(f"   {name:<6} {label:<27} FAILED {r['failed'][:200]}")
            elif label == "write_floor":
                without = r.get("seconds_without_foreign_key_checks")
                print(
                    f"   {name:<6} write floor {'':<15}{r['seconds']:>8} s  (the import's INSERT alone"
                    + (f"; {without} s without the FK checks)" if without is not None else ")")
                )
            elif label == "raw_copy":
                print(f"   {name:<6} raw COPY {'':<18}{r['seconds']:>8} s")
            else:
                print(
                    f"   {name:<6} {label:<27}{r['seconds']:>8} s  {r['ratio_vs_raw_copy']:>6}x raw COPY"
                    f"  (client CPU {r['client_cpu_share_of_one_core']:.0%} of a core,"
                    f" load {r['load_average_1m_before']}->{r['load_average_1m_after']})"
                )
    print(f"   load average at the end: {out['load_average_at_end']}")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    sys.exit(asyncio.run(main(args.results)))
