"""Chaos soak (issue 12). Run: ./run bench chaos [--seed N] [--minutes M]   (writes bench/results/chaos.json)

The whole platform as production runs it (two API processes, two arq workers, PostgreSQL, Redis, the
carrier and Shopify sandboxes), driven from one seed: signed webhooks for thousands of orders across
three orgs and both channel types (creates, updates, edits, cancels, duplicates, out-of-order, poison),
concurrent bulk imports and manual holds, label purchases, voids, hand-overs and carrier callbacks,
while a seeded schedule SIGKILLs workers and API processes, stops Redis for 30 s, restarts PostgreSQL
and SIGSTOPs it for 10 s, and makes a carrier fail, hang and sell a label without answering. After the
platform settles it checks every promise, prints a table, runs `rappit verify` per org, and exits 1 on
any violation with the seed to replay it. Not part of the test suite (tests/test_bench_smoke.py runs
`--smoke`: a few seconds of traffic and one fault).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _chaos import plan as planning
from _chaos.checks import run_checks
from _chaos.driver import Driver, Org, probe_callbacks
from _chaos.faults import FaultRunner
from _chaos.platform import SHOPIFY_TOKEN, Platform
from _stack import DATA, RESULTS, free_port, write_results

from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.settings import Settings
from rappit.tenancy.scoping import install_scoping
from rappit.tenancy.service import create_organization

install_scoping()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a new random seed)")
    parser.add_argument("--minutes", type=float, default=3.0, help="traffic and faults last this long (3)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, one fault: a run-through")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where to write chaos.json ({RESULTS})"
    )
    parser.add_argument(
        "--settle", type=float, default=None, help="longest wait for the platform to settle (s)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (and its server) afterwards, to investigate"
    )
    return parser.parse_args()


async def setup_orgs(platform: Platform, plan: planning.Plan) -> list[Org]:
    settings = Settings(env="development", log_json=True, log_level="WARNING").with_stack(
        database_url=platform.env["DATABASE_URL"],
        migration_database_url=platform.admin_url,
        redis_url=platform.redis_url,
        system_database_url=None,
    )
    engine = make_engine(settings, pool_size=2, max_overflow=0)
    orgs = []
    try:
        for n in range(planning.ORGS):
            code = planning.org_code(plan.seed, n)
            async with provide_session(make_sessionmaker(engine)) as session:
                made = await create_organization(
                    session,
                    name=f"Chaos {n}",
                    code=code,
                    admin_email=f"owner{n}@chaos.test",
                    password="chaos password 1234",
                )
            orgs.append(Org(n, str(made.org.id), code, made.token.plaintext))
    finally:
        await engine.dispose()
    return orgs


async def setup_catalogue(platform: Platform, plan: planning.Plan, orgs: list[Org]) -> None:
    base = platform.bases[0]
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        for org in orgs:
            h = {"Authorization": f"Bearer {org.token}"}

            async def post(path: str, body: Any, h: dict[str, str] = h) -> Any:
                r = await c.post(path, json=body, headers=h)
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"set-up {path}: {r.status_code} {r.text[:300]}")
                return r.json()

            await post("/api/v1/warehouses", {"code": planning.WAREHOUSE, "name": "Main"})
            for k in range(planning.SKUS_PER_ORG):
                await post("/api/v1/skus", {"code": planning.sku_code(k)})
            rows = [
                {"sku": sku, "quantity": q, "warehouse_code": planning.WAREHOUSE}
                for (o, sku), q in plan.initial_stock.items()
                if o == org.n
            ]
            await post("/api/v1/inventory/bulk?mode=set", rows)
            for kind in planning.KINDS:
                body = {
                    "type": kind,
                    "name": f"{kind} {org.n}",
                    "address": planning.shop_address(plan.seed, org.n, kind),
                    "webhook_secret": planning.secret(plan.seed, org.n, kind),
                }
                if kind == "shopify":
                    body["api_access_token"] = SHOPIFY_TOKEN
                else:  # the store the fulfillment push reaches (the webhook source is not checked)
                    store = platform.woo[org.n]
                    body["address"] = store.url
                    body["api_access_token"] = "ck_test:cs_test"  # FakeWooCommerce's default key pair
                org.channels[kind] = (await post("/api/v1/channels", body))["channel"]["id"]
            accounts = {
                "fedex": ({"client_id": "fedex-client", "client_secret": "fedex-secret"}, platform.fedex.url),
                "dhl_express": ({"username": "dhl-user", "password": "dhl-pass"}, platform.dhl.api_url),
            }
            for carrier, (credentials, url) in accounts.items():
                number = f"{carrier[:2].upper()}{plan.seed % 10_000:04d}{org.n}"
                made = await post(
                    "/api/v1/carrier-accounts",
                    {
                        "carrier": carrier,
                        "name": f"{carrier} {org.n}",
                        "credentials": credentials,
                        "account_number": number,
                        "base_url": url,
                    },
                )
                org.accounts[carrier] = (made["account"]["id"], number, made["callback_secret"])
    for o in plan.orders:
        # The shops know their orders: orders/edited fetches the final version from the Admin API, and
        # the fulfillment push after a hand-over finds its fulfillment orders (Shopify) or order (Woo).
        if o.kind == "shopify":
            platform.shopify.put_order(planning.shopify_body(o, o.final))
        else:
            platform.woo[o.org].put_order(o.external_id)


async def backlog(platform: Platform) -> tuple[int, int]:
    conn = await asyncpg.connect(platform.admin_url, timeout=10)
    try:
        events = await conn.fetchval(
            "SELECT count(*) FROM webhook_events WHERE status IN ('pending','failed')"
        )
        pending = await conn.fetchval("SELECT count(*) FROM shipments WHERE status = 'pending'")
        return int(events), int(pending)
    finally:
        await conn.close()


async def settle(platform: Platform, limit: float) -> dict[str, Any]:
    """Wait until no webhook event waits and no label purchase is unresolved (the recovery job needs
    its 120 s), at most `limit` seconds."""
    started = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    while time.monotonic() - started < limit:
        try:
            last = await backlog(platform)
        except (OSError, asyncpg.PostgresError):
            last = (-1, -1)
        if last == (0, 0):
            break
        await asyncio.sleep(2)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "left_events": last[0],
        "left_pending_shipments": last[1],
    }


async def run(args: argparse.Namespace, seed: int) -> int:
    minutes = 0.15 if args.smoke else args.minutes
    plan = planning.build(seed, minutes, smoke=args.smoke)
    print(f"chaos: seed {seed}, {minutes:g} min; plan {plan.summary()}", flush=True)
    data = Path(os.environ.get("RAPPIT_DATA_DIR") or DATA.parent) / "bench"
    platform = Platform(data=data, database="rappit_bench_chaos")
    started = time.monotonic()
    platform.start_services()
    try:
        ports = [free_port(), free_port()]
        platform.start_processes(ports, data / "chaos-logs")
        orgs = await setup_orgs(platform, plan)
        await setup_catalogue(platform, plan, orgs)
        callbacks = await probe_callbacks(platform.bases[0])
        print(
            f"chaos: platform up in {time.monotonic() - started:.0f} s (APIs {ports}); "
            f"carrier callback route "
            f"{'found: callbacks on' if callbacks else 'absent: callbacks off'}",
            flush=True,
        )
        t0 = time.monotonic()
        async with Driver(plan, platform.bases, orgs, t0=t0, callbacks_enabled=callbacks) as driver:
            driver.deadline = plan.duration + 120
            runner = FaultRunner(platform, plan.faults, t0)
            await asyncio.gather(
                driver.run_deliveries(),
                driver.run_stock(),
                driver.run_labels(plan.duration, plan.order_by_key()),
                runner.run(),
            )
            traffic_seconds = time.monotonic() - t0
            print(f"chaos: traffic and faults done in {traffic_seconds:.0f} s; settling", flush=True)
            settled = await settle(platform, args.settle or (60 if args.smoke else 300))
            print(f"chaos: settled {settled}", flush=True)
            rows, facts = await run_checks(platform, plan, driver, runner.windows)
    finally:
        platform.stop()
        if args.keep:
            print(f"chaos: database kept: {platform.admin_url}", flush=True)
        else:
            platform.drop()
    violations = sum(r.violations for r in rows)
    print(f"\n   {'check':<62}{'expected':>10}{'found':>10}{'violations':>12}")
    for r in rows:
        print(f"   {r.name[:62]:<62}{str(r.expected):>10}{str(r.found):>10}{r.violations:>12}")
        for line in r.detail[:8]:
            print(f"      - {line}")
        if len(r.detail) > 8:
            print(f"      - ... {len(r.detail) - 8} more (all in chaos.json)")
    for k, v in facts.items():
        print(f"   {k}: {v}")
    path = write_results(
        "chaos",
        {
            "seed": seed,
            "minutes": minutes,
            "smoke": args.smoke,
            "replay": f"./run bench chaos --seed {seed} --minutes {minutes:g}",
            "plan": plan.summary(),
            "callbacks_enabled": callbacks,
            "traffic_seconds": round(traffic_seconds, 1),
            "settle": settled,
            "faults_done": runner.log,
            "db_redis_fault_windows": [
                {"from": round(a, 1), "to": round(b, 1), "kind": k} for a, b, k in runner.windows
            ],
            "checks": [
                {
                    "check": r.name,
                    "expected": r.expected,
                    "found": r.found,
                    "violations": r.violations,
                    "detail": r.detail[:200],
                }
                for r in rows
            ],
            "facts": facts,
            "violations": violations,
            "note": "2 vCPU shared with other sessions: durations and 503 counts depend on the load",
        },
        args.results,
    )
    print(f"\nwritten to {path}")
    if violations:
        print(
            f"chaos: {violations} violation(s); replay with: "
            f"./run bench chaos --seed {seed} --minutes {minutes:g}"
        )
        return 1
    print(f"chaos: no violation (seed {seed})")
    return 0


def main() -> None:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    try:
        code = asyncio.run(run(args, seed))
    except BaseException:
        print(f"chaos: the run failed; replay with: ./run bench chaos --seed {seed}", file=sys.stderr)
        raise
    sys.exit(code)


if __name__ == "__main__":
    main()
