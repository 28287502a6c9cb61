"""Shared set-up for benchmarks: a durable embedded PostgreSQL (default settings, fsync on) and Redis
under .data/bench/, a fresh database per run, migrated; or BENCH_DATABASE_URL / BENCH_REDIS_URL."""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform  # the stdlib module (rappit's is rappit.platform)
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from rappit.platform import migrate
from rappit.platform.localstack import (
    DEV_TUNING,
    EmbeddedPostgres,
    EmbeddedRedis,
    drop_database,
    ensure_database,
    psql,
)
from rappit.platform.settings import REPO_ROOT, Settings
from rappit.tenancy.rls import APP_ROLE, SYSTEM_ROLE
from rappit.tenancy.scoping import install_scoping

DATA = Settings.from_env().data_dir / "bench"  # RAPPIT_DATA_DIR, else .data/ in the checkout
RESULTS = REPO_ROOT / "bench" / "results"
install_scoping()
SERVER: dict[str, str] = {}  # the PostgreSQL the last bench_stack ran on (version, fsync), for the results


def bench_args(doc: str | None) -> argparse.Namespace:
    """Every benchmark's options: --smoke (tiny sizes, for tests/test_bench_smoke.py: proves the script
    runs start to finish; its figures mean nothing) and --results DIR (where the JSON goes)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a run-through, not a measurement")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where to write NAME.json ({RESULTS})")
    return parser.parse_args()


def free_port() -> int:
    """A free loopback port: fixed ones collide with another run (or test suite) on the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BenchStack:
    settings: Settings
    admin_url: str


@contextmanager
def bench_stack(name: str) -> Iterator[BenchStack]:
    started = []
    server_admin = os.environ.get("BENCH_DATABASE_URL")
    if not server_admin:
        pg = EmbeddedPostgres(DATA / "pg", tuning={**DEV_TUNING, "shared_buffers": "256MB"}).start()
        started.append(pg)
        server_admin = pg.superuser_url()
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if not redis_url:
        redis = EmbeddedRedis(DATA / "redis").start()
        started.append(redis)
        redis_url = redis.url
    import redis as redis_client

    redis_client.Redis.from_url(redis_url).flushdb()  # no jobs left over from an earlier, interrupted run
    database = f"rappit_bench_{name}"
    drop_database(server_admin, database)
    ensure_database(server_admin, database)
    admin = make_url(server_admin.replace("postgresql+asyncpg://", "postgresql://")).set(database=database)
    admin_url = admin.render_as_string(hide_password=False)
    migrate.upgrade(admin_url)
    SERVER.update(
        zip(
            ("postgres", "fsync", "synchronous_commit"),
            psql(admin_url, "SELECT version(); SHOW fsync; SHOW synchronous_commit").strip().splitlines(),
            strict=True,
        )
    )
    settings = Settings(
        env="development",
        log_json=True,
        log_level="WARNING",
        db_pool_size=70,
        db_max_overflow=10,
        db_statement_timeout_ms=120_000,  # 64 clients queued on one row lock (loaded machine): not a hang
    ).with_stack(
        database_url=admin.set(username=APP_ROLE, password=None).render_as_string(hide_password=False),
        system_database_url=admin.set(username=SYSTEM_ROLE, password=None).render_as_string(
            hide_password=False
        ),
        migration_database_url=admin_url,
        redis_url=redis_url,
    )
    try:
        yield BenchStack(settings=settings, admin_url=admin_url)
    finally:
        drop_database(server_admin, database)
        for service in reversed(started):
            service.stop()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or "unknown"


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": _platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        **SERVER,
    }


SATURATED = 0.85  # of one core: a Python client (one event loop, one core at most) above it is the bottleneck


class ClientCpu:
    """The benchmark client's own CPU while it measures: `with ClientCpu("label") as cpu: ...`, then
    `cpu.report()` gives user+system seconds over wall seconds (1.0 = one full core). A Python client
    runs on one core; above SATURATED it, not the system under test, may set the pace, and it says so
    (on stderr and in the report), so a figure is never published as the server's when it is the client's.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.share = 0.0

    def __enter__(self) -> ClientCpu:
        self._cpu = sum(os.times()[:2])
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        self.share = (sum(os.times()[:2]) - self._cpu) / wall if wall > 0 else 0.0
        if self.saturated:
            print(
                f"WARNING {self.label}: the benchmark client used {self.share:.0%} of a core, saturated, "
                "so this figure may measure the client rather than the system under test",
                file=sys.stderr,
                flush=True,
            )

    @property
    def saturated(self) -> bool:
        return self.share >= SATURATED

    def report(self) -> dict[str, object]:
        return {"client_cpu_share_of_one_core": round(self.share, 2), "client_saturated": self.saturated}


def headline(
    name: str, value: float, goal: float, *, better: str = "higher", unit: str = "x", baseline: str = ""
) -> dict[str, object]:
    """One figure `./run bench all` charts against its goal (bench/results/summary.png): `better` is
    "higher" (value >= goal meets it) or "lower" (value <= goal); `baseline` names what a ratio is over."""
    if better not in ("higher", "lower"):
        raise ValueError("better is 'higher' or 'lower'")
    met = value >= goal if better == "higher" else value <= goal
    return {
        "name": name,
        "value": value,
        "goal": goal,
        "better": better,
        "unit": unit,
        "baseline": baseline,
        "met": met,
    }


def write_results(
    name: str,
    payload: dict[str, object],
    results: Path = RESULTS,
    headlines: list[dict[str, object]] | None = None,
) -> Path:
    """bench/results/NAME.json: the machine, the payload and the headline figures (see `headline`)."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "headlines": headlines or [],
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@contextmanager
def api_server(settings: Settings, port: int | None = None) -> Iterator[str]:
    """The real API in its own process (uvicorn), as production runs it."""
    with api_process(settings, port) as (base, _pid):
        yield base


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_named(name: str) -> float:
    """User + system CPU seconds used so far by every running process called `name` (its comm), e.g.
    PostgreSQL's backends and background processes."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        head, _, rest = text.rpartition(")")
        if head.split("(", 1)[-1] == name:
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def api_process(
    settings: Settings, port: int | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """`api_server`, also giving the process id (to read its CPU time) and taking extra environment."""
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url or "",
        REDIS_URL=settings.redis_url or "",
        MIGRATION_DATABASE_URL=settings.migration_database_url or "",
        LOG_LEVEL="WARNING",
        RATE_LIMIT_API_PER_MINUTE="1000000",
        RATE_LIMIT_WEBHOOKS_PER_MINUTE="1000000",
        RATE_LIMIT_CHANNEL_PER_MINUTE="1000000",
        MAX_BODY_BYTES=str(50 * 2**20),
        **(extra_env or {}),
    )
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "rappit.app.factory:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120  # a loaded shared machine can take a minute to import the app
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError(f"the API did not come up on {base} within 120 s")
    try:
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
