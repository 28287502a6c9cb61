"""Webhook benchmarks (issues 4, 11). Run: ./run bench webhooks   (writes bench/results/webhooks.json)

1. Ingress, driven by wrk (C, one thread, 32 connections, 15 s after a 3 s warm-up): one signed
   ~3 KiB Shopify orders/create body, a unique X-Shopify-Event-Id per request (a Lua counter), rate
   limits raised. Against, one uvicorn process each, measured back to back in each of five rounds
   (alternating which goes first; the median round is the headline, every round in the JSON): a bare
   Litestar endpoint that reads the body; and Rappit's /webhooks/shopify/{id} (verify, store and
   commit, answer). Reported: req/s and their ratios, the server process's CPU ms per request (and
   that ratio), wrk's own CPU (a client near a full core would be the bottleneck), the load average,
   and the inbox rows committed.
2. End to end: orders/s from webhook to committed order with reserved stock, worker processes claiming
   the inbox, live (wrk) and draining a backlog; 3. fairness: org B's webhook -> order latency while
   org A holds a backlog (bench/_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
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
from pathlib import Path
from typing import Any

import _e2e as e2e
import httpx
from _e2e import e2e_headlines, end_to_end, fairness, print_e2e, worker_processes
from _stack import (
    SATURATED,
    api_process,
    api_server,
    bench_args,
    bench_stack,
    cpu_seconds,
    cpu_seconds_named,
    free_port,
    headline,
    write_results,
)
from sqlalchemy import text

from rappit.integrations.channels.signatures import sign
from rappit.inventory import catalogue, stock
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.tenancy.context import org_context
from rappit.tenancy.service import create_organization

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "15"))
WARMUP_SECONDS = 3
SECRET = "shpss_bench_secret_0123456789abcdef"
WRK = shutil.which("wrk")
INGRESS_ONLY = os.environ.get("BENCH_INGRESS_ONLY") == "1"
"""Set (BENCH_INGRESS_ONLY=1), only the ingress rounds run: a quick A/B of an ingress change. The JSON
it writes has no end-to-end or fairness figures: point --results away from bench/results."""
PROFILE_DIR = os.environ.get("BENCH_PROFILE_DIR")
"""Set, each server is sampled by py-spy during its measured run (raw folded stacks per label)."""


def smoke_sizes() -> None:
    """--smoke: both sections, tiny (a run-through in seconds, not a measurement)."""
    global CONCURRENCY, WRK_SECONDS, WARMUP_SECONDS, ROUNDS
    CONCURRENCY, WRK_SECONDS, WARMUP_SECONDS, ROUNDS = 4, 1, 1, 1
    e2e.smoke()


BARE_APP = """
from litestar import Litestar, Request, post

@post("/hook", status_code=200)
async def hook(request: Request) -> dict:
    await request.body()
    return {"status": "ok"}

app = Litestar([hook])
"""

# One request per call; the body and every header but the event id are fixed (Shopify's HMAC covers
# the body only), so each request is a new, correctly signed delivery.
WRK_SCRIPT = """
local counter = 0
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Shopify-Hmac-Sha256"] = "{hmac}"
wrk.headers["X-Shopify-Topic"] = "orders/create"
wrk.headers["X-Shopify-Shop-Domain"] = "bench.myshopify.com"
request = function()
  counter = counter + 1
  wrk.headers["X-Shopify-Event-Id"] = "{prefix}-" .. counter
  return wrk.format()
end
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


ROUNDS = int(os.environ.get("BENCH_INGRESS_ROUNDS", "5"))
"""Ingress rounds: in each, the bare endpoint and Rappit are measured back to back (in alternating
order), and the round's ratio is theirs. This machine's speed drifts by tens of per cent within a
minute (other tenants of the host): one bare run, then one Rappit run, measured the drift as often as
the code. The headline is the median round's ratio; every round is in the JSON. Five rounds: single
rounds of the same code spread from 0.55x to 0.73x in one day, and a median of three moved with
one outlier."""


def big_order(n: int) -> bytes:
    """A Shopify orders/create body of about 3 KiB (customer, addresses, three lines, shipping)."""
    address = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "address1": "12 Analytical Engine Street",
        "address2": "Flat 3",
        "city": "London",
        "zip": "NW1 6XE",
        "province": "England",
        "country": "United Kingdom",
        "country_code": "GB",
        "phone": "+44 20 7946 0958",
    }
    lines = [
        {
            "id": n * 10 + i,
            "variant_id": 40_000_000 + i,
            "product_id": 7_000_000 + i,
            "sku": "BENCH",
            "title": f"Bench item {i}",
            "variant_title": "Large / Blue",
            "vendor": "Bench Co",
            "quantity": 1,
            "price": "10.00",
            "grams": 450,
            "requires_shipping": True,
            "taxable": True,
            "fulfillment_service": "manual",
            "tax_lines": [{"title": "VAT", "price": "2.00", "rate": 0.2}],
        }
        for i in range(4)
    ]
    body = {
        "id": 10_000_000 + n,
        "name": f"#{n}",
        "order_number": 1000 + n,
        "email": "ada@example.com",
        "currency": "USD",
        "created_at": "2026-11-01T12:00:00+00:00",
        "updated_at": "2026-11-01T12:00:00+00:00",
        "cancelled_at": None,
        "financial_status": "paid",
        "fulfillment_status": None,
        "total_price": "36.00",
        "subtotal_price": "30.00",
        "total_tax": "6.00",
        "customer": {
            "id": 5_000_000,
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
        },
        "billing_address": address,
        "shipping_address": address,
        "shipping_lines": [{"title": "Standard", "price": "0.00", "code": "STANDARD", "source": "shopify"}],
        "note": "Please leave the parcel with the neighbour at number 14 if nobody is at home.",
        "note_attributes": [{"name": "gift_message", "value": "Happy birthday! " * 8}],
        "client_details": {
            "browser_ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
            "accept_language": "en-GB,en;q=0.9",
        },
        "discount_codes": [{"code": "FLASH10", "amount": "3.00", "type": "percentage"}],
        "tags": "flash-sale, bench",
        "line_items": lines,
    }
    return json.dumps(body).encode()


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors:.*")
_PCT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, script: Path, seconds: int) -> tuple[dict[str, Any], float]:
    """wrk's figures, and its own CPU seconds (user + system, from wait4)."""
    assert WRK, "wrk is not installed (apt-get install wrk)"
    cmd = [WRK, "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = proc.stdout, proc.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {err or out}")
    total = int(_TOTAL.search(out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := _NON2XX.search(out)) else 0
    percentiles = {f"p{p}_ms": round(_ms(v, u), 2) for p, v, u in _PCT.findall(out)}
    errors = m.group(0) if (m := _ERRORS.search(out)) else None
    return {
        "requests": total,
        "non_2xx": non2xx,
        "socket_errors": errors,
        "requests_per_s": float(_RPS.search(out).group(1)),  # type: ignore[union-attr]
        **percentiles,
    }, cpu


def measure(label: str, url: str, script: Path, server_pid: int) -> dict[str, Any]:
    """A warm-up, then the measured wrk run; the server's and wrk's CPU over the measured run."""
    run_wrk(url, script, WARMUP_SECONDS)
    load_before = os.getloadavg()[0]
    profiler = None
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if PROFILE_DIR and spy:  # a profiling run: its figures are slowed by the sampling
        out = Path(PROFILE_DIR) / f"{label.replace(' ', '_').replace(',', '')}.txt"
        profiler = subprocess.Popen(
            [spy, "record", "-p", str(server_pid), "-d", str(WRK_SECONDS), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    server_cpu, postgres_cpu = cpu_seconds(server_pid), cpu_seconds_named("postgres")
    started = time.perf_counter()
    figures, wrk_cpu = run_wrk(url, script, WRK_SECONDS)
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - server_cpu
    postgres_cpu = cpu_seconds_named("postgres") - postgres_cpu
    if profiler is not None:
        profiler.wait(30)
    ok = figures["requests"] - figures["non_2xx"]
    figures.update(
        server_cpu_share_of_one_core=round(server_cpu / wall, 2),
        server_cpu_ms_per_request=round(server_cpu * 1000 / max(ok, 1), 3),
        postgres_cpu_share_of_one_core=round(postgres_cpu / wall, 2),
        postgres_cpu_ms_per_request=round(postgres_cpu * 1000 / max(ok, 1), 3),
        wrk_cpu_share_of_one_core=round(wrk_cpu / wall, 2),
        wrk_saturated=wrk_cpu / wall >= SATURATED,
        load_average_1m_before=round(load_before, 2),
        load_average_1m_after=round(os.getloadavg()[0], 2),
    )
    print(
        f"   {label:<22}{figures['requests_per_s']:>9} req/s  p50 {figures.get('p50_ms')} ms  "
        f"p99 {figures.get('p99_ms')} ms  non-2xx {figures['non_2xx']}  server "
        f"{figures['server_cpu_ms_per_request']} ms CPU/req "
        f"({figures['server_cpu_share_of_one_core']} core)  "
        f"postgres {figures['postgres_cpu_share_of_one_core']} core  "
        f"wrk {figures['wrk_cpu_share_of_one_core']} core  load {figures['load_average_1m_after']}",
        flush=True,
    )
    if figures["wrk_saturated"]:
        print(f"WARNING {label}: wrk used a full core: the client may set the pace", file=sys.stderr)
    return figures


def write_script(folder: Path, name: str, body: bytes, prefix: str) -> Path:
    body_path = folder / f"{name}.json"
    body_path.write_bytes(body)
    script = folder / f"{name}.lua"
    script.write_text(
        WRK_SCRIPT.replace("{body}", str(body_path))
        .replace("{hmac}", sign(SECRET, body))
        .replace("{prefix}", prefix)
    )
    return script


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


async def blast(url: str, bodies: list[bytes], headers_for: Any) -> dict[str, Any]:
    """The end-to-end section's sender (httpx: it only has to outpace one worker)."""
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

        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
    latencies.sort()
    return {"requests": len(bodies), "statuses": statuses, "p50_ms": round(statistics.median(latencies), 2)}


def start_bare(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "_bare_app.py").write_text(BARE_APP)
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_bare_app:app",
            "--app-dir",
            str(folder),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    )
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/hook", content=b"{}")
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return bare, f"http://127.0.0.1:{port}/hook"


async def make_channel(base: str, token: str, address: str = "bench.myshopify.com") -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        made = (
            await c.post(
                "/api/v1/channels",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "type": "shopify",
                    "name": "Bench",
                    "address": address,
                    "webhook_secret": SECRET,
                },
            )
        ).json()
    return str(made["channel"]["id"])


def save(results: dict[str, Any], results_dir: Path, body_bytes: int) -> Path:
    """Write what is measured so far (after ingress, again after the end-to-end part)."""
    config = {
        "client": f"wrk -t1 -c{CONCURRENCY} -d{WRK_SECONDS}s --latency (unique X-Shopify-Event-Id)",
        "body_bytes": body_bytes,
        "warmup_seconds": WARMUP_SECONDS,
        "ingress_rounds": ROUNDS,
        "e2e_orders": e2e.E2E_ORDERS,
        "e2e_live_orders": e2e.E2E_LIVE_ORDERS,
        "e2e_workers": e2e.E2E_WORKERS,
        "fairness_backlog": e2e.FAIR_BACKLOG,
        "fairness_samples": e2e.FAIR_SAMPLES,
    }
    headlines = [
        headline(
            "webhook ingress req/s vs bare Litestar (wrk)",
            results["rappit_ingress"]["ratio_vs_bare_requests_per_s"],
            0.6,
            baseline="a bare Litestar endpoint reading the body, one uvicorn process each, measured back to"
            " back with Rappit in each round (median round)",
        )
    ]
    headlines.append(
        headline(
            "webhook ingress server CPU/request vs bare (wrk)",
            results["rappit_ingress"]["ratio_vs_bare_cpu_per_request"],
            0.6,
            baseline="bare Litestar's CPU ms per request over Rappit's, in the median round",
        )
    )
    headlines += e2e_headlines(results)
    return write_results("webhooks", {**results, "config": config}, results_dir, headlines=headlines)


def print_ingress(results: dict[str, Any]) -> None:
    r = results["rappit_ingress"]
    print(
        f"   rappit_ingress (median of {len(results['ingress_rounds'])} rounds): "
        f"{r['ratio_vs_bare_requests_per_s']}x bare by req/s, "
        f"{r['ratio_vs_bare_cpu_per_request']}x by server CPU per request"
    )


async def main(results_dir: Path) -> None:
    with bench_stack("webhooks") as stack:
        settings = stack.settings
        engine = make_engine(settings, pool_size=4, max_overflow=0)
        admin = make_engine(settings, url=stack.admin_url.replace("postgresql://", "postgresql+asyncpg://"))
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

        async def stored(channel_id: str) -> int:
            async with admin.connect() as conn:
                return int(
                    (
                        await conn.execute(
                            text("select count(*) from webhook_events where channel_id = :c"),
                            {"c": channel_id},
                        )
                    ).scalar_one()
                )

        folder = Path(tempfile.mkdtemp(prefix="rappit-bench-"))
        body = big_order(1)
        try:
            print(
                f"1. ingress: wrk -t1 -c{CONCURRENCY} -d{WRK_SECONDS}s, a {len(body)}-byte signed body",
                flush=True,
            )
            bare, bare_url = start_bare(folder)
            try:
                with api_process(settings) as (base, pid):
                    channel_id = await make_channel(base, token)
                    bare_script = write_script(folder, "bare", body, "bare")

                    def measure_bare() -> dict[str, Any]:
                        return measure("bare Litestar", bare_url, bare_script, bare.pid)

                    async def measure_rappit(i: int) -> dict[str, Any]:
                        before = await stored(channel_id)
                        script = write_script(folder, f"rappit{i}", body, f"r{i}" + uuid.uuid4().hex[:6])
                        figures = measure("rappit", f"{base}/webhooks/shopify/{channel_id}", script, pid)
                        # Every 200 answered is a committed row (wrk's cut-off requests may add a few).
                        figures["rows_committed"] = await stored(channel_id) - before
                        answered = figures["requests"] - figures["non_2xx"]
                        assert figures["rows_committed"] >= answered, (figures, answered)
                        return figures

                    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
                    for i in range(ROUNDS):
                        if i % 2 == 0:
                            b_r = measure_bare()
                            r_r = await measure_rappit(i)
                        else:
                            r_r = await measure_rappit(i)
                            b_r = measure_bare()
                        r_r["ratio_vs_bare_requests_per_s"] = ratio(
                            r_r["requests_per_s"], b_r["requests_per_s"]
                        )
                        r_r["ratio_vs_bare_cpu_per_request"] = ratio(
                            b_r["server_cpu_ms_per_request"], r_r["server_cpu_ms_per_request"]
                        )
                        print(
                            f"   round {i + 1}: {r_r['ratio_vs_bare_requests_per_s']}x by req/s, "
                            f"{r_r['ratio_vs_bare_cpu_per_request']}x by server CPU per request",
                            flush=True,
                        )
                        rounds.append((b_r, r_r))
            finally:
                bare.terminate()
                bare.wait(10)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # The median round by req/s ratio, whole: both sides' figures and both ratios from one round.
        by_ratio = sorted(rounds, key=lambda pair: pair[1]["ratio_vs_bare_requests_per_s"])
        results["bare_litestar"], results["rappit_ingress"] = by_ratio[len(by_ratio) // 2]
        results["ingress_rounds"] = [
            {
                "bare_requests_per_s": b_r["requests_per_s"],
                "rappit_requests_per_s": r_r["requests_per_s"],
                "ratio_vs_bare_requests_per_s": r_r["ratio_vs_bare_requests_per_s"],
                "ratio_vs_bare_cpu_per_request": r_r["ratio_vs_bare_cpu_per_request"],
            }
            for b_r, r_r in rounds
        ]
        save(results, results_dir, len(body))
        if INGRESS_ONLY:
            await engine.dispose()
            await admin.dispose()
            print_ingress(results)
            return

        # End to end and fairness (goals 2 and 6), on a fresh channel: ingress's rows go first.
        async with admin.begin() as conn:
            await conn.execute(text("delete from webhook_events"))
        with api_server(settings) as base:  # the same channel (bench.myshopify.com, as _e2e signs)
            with worker_processes(settings, e2e.E2E_WORKERS) as workers:
                results["end_to_end"] = await end_to_end(
                    base, channel_id, engine, org.org.id, settings, workers
                )
                results["fairness"] = await fairness(base, sessionmaker, engine, token, settings)
        await engine.dispose()
        await admin.dispose()
    path = save(results, results_dir, len(body))
    print_ingress(results)
    print_e2e(results)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    args = bench_args(__doc__)
    if args.smoke:
        smoke_sizes()
    asyncio.run(main(args.results))
