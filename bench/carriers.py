"""Carrier benchmarks (issue 9). Run: ./run bench carriers   (writes bench/results/carriers.json)

1. Label purchases per second through Rappit (POST /api/v1/shipments: API -> adapter -> breaker ->
   FedEx sandbox -> label stored; one uvicorn process), next to raw httpx calls to the same sandbox's
   ship endpoint in the same run. The sandbox runs in its own process. The Rappit side is driven by
   wrk (C; a Lua script gives every request its own Idempotency-Key) when it is installed, since a
   Python client on two cores saturates before the server does (NOTES.md); the same httpx client is
   also run against Rappit, so there is a same-client ratio too. Every client's CPU is reported.
   Purchases are counted in the database (shipments stored `label_purchased` in the window).
2. Time to fail while the breaker is open: the account's breaker opened (as five failures would),
   then sequential purchases, each answered 503 CARRIER_UNAVAILABLE without reaching the sandbox;
   p50/p99 next to the same sequential purchases with the breaker closed.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psutil
from _stack import api_server, bench_args, bench_stack, free_port, write_results
from sqlalchemy import text

from rappit.integrations.carriers.base import Address, LabelFormat, LabelRequest, Parcel
from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.carriers.fedex import mapper as fedex_mapper
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.service import create_organization

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
RAW_REQUESTS = int(os.environ.get("BENCH_RAW_REQUESTS", "3000"))
RAPPIT_REQUESTS = int(os.environ.get("BENCH_RAPPIT_REQUESTS", "1500"))
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "15"))
SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "300"))
OPEN_CALLS = int(os.environ.get("BENCH_OPEN_CALLS", "500"))
WRK = shutil.which("wrk")
SATURATED = 0.9
"""A client using this share of one core (or more) is the bottleneck, not the server."""

CLIENT_ID, CLIENT_SECRET, ACCOUNT = "bench-fedex", "bench-fedex-secret", "510087020"
FROM = {
    "name": "Bench Shipper",
    "company": "Bench",
    "street_lines": ["1 Dock St"],
    "city": "Memphis",
    "postal_code": "38118",
    "country_code": "US",
    "phone": "9015550100",
}
TO = {
    "name": "Bo Buyer",
    "street_lines": ["2 Main St"],
    "city": "Austin",
    "postal_code": "78701",
    "country_code": "US",
    "phone": "5125550100",
}
PARCEL = {"weight_grams": 1500, "length_cm": 30, "width_cm": 20, "height_cm": 10}


def smoke_sizes() -> None:
    """--smoke: every section, tiny (a run-through in seconds, not a measurement)."""
    global CONCURRENCY, RAW_REQUESTS, RAPPIT_REQUESTS, WRK_SECONDS, SEQUENTIAL, OPEN_CALLS
    CONCURRENCY, RAW_REQUESTS, RAPPIT_REQUESTS, WRK_SECONDS, SEQUENTIAL, OPEN_CALLS = 4, 20, 10, 1, 5, 20


SANDBOX = """
import signal, sys, threading
from rappit.integrations.sandboxes._loopback import Reply
from rappit.integrations.sandboxes.fedex import FakeFedEx

class Counted(FakeFedEx):
    def handle(self, method, path, headers, body):
        if path == "/__bench/ship-calls":  # how many label calls reached the sandbox
            return Reply(200, {"ship_calls": self.api_calls("/ship/v1/shipments")})
        return super().handle(method, path, headers, body)

fake = Counted(sys.argv[2], sys.argv[3]).start(int(sys.argv[1]))
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
fake.stop()
"""

LUA = """
local counter = 0
local prefix = "%(prefix)s"
local body = [==[%(body)s]==]
local headers = {
  ["Authorization"] = "Bearer %(token)s",
  ["Content-Type"] = "application/json",
}
request = function()
  counter = counter + 1
  headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format("POST", "/api/v1/shipments", headers, body)
end
"""

LUA_RAW = """
local body = [==[%(body)s]==]
local headers = {
  ["Authorization"] = "Bearer %(token)s",
  ["Content-Type"] = "application/json",
}
request = function()
  return wrk.format("POST", "/ship/v1/shipments", headers, body)
end
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * p) - 1)], 2)


def ship_calls(sandbox: str) -> int:
    """Label calls the sandbox has answered so far."""
    return int(httpx.get(f"{sandbox}/__bench/ship-calls").json()["ship_calls"])


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def blast(url: str, count: int, body: bytes, headers_for: Any) -> dict[str, Any]:
    """`count` POSTs at CONCURRENCY over keep-alive connections, from this (Python) process."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = iter(range(count))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            for n in remaining:
                started = time.perf_counter()
                resp = await client.post(url, content=body, headers=headers_for(n))
                resp.json()  # read and parse the answer, as a caller does
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    return {
        "client": "httpx (Python, this process)",
        "requests": count,
        "statuses": statuses,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(count / elapsed, 1),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "client_cpu_cores": round(cpu / elapsed, 2),
        "client_saturated": cpu / elapsed >= SATURATED,
    }


def run_wrk(base: str, script: str, seconds: int) -> dict[str, Any]:
    """wrk -t1 -cCONCURRENCY for `seconds` with a Lua script; its CPU from the children's rusage."""
    assert WRK is not None
    folder = tempfile.mkdtemp(prefix="rappit-bench-wrk-")
    try:
        path = Path(folder) / "script.lua"
        path.write_text(script)
        cpu0, started = children_cpu(), time.perf_counter()
        out = subprocess.run(
            [
                WRK,
                "-t1",
                f"-c{CONCURRENCY}",
                f"-d{seconds}s",
                "--timeout",
                "120s",
                "--latency",
                "-s",
                str(path),
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        elapsed = time.perf_counter() - started
        cpu = children_cpu() - cpu0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def latency(label: str) -> float | None:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            return None
        value, unit = float(found.group(1)), found.group(2)
        return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)

    return {
        "client": f"wrk -t1 -c{CONCURRENCY} -d{seconds}s",
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(total / seconds, 1),
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "client_cpu_cores": round(cpu / elapsed, 2),
        "client_saturated": cpu / elapsed >= SATURATED,
    }


async def breaker_storage(redis_url: str, workers: int = 5, calls: int = 100) -> dict[str, Any]:
    """The cost of the breaker's blocking Redis storage where it runs, on the event loop: guarded
    calls (each 3-5 Redis round trips) from `workers` tasks while a 1 ms ticker measures how late the
    loop wakes it (moved here from the test suite: a timing figure, not a pass/fail rule)."""
    from rappit.integrations.carriers.breaker import BreakerBoard

    board = BreakerBoard(redis_url)
    breaker = board.for_account("fedex", str(uuid.uuid4()))
    lateness: list[float] = []
    per_call: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append(time.perf_counter() - before - 0.001)

    async def guarded() -> None:
        for _ in range(calls):
            started = time.perf_counter()
            async with breaker.guard():
                await asyncio.sleep(0)
            per_call.append(time.perf_counter() - started)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    idle = len(lateness)
    started = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(workers)))
    total = time.perf_counter() - started
    running = False
    await task
    board.close()
    ms = [v * 1000 for v in per_call]
    busy = [v * 1000 for v in lateness[idle:]] or [0.0]
    quiet = [v * 1000 for v in lateness[:idle]] or [0.0]
    return {
        "guarded_calls": workers * calls,
        "us_per_call": round(total / (workers * calls) * 1e6, 1),
        "call_p50_ms": pct(ms, 0.50),
        "call_p99_ms": pct(ms, 0.99),
        "loop_lateness_idle_p99_ms": pct(quiet, 0.99),
        "loop_lateness_busy_p99_ms": pct(busy, 0.99),
        "loop_lateness_busy_max_ms": round(max(busy), 2),
    }


async def main(results_dir: Path) -> None:
    results: dict[str, Any] = {}
    with bench_stack("carriers") as stack:
        settings = stack.settings
        print("0. breaker storage on the event loop (blocking Redis client)", flush=True)
        results["breaker_storage"] = await breaker_storage(settings.redis_url)
        engine = make_engine(settings, pool_size=2, max_overflow=0)
        sessionmaker = make_sessionmaker(engine)
        async with provide_session(sessionmaker) as session:
            org = await create_organization(
                session,
                name="Bench",
                code="BC" + uuid.uuid4().hex[:4].upper(),
                admin_email="bench@bench.test",
                password="bench password 1234",
            )
        org_id = str(org.org.id)
        auth = {"Authorization": f"Bearer {org.token.plaintext}"}

        async def sql(query: str) -> Any:
            async with engine.connect() as conn:
                await conn.execute(text("select set_config('app.org_id', :o, false)"), {"o": org_id})
                return (await conn.execute(text(query))).scalar_one()

        sandbox_port = free_port()
        sandbox = subprocess.Popen(
            [sys.executable, "-c", SANDBOX, str(sandbox_port), CLIENT_ID, CLIENT_SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sandbox.stdout is not None and sandbox.stdout.readline().strip() == "ready"
            fedex = f"http://127.0.0.1:{sandbox_port}"
            with api_server(settings) as base:
                api_proc, sandbox_proc = None, psutil.Process(sandbox.pid)
                for child in psutil.Process().children():
                    if child.pid != sandbox.pid and "uvicorn" in " ".join(child.cmdline()):
                        api_proc = child
                async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as c:
                    for path, body in (
                        ("/api/v1/skus", {"code": "BENCH"}),
                        ("/api/v1/warehouses", {"code": "W1"}),
                        (
                            "/api/v1/inventory/adjust",
                            {"sku": "BENCH", "warehouse_code": "W1", "quantity": 1000, "reason": "receive"},
                        ),
                    ):
                        made = await c.post(path, json=body)
                        assert made.status_code in (200, 201), made.text
                    made = await c.post(
                        "/api/v1/orders",
                        json={
                            "currency": "USD",
                            "lines": [
                                {"sku": "BENCH", "quantity": 1, "unit_price_minor": 1000, "title": "Bench"}
                            ],
                        },
                    )
                    assert made.status_code == 201, made.text
                    order_id = made.json().get("order", made.json())["id"]
                    made = await c.post(
                        "/api/v1/carrier-accounts",
                        json={
                            "carrier": "fedex",
                            "name": "FedEx bench",
                            "credentials": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                            "account_number": ACCOUNT,
                            "base_url": fedex,
                        },
                    )
                    assert made.status_code == 201, made.text
                    account_id = made.json()["account"]["id"]
                    purchase = {
                        "order_id": order_id,
                        "carrier_account_id": account_id,
                        "service": "FEDEX_GROUND",
                        "ship_from": FROM,
                        "ship_to": TO,
                        "parcels": [PARCEL],
                    }
                    warm = await c.post(
                        "/api/v1/shipments", json=purchase, headers={"Idempotency-Key": "warm-up"}
                    )
                    assert warm.status_code == 201, warm.text  # also fetches and caches the OAuth token
                purchase_body = httpx.Request("POST", base, json=purchase).content

                # The raw call: the body Rappit's mapper sends for this purchase, straight to the sandbox.
                token = httpx.post(
                    f"{fedex}/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                    },
                ).json()["access_token"]
                raw_request = LabelRequest(
                    shipper=Address("Bench Shipper", ("1 Dock St",), "Memphis", "38118", "US", "9015550100"),
                    recipient=Address("Bo Buyer", ("2 Main St",), "Austin", "78701", "US", "5125550100"),
                    parcels=(Parcel(**PARCEL),),
                    ship_date=date.today(),
                    service="FEDEX_GROUND",
                    reference=str(uuid.uuid4()),
                    label_format=LabelFormat.PDF,
                )
                raw_body = httpx.Request(
                    "POST", fedex, json=fedex_mapper.ship_request(ACCOUNT, raw_request)
                ).content
                raw_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

                print(f"1. label purchases at concurrency {CONCURRENCY}", flush=True)
                sandbox_cpu0 = cpu_seconds(sandbox_proc)
                results["raw_httpx_to_sandbox"] = await blast(
                    f"{fedex}/ship/v1/shipments", RAW_REQUESTS, raw_body, lambda n: raw_headers
                )
                spent = cpu_seconds(sandbox_proc) - sandbox_cpu0
                raw = results["raw_httpx_to_sandbox"]
                raw["sandbox_cpu_cores"] = round(spent / raw["seconds"], 2)
                raw["sandbox_cpu_ms_per_label"] = round(1000 * spent / RAW_REQUESTS, 2)
                if WRK:
                    script = LUA_RAW % {"body": raw_body.decode(), "token": token}
                    calls0 = ship_calls(fedex)
                    results["raw_wrk_to_sandbox"] = run_wrk(fedex, script, WRK_SECONDS)
                    results["raw_wrk_to_sandbox"]["labels_sold_by_sandbox"] = ship_calls(fedex) - calls0

                run_id = uuid.uuid4().hex[:8]

                def rappit_headers(n: int) -> dict[str, str]:
                    return {**auth, "Content-Type": "application/json", "Idempotency-Key": f"h-{run_id}-{n}"}

                stored0 = await sql("select count(*) from shipments where status = 'label_purchased'")
                api_cpu0 = cpu_seconds(api_proc) if api_proc else 0.0
                sandbox_cpu0 = cpu_seconds(sandbox_proc)
                through = await blast(
                    f"{base}/api/v1/shipments", RAPPIT_REQUESTS, purchase_body, rappit_headers
                )
                stored = (
                    await sql("select count(*) from shipments where status = 'label_purchased'") - stored0
                )
                through["labels_stored"] = stored
                through["labels_per_s"] = round(stored / through["seconds"], 1)
                if api_proc:
                    spent = cpu_seconds(api_proc) - api_cpu0
                    through["api_cpu_cores"] = round(spent / through["seconds"], 2)
                    through["api_cpu_ms_per_label"] = round(1000 * spent / max(stored, 1), 1)
                through["sandbox_cpu_cores"] = round(
                    (cpu_seconds(sandbox_proc) - sandbox_cpu0) / through["seconds"], 2
                )
                results["rappit_httpx"] = through

                if WRK:
                    script = LUA % {
                        "prefix": f"w-{run_id}",
                        "body": purchase_body.decode(),
                        "token": auth["Authorization"].split()[1],
                    }
                    window0 = await sql("select clock_timestamp()::text")
                    api_cpu0 = cpu_seconds(api_proc) if api_proc else 0.0
                    sandbox_cpu0 = cpu_seconds(sandbox_proc)
                    run = run_wrk(base, script, WRK_SECONDS)
                    window1 = await sql("select clock_timestamp()::text")
                    await asyncio.sleep(1)  # let purchases in flight at the end settle
                    stored = await sql(
                        "select count(*) from shipments where status = 'label_purchased' "
                        f"and updated_at between '{window0}' and '{window1}'"
                    )
                    run["labels_stored"] = stored
                    run["labels_per_s"] = round(stored / WRK_SECONDS, 1)
                    if api_proc:
                        spent = cpu_seconds(api_proc) - api_cpu0
                        run["api_cpu_cores"] = round(spent / run["seconds"], 2)
                        run["api_cpu_ms_per_label"] = round(1000 * spent / max(stored, 1), 1)
                    run["sandbox_cpu_cores"] = round(
                        (cpu_seconds(sandbox_proc) - sandbox_cpu0) / run["seconds"], 2
                    )
                    results["rappit_wrk"] = run

                rappit = results.get("rappit_wrk", results["rappit_httpx"])
                results["headline"] = {
                    "rappit_labels_per_s": rappit["labels_per_s"],
                    "rappit_client": rappit["client"],
                    "raw_sandbox_calls_per_s_httpx": results["raw_httpx_to_sandbox"]["requests_per_s"],
                    "ratio_rappit_vs_raw_httpx": round(
                        rappit["labels_per_s"] / results["raw_httpx_to_sandbox"]["requests_per_s"], 3
                    ),
                    "ratio_same_client_httpx": round(
                        results["rappit_httpx"]["labels_per_s"]
                        / results["raw_httpx_to_sandbox"]["requests_per_s"],
                        3,
                    ),
                }
                if WRK:
                    results["headline"]["raw_sandbox_calls_per_s_wrk"] = results["raw_wrk_to_sandbox"][
                        "requests_per_s"
                    ]
                    results["headline"]["ratio_same_client_wrk"] = round(
                        results["rappit_wrk"]["labels_per_s"]
                        / results["raw_wrk_to_sandbox"]["requests_per_s"],
                        3,
                    )

                # 2. Sequential purchases with the breaker closed, then open.
                print(f"2. time to fail with the breaker open: {OPEN_CALLS} calls", flush=True)

                async def sequential(
                    count: int, tag: str, before: Any = lambda: None
                ) -> tuple[list[float], dict[str, int]]:
                    latencies: list[float] = []
                    outcomes: dict[str, int] = {}
                    async with httpx.AsyncClient(timeout=30) as client:
                        for n in range(count):
                            before()  # not timed
                            started = time.perf_counter()
                            resp = await client.post(
                                f"{base}/api/v1/shipments",
                                content=purchase_body,
                                headers={**rappit_headers(n), "Idempotency-Key": f"{tag}-{run_id}-{n}"},
                            )
                            latencies.append((time.perf_counter() - started) * 1000)
                            code = (
                                resp.json().get("error", {}).get("code") if resp.status_code >= 400 else None
                            )
                            key = f"{resp.status_code} {code}" if code else str(resp.status_code)
                            outcomes[key] = outcomes.get(key, 0) + 1
                    return latencies, outcomes

                floor: list[float] = []  # the API's own floor: auth and one read, same client, same calls
                async with httpx.AsyncClient(timeout=30) as client:
                    for _ in range(SEQUENTIAL):
                        started = time.perf_counter()
                        assert (await client.get(f"{base}/api/v1/me", headers=auth)).status_code == 200
                        floor.append((time.perf_counter() - started) * 1000)
                results["api_floor_get_me_sequential"] = {
                    "calls": SEQUENTIAL,
                    "p50_ms": pct(floor, 0.5),
                    "p99_ms": pct(floor, 0.99),
                }
                closed, closed_outcomes = await sequential(SEQUENTIAL, "closed")
                board = BreakerBoard(settings.redis_url)
                try:
                    breaker = board.for_account("fedex", account_id)
                    calls_before = ship_calls(fedex)
                    # Opened (as five failures would) again before each call: on a slow machine the
                    # calls outlast the 60 s reset timeout, and a trial call would go to the sandbox.
                    opened, open_outcomes = await sequential(OPEN_CALLS, "open", breaker.cb.open)
                    calls_after = ship_calls(fedex)
                    state = board.for_account("fedex", account_id).snapshot().state
                finally:
                    board.close()
                assert open_outcomes == {"503 CARRIER_UNAVAILABLE": OPEN_CALLS}, open_outcomes
                results["breaker_open"] = {
                    "calls": OPEN_CALLS,
                    "outcomes": open_outcomes,
                    "p50_ms": pct(opened, 0.5),
                    "p99_ms": pct(opened, 0.99),
                    "mean_ms": round(statistics.fmean(opened), 2),
                    "requests_reaching_sandbox": calls_after - calls_before,
                    "breaker_state_after": state,
                }
                results["breaker_closed_sequential"] = {
                    "calls": SEQUENTIAL,
                    "outcomes": closed_outcomes,
                    "p50_ms": pct(closed, 0.5),
                    "p99_ms": pct(closed, 0.99),
                }
                results["breaker_open_p50_vs_closed_p50"] = round(
                    results["breaker_open"]["p50_ms"] / results["breaker_closed_sequential"]["p50_ms"], 3
                )
        finally:
            sandbox.terminate()
            sandbox.wait(10)
        await engine.dispose()

    config = {
        "concurrency": CONCURRENCY,
        "raw_requests": RAW_REQUESTS,
        "rappit_httpx_requests": RAPPIT_REQUESTS,
        "wrk_seconds": WRK_SECONDS if WRK else None,
        "wrk": WRK,
        "sequential_closed": SEQUENTIAL,
        "open_calls": OPEN_CALLS,
        "note": "2 vCPU shared by client, API (one uvicorn process), sandbox, PostgreSQL and Redis",
    }
    path = write_results("carriers", {**results, "config": config}, results_dir)
    print(f"\n   {'run':<24}{'req/s':>9}{'labels/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'client cpu':>12}")
    for name in ("raw_httpx_to_sandbox", "raw_wrk_to_sandbox", "rappit_httpx", "rappit_wrk"):
        if name in results:
            r = results[name]
            saturated = " (saturated)" if r["client_saturated"] else ""
            print(
                f"   {name:<24}{r['requests_per_s']:>9}{r.get('labels_per_s', '-')!s:>10}{r['p50_ms']!s:>9}"
                f"{r['p99_ms']!s:>9}{r['client_cpu_cores']:>12}{saturated}"
            )
    for name in ("rappit_httpx", "rappit_wrk"):
        if "api_cpu_ms_per_label" in results.get(name, {}):
            r = results[name]
            print(
                f"   {name}: API process CPU {r['api_cpu_ms_per_label']} ms per label"
                f" ({r['api_cpu_cores']} cores)"
            )
    h = results["headline"]
    print(
        f"   Rappit / raw sandbox calls (httpx): {h['ratio_rappit_vs_raw_httpx']}"
        f"  (Rappit via {h['rappit_client']})"
    )
    if "ratio_same_client_wrk" in h:
        print(
            f"   same client, wrk: {h['ratio_same_client_wrk']};"
            f"  same client, httpx: {h['ratio_same_client_httpx']}"
        )
    b = results["breaker_open"]
    c = results["breaker_closed_sequential"]
    print(
        f"   breaker open: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms over {b['calls']} calls "
        f"({b['requests_reaching_sandbox']} reached the sandbox);"
        f" closed: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms"
    )
    f = results["api_floor_get_me_sequential"]
    print(f"   API floor (GET /api/v1/me, sequential): p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms")
    g = results["breaker_storage"]
    print(
        f"   breaker storage: {g['us_per_call']} us per guarded call (p99 {g['call_p99_ms']} ms); event loop"
        f" lateness p99 {g['loop_lateness_busy_p99_ms']} ms busy vs {g['loop_lateness_idle_p99_ms']} ms idle"
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    asyncio.run(main(args.results))
