"""The end-to-end and fairness parts of bench/webhooks.py (issue 11, goals 2 and 6).

End to end: `E2E_WORKERS` worker processes (`rappit worker`: the inbox claim loops beside arq) and the
API (one uvicorn process) share the machine. Two figures:
- live: `wrk` (C, 1 thread, 32 connections; a Python client saturates first) sends `E2E_ORDERS` signed
  Shopify orders/create webhooks, each a distinct order, while the workers run; orders/s = orders /
  (first request -> last order committed with its stock reserved). Bounded by ingress or by the
  workers, whichever is slower (both are reported: the ingress rate of the same run beside it).
- backlog: the same number of events stored at once (one statement writing the rows ingress writes)
  while the workers run; orders/s = orders / (that commit -> last order committed), the workers' own
  rate, whatever ingress can do.
Fairness: org A holds `FAIR_BACKLOG` pending events (stored in one statement, as ingress stores
them); org B sends `FAIR_SAMPLES` webhooks one after another over HTTP; each one's latency is from
its request to its order being committed, and the backlog A still had then is reported with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from _stack import headline
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rappit.integrations.channels.signatures import sign
from rappit.inventory import catalogue, stock
from rappit.platform.db import provide_session
from rappit.platform.settings import Settings
from rappit.tenancy.context import org_context
from rappit.tenancy.service import create_organization

E2E_ORDERS = int(os.environ.get("BENCH_E2E_ORDERS", "10000"))
E2E_LIVE_ORDERS = int(os.environ.get("BENCH_E2E_LIVE_ORDERS", str(E2E_ORDERS)))
"""Webhooks sent by wrk in the live run (on a machine loaded by others, ingress sets the pace)."""
E2E_WORKERS = int(os.environ.get("BENCH_E2E_WORKERS", "2"))
FAIR_BACKLOG = int(os.environ.get("BENCH_FAIR_BACKLOG", "5000"))
FAIR_SAMPLES = int(os.environ.get("BENCH_FAIR_SAMPLES", "100"))
SECRET = "shpss_bench_secret_0123456789abcdef"


def smoke() -> None:
    global E2E_ORDERS, E2E_LIVE_ORDERS, FAIR_BACKLOG, FAIR_SAMPLES
    E2E_ORDERS, E2E_LIVE_ORDERS, FAIR_BACKLOG, FAIR_SAMPLES = 40, 40, 50, 3


def order_body(n: int) -> bytes:
    return json.dumps(
        {
            "id": 50_000_000 + n,
            "name": f"#{n}",
            "currency": "USD",
            "updated_at": "2026-11-01T12:00:00+00:00",
            "cancelled_at": None,
            "line_items": [
                {"id": n * 10, "sku": "BENCH", "title": "Bench item", "quantity": 1, "price": "10.00"}
            ],
        }
    ).encode()


def headers(body: bytes, shop: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": sign(SECRET, body),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
    }


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url or "",
        SYSTEM_DATABASE_URL=settings.system_database_url or "",
        REDIS_URL=settings.redis_url or "",
        MIGRATION_DATABASE_URL=settings.migration_database_url or "",
        LOG_LEVEL="WARNING",
    )
    return env


@contextmanager
def worker_processes(settings: Settings, n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen([sys.executable, "-m", "rappit.app.cli", "worker"], env=_env(settings))
        for _ in range(n)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


async def _scalar(engine: AsyncEngine, org_id: uuid.UUID, sql: str) -> Any:
    async with engine.connect() as conn:
        await conn.execute(text("select set_config('app.org_id', :o, false)"), {"o": str(org_id)})
        return (await conn.execute(text(sql))).scalar_one()


async def _scalars(engine: AsyncEngine, org_id: uuid.UUID, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        await conn.execute(text("select set_config('app.org_id', :o, false)"), {"o": str(org_id)})
        return list((await conn.execute(text(sql))).scalars())


async def wait_for_orders(engine: AsyncEngine, org_id: uuid.UUID, n: int, timeout: float = 600) -> float:
    deadline = time.perf_counter() + timeout
    while await _scalar(engine, org_id, "select count(*) from orders") < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"fewer than {n} orders after {timeout} s")
        await asyncio.sleep(0.05)
    return time.perf_counter()


def _wrk_script(directory: str, path: str, shop: str, first: int, n: int) -> str:
    """A Lua script for wrk: `n` distinct signed orders, each sent once (then 404s on a bogus path,
    while the runner waits for the last order)."""
    rows = []
    for i in range(first, first + n):
        body = order_body(i)
        h = headers(body, shop)
        fields = (body.decode(), h["X-Shopify-Hmac-Sha256"], h["X-Shopify-Event-Id"])
        rows.append("{" + ",".join(json.dumps(x) for x in fields) + "}")
    data = os.path.join(directory, "bodies.lua")
    with open(data, "w") as f:
        f.write("return {\n" + ",\n".join(rows) + "\n}\n")
    script = os.path.join(directory, "e2e.lua")
    with open(script, "w") as f:
        f.write(
            f"""
local rows = dofile({json.dumps(data)})
local i = 0
local statuses = {{}}
request = function()
  -- Each order once, in order; then again from the start (duplicates, answered 200 and stored once),
  -- so that a delivery answered with an error is retried, as Shopify does.
  local r = rows[(i % #rows) + 1]
  i = i + 1
  return wrk.format("POST", {json.dumps(path)}, {{
    ["Content-Type"] = "application/json",
    ["X-Shopify-Hmac-Sha256"] = r[2],
    ["X-Shopify-Topic"] = "orders/create",
    ["X-Shopify-Shop-Domain"] = {json.dumps(shop)},
    ["X-Shopify-Event-Id"] = r[3],
  }}, r[1])
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  for k, v in pairs(statuses) do io.write("status ", k, " ", v, "\\n") end
end
"""
        )
    return script


async def _wrk_send(base: str, path: str, shop: str, first: int, n: int, stored: Any) -> dict[str, Any]:
    """Send `n` orders with wrk; stop it once all of them are stored. Returns the ingress figures."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    directory = tempfile.mkdtemp(prefix="rappit-e2e-")
    try:
        script = _wrk_script(directory, path, shop, first, n)
        started = time.perf_counter()
        out = open(os.path.join(directory, "wrk.out"), "w+")  # closed below
        proc = subprocess.Popen(
            ["wrk", "-t1", "-c32", "-d600s", "--timeout", "30s", "-s", script, base], stdout=out, stderr=out
        )
        deadline = started + 600
        while await stored() < n:
            if proc.poll() is not None or time.perf_counter() > deadline:
                proc.kill()
                out.seek(0)
                raise RuntimeError(f"wrk ended early: {out.read()}")
            await asyncio.sleep(0.05)
        stored_at = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        out.seek(0)
        statuses = dict(line.split()[1:3] for line in out.read().splitlines() if line.startswith("status "))
        out.close()
        return {
            "started": started,
            "stored_at": stored_at,
            "ingress_per_s": round(n / (stored_at - started), 1),
            "wrk_statuses": statuses,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def end_to_end(
    base: str,
    channel_id: str,
    engine: AsyncEngine,
    org_id: uuid.UUID,
    settings: Settings,
    workers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    n = E2E_LIVE_ORDERS
    path = f"/webhooks/shopify/{channel_id}"
    shop = "bench.myshopify.com"
    before = await _scalar(engine, org_id, "select count(*) from orders")
    events_before = await _scalar(engine, org_id, "select count(*) from webhook_events")

    async def stored() -> int:
        return int(await _scalar(engine, org_id, "select count(*) from webhook_events")) - events_before

    print(f"2. end to end, live: {n} webhooks by wrk, {len(workers)} worker processes", flush=True)
    load_before = os.getloadavg()[0]
    sent = await _wrk_send(base, path, shop, 0, n, stored)
    done = await wait_for_orders(engine, org_id, before + n)
    live = {
        "orders": n,
        "seconds": round(done - sent["started"], 2),
        "orders_per_s": round(n / (done - sent["started"]), 1),
        "ingress_per_s_same_run": sent["ingress_per_s"],
        "wrk_statuses": sent["wrk_statuses"],
        "load_average_1m": round(max(load_before, os.getloadavg()[0]), 2),
    }
    await _check_reserved(engine, org_id, before + n)
    before, n = before + n, E2E_ORDERS
    # Backlog: n more events stored at once (one statement, the rows ingress writes), the workers
    # running: the time from that commit to the last order is the workers' own rate.
    print(f"   end to end, backlog: {n} events stored at once, {len(workers)} workers drain them", flush=True)
    bodies = [order_body(5_000_000 + i).decode() for i in range(n)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    await store_backlog(engine, org_id, channel_id, bodies)
    done = await wait_for_orders(engine, org_id, before + n)
    backlog = {
        "orders": n,
        "seconds": round(done - started, 2),
        "orders_per_s": round(n / (done - started), 1),
        "load_average_1m": round(max(load_before, os.getloadavg()[0]), 2),
    }
    await _check_reserved(engine, org_id, before + n)
    return {"workers": len(workers), "api_processes": 1, "live": live, "backlog": backlog}


async def store_backlog(engine: AsyncEngine, org_id: uuid.UUID, channel_id: str, bodies: list[str]) -> None:
    """Pending inbox rows as ingress stores them, in one statement, and the NOTIFY that wakes the
    workers (ingress sends it after its commit; here one transaction does both, once)."""
    async with engine.begin() as conn:  # the app role, as the org: RLS applies
        await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(org_id)})
        await conn.execute(
            text(
                """INSERT INTO webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key,
                                              payload, received_at, status, attempts)
                   SELECT gen_random_uuid(), :org, :ch, 'orders/create', 'd' || id, 'e' || id,
                          convert_to(body, 'UTF8'), clock_timestamp(), 'pending', 0
                     FROM (SELECT gen_random_uuid() AS id, body, n
                             FROM unnest(CAST(:bodies AS text[])) WITH ORDINALITY AS t(body, n)) s
                    ORDER BY n"""
            ),
            {"org": org_id, "ch": channel_id, "bodies": bodies},
        )
        await conn.execute(text("select pg_notify('rappit_inbox', '')"))


async def _check_reserved(engine: AsyncEngine, org_id: uuid.UUID, n: int) -> None:
    """Exactly once: one order, one active reservation and one reserve ledger row per webhook."""
    orders = await _scalar(engine, org_id, "select count(*) from orders where status = 'open'")
    held = await _scalar(engine, org_id, "select count(*) from reservations where status = 'active'")
    ledger = await _scalar(engine, org_id, "select count(*) from inventory_ledger where reason = 'reserve'")
    assert orders == held == ledger == n, (orders, held, ledger, n)


async def _org_with_stock(sessionmaker: async_sessionmaker[AsyncSession], code: str, units: int) -> Any:
    async with provide_session(sessionmaker) as session:
        org = await create_organization(
            session,
            name=code,
            code=code + uuid.uuid4().hex[:4].upper(),
            admin_email=f"{code.lower()}@bench.test",
            password="bench password 1234",
        )
    with org_context(org.org.id):
        async with provide_session(sessionmaker) as session:
            await catalogue.create_sku(session, code="BENCH")
            await catalogue.create_warehouse(session, code="W1")
            await stock.adjust(session, sku="BENCH", warehouse="W1", quantity=units, reason="receive")
    return org


async def fairness(
    base: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    token: str,
    settings: Settings,
) -> dict[str, Any]:
    """Org A: a backlog of FAIR_BACKLOG pending events; org B: FAIR_SAMPLES webhooks, one at a time,
    each timed from its request to its committed order."""
    a = await _org_with_stock(sessionmaker, "FA", 10_000_000)
    b = await _org_with_stock(sessionmaker, "FB", 10_000_000)
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        channels = []
        for org, shop in ((a, "fair-a.myshopify.com"), (b, "fair-b.myshopify.com")):
            made = await c.post(
                "/api/v1/channels",
                headers={"Authorization": f"Bearer {org.token.plaintext}"},
                json={"type": "shopify", "name": shop, "address": shop, "webhook_secret": SECRET},
            )
            channels.append(made.json()["channel"]["id"])
        print(f"3. fairness: org A {FAIR_BACKLOG} pending, org B {FAIR_SAMPLES} webhooks", flush=True)
        bodies = [order_body(1_000_000 + i).decode() for i in range(FAIR_BACKLOG)]
        await store_backlog(engine, a.org.id, channels[0], bodies)
        latencies: list[float] = []
        backlog_left: list[int] = []
        for i in range(FAIR_SAMPLES):
            body = order_body(2_000_000 + i)
            ext = str(50_000_000 + 2_000_000 + i)
            backlog_left.append(
                int(
                    await _scalar(
                        engine, a.org.id, "select count(*) from webhook_events where status = 'pending'"
                    )
                )
            )
            started = time.perf_counter()
            r = await c.post(
                f"/webhooks/shopify/{channels[1]}",
                content=body,
                headers=headers(body, "fair-b.myshopify.com"),
            )
            assert r.status_code == 200, r.text
            while not await _scalar(
                engine, b.org.id, f"select count(*) from orders where external_id = '{ext}'"
            ):
                await asyncio.sleep(0.005)
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
    latencies.sort()
    # Server side: from the inbox row's commit to its order's (the queue's share, ingress excluded).
    queued = sorted(
        float(v)
        for v in await _scalars(
            engine,
            b.org.id,
            "select extract(epoch from processed_at - received_at) * 1000 from webhook_events",
        )
    )
    return {
        "stored_to_order_p50_ms": round(statistics.median(queued), 1),
        "stored_to_order_p99_ms": round(queued[max(0, int(len(queued) * 0.99) - 1)], 1),
        "org_a_backlog": FAIR_BACKLOG,
        "org_b_webhooks": FAIR_SAMPLES,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
        "max_ms": round(latencies[-1], 1),
        "org_a_pending_when_sent": {"first": backlog_left[0], "last": backlog_left[-1]},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def e2e_headlines(results: dict[str, Any]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    e = results.get("end_to_end")
    if e:
        out.append(
            headline("webhook -> reserved order, live (orders/s)", e["live"]["orders_per_s"], 1000, unit="/s")
        )
    f = results.get("fairness")
    if f:
        out.append(
            headline(
                "org B webhook -> order p99 behind org A's backlog (ms)",
                f["p99_ms"],
                2000,
                better="lower",
                unit="ms",
            )
        )
    return out


def print_e2e(results: dict[str, Any]) -> None:
    e = results["end_to_end"]
    live, backlog = e["live"], e["backlog"]
    print(
        f"   end to end, live: {live['orders']} orders in {live['seconds']} s = {live['orders_per_s']} "
        f"orders/s ({e['workers']} workers; ingress alone {live['ingress_per_s_same_run']}/s)"
    )
    print(
        f"   end to end, backlog drain: {backlog['orders']} orders in {backlog['seconds']} s = "
        f"{backlog['orders_per_s']} orders/s"
    )
    f = results["fairness"]
    print(
        f"   fairness: org B p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms "
        f"(org A pending {f['org_a_pending_when_sent']}); stored -> order p50 "
        f"{f['stored_to_order_p50_ms']} ms, p99 {f['stored_to_order_p99_ms']} ms"
    )
