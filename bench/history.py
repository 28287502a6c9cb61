"""History benchmark (issue 11, goal 5). Run: ./run bench history   (writes bench/results/history.json)

Does listing cost grow with history? Two orgs in one database, 1,000 inventory levels each; one with
1,000 orders and 1,000 ledger rows, one with 1,000,000 of each, seeded set-based (generate_series).
Their samples are taken alternately (A, B, B, A, ...), so a machine shared with other work slows both
alike and the ratio stays the history's, not the neighbours'. Each query
is what the API runs (rappit.orders.service.list_orders, rappit.inventory.queries.list_levels and
ledger_for_sku), through the app role with row-level security, a page of 50 at the first page and from
a cursor in the middle of the history. Headline: p50 and p99 at 1M over 1k (goal: <= 1.5). The plans
at 1M are recorded (no sequential scan, no sort of the history).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _stack import ClientCpu, bench_args, bench_stack, headline, write_results
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from rappit.inventory import queries
from rappit.orders import service
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.context import org_context
from rappit.tenancy.service import create_organization

SIZES = (1_000, 1_000_000)
LEVELS = 1_000
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "400"))
WARMUP = 50
PAGE = 50


def smoke_sizes() -> None:
    global SIZES, LEVELS, SAMPLES, WARMUP
    SIZES, LEVELS, SAMPLES, WARMUP = (100, 1_000), 50, 20, 5


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k" if n >= 1_000 else str(n)


async def seed_catalogue(admin: Any, org_id: uuid.UUID) -> uuid.UUID:
    async with admin.begin() as conn:
        wh = (
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) "
                    "values (gen_random_uuid(), :o, 'H1', '', now()) returning id"
                ),
                {"o": org_id},
            )
        ).scalar_one()
        await conn.execute(
            text(
                """with s as (insert into skus (id, org_id, code, name, reorder_point, created_at)
                     select gen_random_uuid(), :o, 'H' || lpad(g::text, 6, '0'), '', 0, now()
                       from generate_series(1, CAST(:n AS int)) g returning id)
                   insert into inventory_levels
                          (id, org_id, sku_id, warehouse_id, on_hand, reserved, updated_at)
                   select gen_random_uuid(), :o, s.id, :w, 1000000000, 0, now() from s"""
            ),
            {"o": org_id, "n": LEVELS, "w": wh},
        )
    return wh


async def grow(admin: Any, org_id: uuid.UUID, have: int, target: int) -> None:
    """Orders and ledger rows from `have` to `target` each, set-based."""
    async with admin.begin() as conn:
        await conn.execute(
            text(
                """insert into orders (id, org_id, number, source, status, currency, created_at, updated_at,
                                       cancelled_at)
                   select gen_random_uuid(), :o, 'H-M-' || g, 'manual',
                          case when g % 4 = 0 then 'cancelled' else 'open' end, 'EUR', t, t,
                          case when g % 4 = 0 then t end
                     from generate_series(CAST(:a AS int), CAST(:b AS int)) g,
                          LATERAL (select timestamptz '2020-01-01' + g * interval '1 second' as t) ts"""
            ),
            {"o": org_id, "a": have + 1, "b": target},
        )
        await conn.execute(
            text(
                """with lv as (select id, sku_id, warehouse_id, row_number() over (order by id) - 1 as k
                                 from inventory_levels where org_id = :o)
                   insert into inventory_ledger (org_id, level_id, sku_id, warehouse_id, reason,
                          on_hand_before, on_hand_after, on_hand_delta, reserved_before, reserved_after,
                          reserved_delta, actor, reference_type, reference_id, request_id, note, created_at)
                   select :o, lv.id, lv.sku_id, lv.warehouse_id, 'receive', g, g + 1, 1, 0, 0, 0, 'bench',
                          null, null, null, null, timestamptz '2020-01-01' + g * interval '1 second'
                     from generate_series(CAST(:a AS int), CAST(:b AS int)) g
                     join lv on lv.k = g % CAST(:levels AS int)"""
            ),
            {"o": org_id, "a": have + 1, "b": target, "levels": LEVELS},
        )
    async with admin.connect() as conn:  # settle: no autovacuum or checkpoint of the seed mid-measurement
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("orders", "inventory_ledger", "inventory_levels", "skus"):
            await conn.execute(text(f"vacuum analyze {table}"))
        await conn.execute(text("checkpoint"))


def stats(samples: list[float]) -> dict[str, Any]:
    samples.sort()
    return {
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[max(int(len(samples) * 0.99) - 1, 0)], 3),
    }


async def measure_pair(
    small: Callable[[], Awaitable[Any]], large: Callable[[], Awaitable[Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate the two (in turn first), so both see the same machine."""
    a: list[float] = []
    b: list[float] = []
    for i in range(-WARMUP, SAMPLES):
        for fn, out in ((small, a), (large, b)) if i % 2 else ((large, b), (small, a)):
            started = time.perf_counter()
            await fn()
            if i >= 0:
                out.append((time.perf_counter() - started) * 1000)
    return stats(a), stats(b)


async def cases_for(
    sessionmaker: Any, admin: Any, org_id: uuid.UUID, size: int
) -> dict[str, Callable[[], Awaitable[Any]]]:
    async with admin.connect() as conn:
        mid_order = (
            await conn.execute(
                text(
                    "select created_at, id from orders where org_id = :o order by created_at desc, id desc "
                    "offset CAST(:k AS int) limit 1"
                ),
                {"o": org_id, "k": size // 2},
            )
        ).one()
        mid_ledger = (
            await conn.execute(
                text(
                    "select id from inventory_ledger where org_id = :o order by id desc "
                    "offset CAST(:k AS int) limit 1"
                ),
                {"o": org_id, "k": size // 2},
            )
        ).scalar_one()
    mid_sku = f"H{LEVELS // 2:06d}"

    async def run(call: Callable[[Any], Awaitable[Any]]) -> Any:
        with org_context(org_id):
            async with provide_session(sessionmaker) as session:
                return await call(session)

    def orders(after: Any = None, status: str | None = None) -> Callable[[], Awaitable[Any]]:
        kwargs = {"channel_id": None, "created_from": None, "created_to": None, "limit": PAGE}
        return lambda: run(lambda s: service.list_orders(s, status=status, after=after, **kwargs))

    def levels(after: Any = None) -> Callable[[], Awaitable[Any]]:
        return lambda: run(
            lambda s: queries.list_levels(
                s, sku=None, warehouse=None, low_stock=False, limit=PAGE, after=after
            )
        )

    def ledger(before: int | None) -> Callable[[], Awaitable[Any]]:
        return lambda: run(lambda s: queries.ledger_for_sku(s, sku=mid_sku, limit=PAGE, before_id=before))

    return {
        "orders_first_page": orders(),
        "orders_middle_page": orders(after=tuple(mid_order)),
        "orders_open_middle_page": orders(after=tuple(mid_order), status="open"),
        "inventory_first_page": levels(),
        "inventory_middle_page": levels(after=(mid_sku, "H1")),
        "ledger_first_page": ledger(None),
        "ledger_middle_page": ledger(int(mid_ledger)),
    }


PLANS = {
    "orders_page": """select * from orders where org_id = :o and (created_at, id) < (now(), gen_random_uuid())
                      order by created_at desc, id desc limit 50""",
    "orders_open_page": """select * from orders where org_id = :o and status = 'open'
                           and (created_at, id) < (now(), gen_random_uuid())
                           order by created_at desc, id desc limit 50""",
    "inventory_page": """select s.code, w.code from inventory_levels l join skus s on s.id = l.sku_id
                         join warehouses w on w.id = l.warehouse_id
                        where l.org_id = :o and s.code >= 'H000500' and (s.code, w.code) > ('H000500', 'H1')
                        order by s.code, w.code limit 50""",
    "ledger_page": """select * from inventory_ledger where org_id = :o
                       and sku_id = (select id from skus where org_id = :o limit 1) and id < 500000
                     order by id desc limit 50""",
}


async def plans(admin: Any, org_id: uuid.UUID) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with admin.connect() as conn:
        for name, sql in PLANS.items():
            plan = "\n".join(r[0] for r in await conn.execute(text("explain " + sql), {"o": org_id}))
            out[name] = {
                "plan": plan,
                "seq_scan_of_history": any(
                    f"Seq Scan on {t}" in plan for t in ("orders", "inventory_ledger")
                ),
                "sorts": "Sort" in plan,  # the inventory page sorts the catalogue (1,000 levels), not history
            }
    return out


async def main(results_dir: Path) -> None:
    with bench_stack("history") as stack:
        engine = make_engine(stack.settings, pool_size=4, max_overflow=0)
        admin = create_async_engine(stack.admin_url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            sessionmaker = make_sessionmaker(engine)
            orgs = []
            for code in ("HSMALL", "HLARGE"):
                async with provide_session(sessionmaker) as session:
                    new = await create_organization(
                        session, name=code, code=code, admin_email="h@bench.test", password="bench password 1"
                    )
                orgs.append(new.org.id)
                await seed_catalogue(admin, new.org.id)
            for org_id, size in zip(orgs, SIZES, strict=True):
                print(f"seeding {label(size)} orders and {label(size)} ledger rows...", flush=True)
                await grow(admin, org_id, 0, size)
            small_cases, large_cases = [
                await cases_for(sessionmaker, admin, o, n) for o, n in zip(orgs, SIZES, strict=True)
            ]
            print("measuring, alternately...", flush=True)
            measured: dict[str, Any] = {label(n): {} for n in SIZES}
            with ClientCpu("history") as cpu:
                for name in small_cases:
                    a, b = await measure_pair(small_cases[name], large_cases[name])
                    measured[label(SIZES[0])][name], measured[label(SIZES[1])][name] = a, b
            org_id = orgs[1]
            explained = await plans(admin, org_id)
        finally:
            await engine.dispose()
            await admin.dispose()
    small, large = (label(n) for n in SIZES)
    ratios = {
        name: {
            "p50": round(measured[large][name]["p50_ms"] / measured[small][name]["p50_ms"], 2),
            "p99": round(measured[large][name]["p99_ms"] / measured[small][name]["p99_ms"], 2),
        }
        for name in measured[small]
        if isinstance(measured[small][name], dict)
    }
    worst = {
        kind: {pct: max(ratios[n][pct] for n in ratios if n.startswith(kind)) for pct in ("p50", "p99")}
        for kind in ("orders", "inventory", "ledger")
    }
    heads = [
        headline(
            f"{kind} listing {pct} at {large} vs {small} (worst page)",
            worst[kind][pct],
            1.5,
            better="lower",
            baseline=f"the same query with {small} orders and ledger rows",
        )
        for kind in ("orders", "inventory")
        for pct in ("p50", "p99")
    ]
    path = write_results(
        "history",
        {
            "sizes": list(SIZES),
            "levels": LEVELS,
            "page": PAGE,
            "measured": measured,
            "ratios": ratios,
            "worst": worst,
            "plans_at_largest": explained,
            **cpu.report(),
        },
        results_dir,
        headlines=heads,
    )
    print(f"\nListing latency, page of {PAGE} ({LEVELS:,} levels), ms")
    print(
        f"   {'query':<26}{small + ' p50':>10}{small + ' p99':>10}{large + ' p50':>10}{large + ' p99':>10}"
        f"{'x p50':>8}{'x p99':>8}"
    )
    for name, r in ratios.items():
        a, b = measured[small][name], measured[large][name]
        print(
            f"   {name:<26}{a['p50_ms']:>10}{a['p99_ms']:>10}{b['p50_ms']:>10}{b['p99_ms']:>10}"
            f"{r['p50']:>8}{r['p99']:>8}"
        )
    for name, p in explained.items():
        print(f"   plan {name}: seq scan of history {p['seq_scan_of_history']}, sort {p['sorts']}")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    sys.exit(asyncio.run(main(args.results)))
