"""The platform as production runs it: two API processes (`rappit serve`) and two arq workers
(`rappit worker`) under `rappit up`'s supervisor, on PostgreSQL and Redis (embedded here, so they can
be stopped and restarted; or BENCH_DATABASE_URL / BENCH_REDIS_URL, then without those two faults), and
the carrier and Shopify sandboxes on loopback in this process (their fault switches flip from here)."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from rappit.app.supervisor import ChildSpec, Supervisor
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.integrations.sandboxes.shopify import FakeShopify
from rappit.integrations.sandboxes.woocommerce import FakeWooCommerce
from rappit.platform import migrate
from rappit.platform.backoff import Backoff
from rappit.platform.localstack import (
    DEV_TUNING,
    EmbeddedPostgres,
    EmbeddedRedis,
    drop_database,
    ensure_database,
)
from rappit.tenancy.rls import APP_ROLE, SYSTEM_ROLE

SHOPIFY_TOKEN = "shpat_chaos_admin_token_0001"


class RecordingFedEx(FakeFedEx):
    """FakeFedEx that also remembers every cancel asked for: (tracking number, account number asked
    with, account number that bought it). A mismatch is a void of another account's label."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels: list[tuple[str, str, str | None]] = []

    def _cancel(self, data: dict[str, Any]) -> Any:
        number = str(data.get("trackingNumber"))
        asked = str((data.get("accountNumber") or {}).get("value") or "")
        label = self.labels.get(number)
        self.cancels.append((number, asked, label.account_number if label else None))
        return super()._cancel(data)


@dataclass
class Platform:
    data: Path
    database: str
    pg: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    admin_url: str = ""
    redis_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    api_ports: list[int] = field(default_factory=list)
    supervisor: Supervisor | None = None
    fedex: RecordingFedEx = field(default_factory=RecordingFedEx)
    dhl: FakeDhlExpress = field(default_factory=FakeDhlExpress)
    shopify: FakeShopify = field(default_factory=lambda: FakeShopify(SHOPIFY_TOKEN))
    woo: list[FakeWooCommerce] = field(default_factory=lambda: [FakeWooCommerce() for _ in range(3)])
    """One WooCommerce store per org: the fulfillment push (completed + tracking note) lands there."""
    restarts: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def embedded_pg(self) -> bool:
        return self.pg is not None

    @property
    def embedded_redis(self) -> bool:
        return self.redis is not None

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.api_ports]

    def start_services(self) -> None:
        server_admin = os.environ.get("BENCH_DATABASE_URL")
        if not server_admin:
            self.pg = EmbeddedPostgres(self.data / "pg", tuning={**DEV_TUNING, "shared_buffers": "256MB"})
            self.pg.start()
            server_admin = self.pg.superuser_url()
        self.redis_url = os.environ.get("BENCH_REDIS_URL") or ""
        if not self.redis_url:
            self.redis = EmbeddedRedis(self.data / "redis").start()
            self.redis_url = self.redis.url
        import redis as redis_client

        redis_client.Redis.from_url(self.redis_url).flushdb()
        drop_database(server_admin, self.database)
        ensure_database(server_admin, self.database)
        admin = make_url(server_admin.replace("postgresql+asyncpg://", "postgresql://")).set(
            database=self.database
        )
        self.admin_url = admin.render_as_string(hide_password=False)
        migrate.upgrade(self.admin_url)
        self._server_admin = server_admin
        self.fedex.start()
        self.dhl.start()
        self.shopify.start()
        for store in self.woo:
            store.start()
        app_url = admin.set(username=APP_ROLE, password=None).render_as_string(hide_password=False)
        system_url = admin.set(username=SYSTEM_ROLE, password=None).render_as_string(hide_password=False)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BENCH_", "DATABASE_", "SYSTEM_DATABASE"))
        }
        self.env.update(
            RAPPIT_ENV="development",
            DATABASE_URL=app_url,
            MIGRATION_DATABASE_URL=self.admin_url,
            REDIS_URL=self.redis_url,
            LOG_LEVEL="WARNING",
            LOG_JSON="true",
            SHOPIFY_ADMIN_URL=self.shopify.url,
            RATE_LIMIT_API_PER_MINUTE="1000000",
        )
        self._system_url = system_url

    def start_processes(self, ports: list[int], logs: Path) -> None:
        """Two APIs and two workers under the supervisor (restarts after 0.5 s doubling to 2 s: the
        faults come every few seconds, and production's process manager restarts about that fast)."""
        self.api_ports = ports
        logs.mkdir(parents=True, exist_ok=True)
        rappit = [sys.executable, "-m", "rappit.app.cli"]
        api_env = dict(self.env)
        worker_env = {**self.env, "SYSTEM_DATABASE_URL": self._system_url}

        def logged(name: str, argv: list[str]) -> list[str]:
            # exec: the supervisor's pid is the process itself (SIGKILL reaches it), output to a file
            return ["/bin/sh", "-c", f"exec {shlex.join(argv)} >>{shlex.quote(str(logs / name))}.log 2>&1"]

        serve = [*rappit, "serve", "--no-migrate", "--host", "127.0.0.1", "--port"]
        specs = [
            ChildSpec(f"api{n}", logged(f"api{n}", [*serve, str(port)]), api_env)
            for n, port in enumerate(ports)
        ]
        specs += [
            ChildSpec(f"worker{n}", logged(f"worker{n}", [*rappit, "worker"]), worker_env) for n in range(2)
        ]
        log_file = open(logs / "supervisor.log", "a")

        def log(message: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            log_file.flush()

        self.supervisor = Supervisor(
            specs, backoff=lambda: Backoff(initial=0.5, maximum=2.0), grace=10, log=log
        )
        self._children_stderr = logs
        self.supervisor.start()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        for base in self.bases:
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the API at {base} did not come up within 60 s")

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.supervisor is not None:
                    self.supervisor.check()
            time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        with self._lock:
            return self.supervisor.pids().get(name) if self.supervisor else None

    def kill(self, name: str) -> int | None:
        pid = self.pid(name)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
            self.restarts[name] = self.restarts.get(name, 0) + 1
        return pid

    # ---- PostgreSQL and Redis faults (embedded only) ------------------------------------------------

    def redis_stop(self) -> None:
        assert self.redis is not None
        self.redis.stop()

    def redis_start(self) -> None:
        assert self.redis is not None
        self.redis.start()

    def pg_restart(self) -> None:
        """pg_ctl restart -m fast: every connection is cut, in-flight transactions roll back."""
        assert self.pg is not None
        self.pg._pg_ctl(
            [
                "-w",
                "-m",
                "fast",
                "restart",
                "-o",
                f'-h "" -k {self.pg.uri_host()}',
                "-l",
                str(self.pg.data_dir / "log"),
            ]
        )

    def pg_pids(self) -> list[int]:
        """The postmaster and every backend it forked."""
        assert self.pg is not None
        master = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        pids = [master]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
        return pids

    def pg_signal(self, sig: signal.Signals, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.supervisor is not None:
            self.supervisor.stop()
        for sandbox in (self.fedex, self.dhl, self.shopify, *self.woo):
            try:
                sandbox.stop()
            except Exception:
                pass

    def drop(self) -> None:
        drop_database(self._server_admin, self.database)
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.stop()
