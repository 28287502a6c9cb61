"""Webhook benchmarks (issue 4). Run: ./run bench webhooks   (writes bench/results/webhooks.json)

1. Ingress: signed Shopify webhooks over HTTP with keep-alive at a fixed concurrency against the
   running API (verify, store, answer, enqueue), next to a bare Litestar endpoint that only returns
   200, served the same way (one uvicorn process) in the same run.
2. End to end: orders/s from webhook to committed order with reserved stock, worker processes claiming
   the inbox, live (wrk) and draining a backlog; 3. fairness: org B's webhook -> order latency while
   org A holds a backlog (bench/_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _e2e as e2e
import httpx
from _e2e import e2e_headlines, end_to_end, fairness, print_e2e, wait_for_orders, worker_processes
from _stack import api_server, bench_args, bench_stack, free_port, write_results

from rappit.integrations.channels.signatures import sign
from rappit.inventory import catalogue, stock
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.context import org_context
from rappit.tenancy.service import create_organization

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
INGRESS_REQUESTS = int(os.environ.get("BENCH_INGRESS_REQUESTS", "3000"))
SECRET = "shpss_bench_secret_0123456789abcdef"


def smoke_sizes() -> None:
    """--smoke: both sections, tiny (a run-through in seconds, not a measurement)."""
    global CONCURRENCY, INGRESS_REQUESTS
    CONCURRENCY, INGRESS_REQUESTS = 4, 20
    e2e.smoke()


BARE_APP = """
from litestar import Litestar, Request, post

@post("/hook", status_code=200)
async def hook(request: Request) -> dict:
    await request.body()
    return {"status": "ok"}

app = Litestar([hook])
"""


def order(n: int) -> bytes:
    return json.dumps(
        {
            "id": 10_000_000 + n,
            "name": f"#{n}",
            "currency": "USD",
            "updated_at": "2026-11-01T12:00:00+00:00",
            "cancelled_at": None,
            "line_items": [
                {"id": n * 10, "sku": "BENCH", "title": "Bench item", "quantity": 1, "price": "10.00"}
            ],
        }
    ).encode()


async def blast(url: str, bodies: list[bytes], headers_for: Any) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                resp = await client.post(url, content=body, headers=headers_for(body))
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(bodies),
        "statuses": statuses,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(bodies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
    }


async def main(results_dir: Path) -> None:
    with bench_stack("webhooks") as stack:
        settings = stack.settings
        engine = make_engine(settings, pool_size=4, max_overflow=0)
        sessionmaker = make_sessionmaker(engine)
        async with provide_session(sessionmaker) as session:
            org = await create_organization(
                session,
                name="Bench",
                code="BW" + uuid.uuid4().hex[:4].upper(),
                admin_email="bench@bench.test",
                password="bench password 1234",
            )
        with org_context(org.org.id):
            async with provide_session(sessionmaker) as session:
                await catalogue.create_sku(session, code="BENCH")
                await catalogue.create_warehouse(session, code="W1")
                await stock.adjust(
                    session, sku="BENCH", warehouse="W1", quantity=10_000_000, reason="receive"
                )
        token = org.token.plaintext
        results: dict[str, Any] = {}
        with api_server(settings) as base:
            async with httpx.AsyncClient(base_url=base) as c:
                made = (
                    await c.post(
                        "/api/v1/channels",
                        headers={"Authorization": f"Bearer {token}"},
                        json={
                            "type": "shopify",
                            "name": "Bench",
                            "address": "bench.myshopify.com",
                            "webhook_secret": SECRET,
                        },
                    )
                ).json()
            channel_id = made["channel"]["id"]

            def shopify_headers(body: bytes) -> dict[str, str]:
                return {
                    "Content-Type": "application/json",
                    "X-Shopify-Hmac-Sha256": sign(SECRET, body),
                    "X-Shopify-Topic": "orders/create",
                    "X-Shopify-Shop-Domain": "bench.myshopify.com",
                    "X-Shopify-Event-Id": str(uuid.uuid4()),
                }

            # Baseline: a bare Litestar endpoint, same server, same client, same bodies.
            bare_dir = tempfile.mkdtemp(prefix="rappit-bench-")
            with open(os.path.join(bare_dir, "_bare_app.py"), "w") as f:
                f.write(BARE_APP)
            bare_port = free_port()
            bare = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "_bare_app:app",
                    "--app-dir",
                    bare_dir,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(bare_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ]
            )
            try:
                for _ in range(50):
                    try:
                        httpx.post(f"http://127.0.0.1:{bare_port}/hook", content=b"{}")
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                bodies = [order(i) for i in range(INGRESS_REQUESTS)]
                print(f"1. ingress: {INGRESS_REQUESTS} requests at concurrency {CONCURRENCY}", flush=True)
                results["bare_litestar"] = await blast(
                    f"http://127.0.0.1:{bare_port}/hook", bodies, shopify_headers
                )
                results["rappit_ingress"] = await blast(
                    f"{base}/webhooks/shopify/{channel_id}", bodies, shopify_headers
                )
            finally:
                bare.terminate()
                bare.wait(10)
                shutil.rmtree(bare_dir, ignore_errors=True)
            results["ingress_ratio_vs_bare"] = round(
                results["rappit_ingress"]["requests_per_s"] / results["bare_litestar"]["requests_per_s"], 2
            )

            # End to end and fairness (issue 11, goals 2 and 6): worker processes claim the inbox.
            accepted = results["rappit_ingress"]["statuses"].get(200, 0)
            assert accepted == INGRESS_REQUESTS, results["rappit_ingress"]["statuses"]
            with worker_processes(settings, e2e.E2E_WORKERS) as workers:
                await wait_for_orders(engine, org.org.id, INGRESS_REQUESTS)  # what ingress stored, drained
                results["end_to_end"] = await end_to_end(
                    base, channel_id, engine, org.org.id, settings, workers
                )
                results["fairness"] = await fairness(base, sessionmaker, engine, token, settings)
        await engine.dispose()
    config = {
        "concurrency": CONCURRENCY,
        "ingress_requests": INGRESS_REQUESTS,
        "e2e_orders": e2e.E2E_ORDERS,
        "e2e_live_orders": e2e.E2E_LIVE_ORDERS,
        "e2e_workers": e2e.E2E_WORKERS,
        "fairness_backlog": e2e.FAIR_BACKLOG,
        "fairness_samples": e2e.FAIR_SAMPLES,
    }
    path = write_results("webhooks", {**results, "config": config}, results_dir, e2e_headlines(results))
    print(f"\n   {'endpoint':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses")
    for name in ("bare_litestar", "rappit_ingress"):
        r = results[name]
        print(f"   {name:<18}{r['requests_per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}  {r['statuses']}")
    print(f"   ingress / bare ratio: {results['ingress_ratio_vs_bare']}")
    print_e2e(results)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    asyncio.run(main(args.results))
