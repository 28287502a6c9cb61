"""The `rappit` command: run the platform, migrate, onboard tenants."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from rappit.platform.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

DEV_DATABASE = "rappit"


def load_settings(system_db: str = "optional") -> Settings:
    """Settings or a clean exit listing every problem (the production fail-fast path). `system_db`:
    whether this command needs (worker), may not hold (API) or ignores SYSTEM_DATABASE_URL."""
    try:
        return Settings.from_env(system_db=system_db)
    except SettingsError as exc:
        click.echo(f"rappit: refusing to start, {exc}", err=True)
        sys.exit(2)


@contextmanager
def stack(settings: Settings, *, migrate: bool = True) -> Iterator[Settings]:
    """The settings to run with: the configured services, or the embedded local stack started here."""
    from rappit.platform import migrate as migrations

    if not settings.embedded:
        if migrate:
            migrations.upgrade(settings.migration_database_url or settings.database_url or "")
        yield settings
        return
    from rappit.platform.localstack import EmbeddedPostgres, EmbeddedRedis, ensure_database

    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data / "pg") if settings.database_url is None else None
    redis = EmbeddedRedis(data / "redis") if settings.redis_url is None else None
    try:
        database_url = settings.database_url
        migration_url = settings.migration_database_url
        system_url = settings.system_database_url
        if pg is not None:
            pg.start()
            ensure_database(pg, DEV_DATABASE)
            database_url, migration_url = pg.app_url(DEV_DATABASE), pg.superuser_url(DEV_DATABASE)
            system_url = pg.system_url(DEV_DATABASE)
        redis_url = redis.start().url if redis is not None else settings.redis_url
        assert database_url and migration_url and redis_url
        if migrate:
            migrations.upgrade(migration_url)
        yield settings.with_stack(
            database_url=database_url,
            migration_database_url=migration_url,
            redis_url=redis_url,
            system_database_url=system_url,
        )
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


def child_env(settings: Settings, *, system: bool) -> dict[str, str]:
    """The environment of a child process. Only the worker (`system=True`) gets SYSTEM_DATABASE_URL,
    the BYPASSRLS role: the API process never holds it, even if the operator's shell exports it."""
    env = dict(os.environ)
    env.pop("SYSTEM_DATABASE_URL", None)
    env.update(
        {
            "RAPPIT_ENV": settings.env,
            "DATABASE_URL": settings.database_url or "",
            "MIGRATION_DATABASE_URL": settings.migration_database_url or "",
            "REDIS_URL": settings.redis_url or "",
            "HOST": settings.host,
            "PORT": str(settings.port),
            "LOG_JSON": "true" if settings.log_json else "false",  # every child logs in one format
            "SHOPIFY_ADMIN_URL": settings.shopify_admin_url,
        }
    )
    if system and settings.system_database_url:
        env["SYSTEM_DATABASE_URL"] = settings.system_database_url
    return env


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """Forwarded headers are believed only from FORWARDED_ALLOW_IPS (none by default). uvicorn's own
    default trusts 127.0.0.1, so behind nothing, any local client could pick the address the login
    limit keys on with X-Forwarded-For."""
    if not settings.forwarded_allow_ips:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips)}


def uvicorn_proxy_args(settings: Settings) -> list[str]:
    options = uvicorn_proxy_options(settings)
    if not options["proxy_headers"]:
        return ["--no-proxy-headers"]
    return ["--proxy-headers", "--forwarded-allow-ips", options["forwarded_allow_ips"]]


async def _with_session(settings: Settings, fn: Any) -> Any:
    from rappit.platform.db import make_engine, make_sessionmaker, provide_session
    from rappit.tenancy.scoping import install_scoping

    install_scoping()
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with provide_session(make_sessionmaker(engine)) as session:
            return await fn(session)
    finally:
        await engine.dispose()


async def _org_id(session: Any, code: str) -> Any:
    from rappit.tenancy.scoping import set_transaction_org
    from rappit.tenancy.service import get_org_by_code

    org_id, _ = await get_org_by_code(session, code)
    await set_transaction_org(session, org_id)
    return org_id


def as_org(org_code: str, operation: Callable[[AsyncSession], Awaitable[T]]) -> tuple[T, Settings]:
    """Run one service call in one transaction as the org with this code (the CLI actor), on the
    configured or embedded stack: (its result, the live settings). A domain error exits 1 with its
    message."""
    from rappit.tenancy.context import Actor, org_context

    async def run(session: AsyncSession) -> T:
        org_id = await _org_id(session, org_code)
        with org_context(org_id, Actor(kind="system", label="cli")):
            return await operation(session)

    with stack(load_settings()) as live:
        try:
            return asyncio.run(_with_session(live, run)), live
        except Exception as exc:
            fail(exc)  # exits 1 for a domain error, re-raises anything else


def rappit_command() -> str:
    """How to run this CLI from where the user stands: `rappit` if that is on PATH, else the path of
    the venv's script (`.venv/bin/rappit` from the checkout, where `./run` leaves you)."""
    script = Path(sys.executable).with_name("rappit")
    on_path = shutil.which("rappit")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        return "rappit"
    if not script.exists():
        return "rappit"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


def running_file(settings: Settings) -> Path:
    """Where a running `rappit up` records its address, for the commands run beside it."""
    return settings.data_dir / "up.json"


def base_url_of(settings: Settings) -> str:
    """The API's address: a running `up`'s (it may run on another PORT than this shell has), else the
    configured one. PUBLIC_URL always wins."""
    if settings.public_url:
        return settings.public_url
    try:
        running = json.loads(running_file(settings).read_text())
        os.kill(int(running["pid"]), 0)  # still alive?
        return str(running["base_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return settings.base_url()


def print_token(settings: Settings, token: str, *, label: str, base_url: str | None = None) -> None:
    base = base_url or base_url_of(settings)
    click.echo(f"\n  {label} (shown once, store it now):\n\n    {token}\n")
    click.echo(f"  Try it:\n    curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/me\n")


def wait_until_live(base_url: str, *, deadline_seconds: float, keep_going: Any, tick: Any) -> bool:
    """Poll `/health/live` until it answers 200 (True) or the deadline passes / keep_going() says stop
    (False), calling tick() between polls (the supervisor restarts what died meanwhile)."""
    import httpx

    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline and keep_going():
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        tick()
        time.sleep(0.2)
    return False


def fail(exc: Exception) -> NoReturn:
    from rappit.platform.errors import DomainError

    if isinstance(exc, DomainError):
        click.echo(f"rappit: {exc.message}", err=True)
        sys.exit(1)
    raise exc


@click.group()
def rappit() -> None:
    """Rappit: multi-tenant fulfillment integration platform."""


@rappit.command()
def check() -> None:
    """Validate settings (production: every required secret present) and exit."""
    settings = load_settings()
    click.echo(f"settings ok ({settings.env})")


@rappit.command()
def migrate() -> None:
    """Apply every migration (alembic upgrade head)."""
    settings = load_settings()
    with stack(settings, migrate=True):
        click.echo("database is at head")


LIVE_DEADLINE_SECONDS = 60.0


@rappit.command()
@click.option(
    "--demo/--no-demo",
    default=True,
    help="Run the carrier and Shopify sandboxes and make (or keep) the demo organization.",
)
@click.option("--worker/--no-worker", default=True, help="Also run an arq worker.")
@click.option("--port", default=None, type=int, help="The API's port (default: PORT, else 8000).")
def up(demo: bool, worker: bool, port: int | None) -> None:
    """Run the whole platform until Ctrl-C: (embedded) PostgreSQL and Redis, migrations, API, worker,
    and for the demo organization the Shopify, FedEx and DHL Express sandboxes."""
    from rappit.app import demo as demo_org
    from rappit.app.supervisor import ChildSpec, Supervisor

    settings = load_settings()
    if port is not None:
        settings = replace(settings, port=port)
    if "LOG_JSON" not in os.environ:
        settings = replace(settings, log_json=False)  # `up` is for a person: one readable format
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    sandboxes = demo_org.Sandboxes.start() if demo else None
    try:
        with stack(settings) as live:
            base = live.public_url or live.base_url()
            probe = f"http://{_loopback(live.host)}:{live.port}"
            seeded = None
            if sandboxes is not None:
                if "SHOPIFY_ADMIN_URL" not in os.environ:  # the demo channel's Admin API is the sandbox
                    live = replace(live, shopify_admin_url=sandboxes.shopify.url)
                seeded = asyncio.run(demo_org.ensure_base(live, sandboxes))
            api = [sys.executable, "-m", "uvicorn", "--factory", "rappit.app.factory:create_app"]
            api += [
                "--host",
                live.host,
                "--port",
                str(live.port),
                "--no-access-log",
                *uvicorn_proxy_args(live),
            ]
            children = [ChildSpec("api", api, env=child_env(live, system=False))]
            if worker:
                worker_argv = [sys.executable, "-m", "rappit.app.cli", "worker"]
                children.append(ChildSpec("worker", worker_argv, env=child_env(live, system=True)))
            supervisor = Supervisor(children)
            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGTERM, stop)
            supervisor.start()
            record = running_file(live)
            try:
                if wait_until_live(
                    probe,
                    deadline_seconds=LIVE_DEADLINE_SECONDS,
                    keep_going=lambda: not stopping,
                    tick=supervisor.check,
                ):
                    record.parent.mkdir(parents=True, exist_ok=True)
                    record.write_text(json.dumps({"pid": os.getpid(), "base_url": base}))
                    lines = []
                    if seeded is not None and sandboxes is not None:
                        try:
                            orders = asyncio.run(
                                demo_org.ensure_orders(
                                    live,
                                    probe,
                                    seeded,
                                    sandboxes,
                                    tick=supervisor.check,
                                    keep_going=lambda: not stopping,
                                    # no worker, no orders: don't wait for them
                                    deadline_seconds=demo_org.ORDERS_DEADLINE_SECONDS if worker else 0,
                                )
                            )
                        except Exception as exc:  # the platform runs on; only the demo orders are missing
                            click.echo(f"rappit up: the demo orders could not be sent: {exc}", err=True)
                            orders = []
                        lines = demo_org.banner(
                            api=base,
                            base=seeded,
                            orders=orders,
                            sandboxes=sandboxes,
                            command=rappit_command(),
                        )
                    click.echo(
                        f"\n  Rappit is running at {base} (API docs: {base}/schema). A process "
                        "that dies is restarted; Ctrl-C stops everything.\n"
                    )
                    if lines:
                        click.echo("\n".join(lines) + "\n")
                elif not stopping:
                    click.echo(
                        f"\n  rappit up: the API did not answer {probe}/health/live within "
                        f"{LIVE_DEADLINE_SECONDS:g} s; still trying (see its log above).\n",
                        err=True,
                    )
                supervisor.run(lambda: stopping)
            finally:
                supervisor.stop()
                record.unlink(missing_ok=True)
    finally:
        if sandboxes is not None:
            sandboxes.stop()


def _loopback(host: str) -> str:
    """Where to reach a server bound to `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


@rappit.command()
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
@click.option("--migrate/--no-migrate", "run_migrations", default=True, help="Apply migrations first.")
@click.option("--workers", default=1, show_default=True, help="uvicorn worker processes.")
def serve(host: str | None, port: int | None, run_migrations: bool, workers: int) -> None:
    """Run the API (production entry point): migrations, then uvicorn."""
    import uvicorn

    settings = load_settings(system_db="forbidden")
    if settings.embedded:
        click.echo(
            "rappit: serve needs DATABASE_URL and REDIS_URL (use `rappit up` for the local stack)", err=True
        )
        sys.exit(2)
    with stack(settings, migrate=run_migrations):
        uvicorn.run(
            "rappit.app.factory:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            access_log=False,
            **uvicorn_proxy_options(settings),
        )


@rappit.command()
def worker() -> None:
    """Run a worker: the webhook inbox's claim loops (PostgreSQL only) beside an arq worker (jobs, cron,
    dead letters) that rides out a Redis outage, retrying with backoff."""
    from arq.worker import create_worker

    from rappit.platform.logging import configure_logging
    from rappit.workers.inbox import run_inbox
    from rappit.workers.runner import run_worker_forever
    from rappit.workers.settings import WorkerSettings, redis_settings, worker_options

    settings = load_settings(system_db="required")
    if settings.embedded:
        click.echo(
            "rappit: worker needs DATABASE_URL and REDIS_URL (use `rappit up` for the local stack)", err=True
        )
        sys.exit(2)
    configure_logging(settings.log_level, json=settings.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        inbox = asyncio.create_task(run_inbox(settings, stop))
        try:
            await run_worker_forever(
                lambda: create_worker(
                    WorkerSettings,  # type: ignore[arg-type]
                    redis_settings=redis_settings(settings),
                    ctx={"settings": settings},  # a fresh one per connection: on_startup fills it
                    handle_signals=False,  # run_worker_forever handles them, across reconnects
                    **worker_options(settings),
                )
            )
        finally:
            stop.set()
            await asyncio.gather(inbox, return_exceptions=True)

    asyncio.run(main())


@rappit.group()
def org() -> None:
    """Organizations (tenants)."""


@org.command("create")
@click.option("--name", required=True)
@click.option("--admin-email", required=True)
@click.option(
    "--code", default=None, help="2-10 letters/digits, order-number prefix (default: from the name)."
)
@click.option("--password", default=None, help="Owner's dashboard password (default: generated and printed).")
def org_create(name: str, admin_email: str, code: str | None, password: str | None) -> None:
    """Onboard a tenant: organization, owner user and a first API token, in one transaction."""
    import secrets

    from rappit.tenancy.service import create_organization

    settings = load_settings()
    password = password or secrets.token_urlsafe(12)
    with stack(settings) as live:
        try:
            new = asyncio.run(
                _with_session(
                    live,
                    lambda s: create_organization(
                        s, name=name, admin_email=admin_email, code=code, password=password
                    ),
                )
            )
        except Exception as exc:
            fail(exc)
        click.echo(
            f"Created organization {new.org.code} ({new.org.id}); owner {new.owner.email} / password "
            f"{password}"
        )
        print_token(live, new.token.plaintext, label="Owner API token")


@rappit.group()
def user() -> None:
    """Users of an organization."""


@user.command("add")
@click.option("--org", "org_code", required=True)
@click.option("--email", required=True)
@click.option(
    "--role", type=click.Choice(["owner", "admin", "staff", "viewer"]), default="staff", show_default=True
)
@click.option("--password", default=None)
def user_add(org_code: str, email: str, role: str, password: str | None) -> None:
    """Add a user to an organization."""
    import secrets

    from rappit.tenancy.service import add_user

    password = password or secrets.token_urlsafe(12)
    new, _ = as_org(org_code, lambda s: add_user(s, email=email, role=role, password=password))
    click.echo(f"Added {new.email} ({new.role}) to {org_code.upper()}; password {password}")


@user.command("reset-password")
@click.option("--org", "org_code", required=True)
@click.option("--email", required=True)
@click.option("--password", default=None, help="The new password (default: generated and printed).")
def user_reset_password(org_code: str, email: str, password: str | None) -> None:
    """Set a user's dashboard password (for example the demo owner's, shown once by `up`)."""
    import secrets

    from rappit.tenancy.service import reset_password

    password = password or secrets.token_urlsafe(12)
    changed, _ = as_org(org_code, lambda s: reset_password(s, email=email, password=password))
    click.echo(f"New password for {changed.email} ({org_code.upper()}): {password}")


@rappit.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--org", "org_code", required=True)
@click.option("--name", required=True)
@click.option(
    "--role", type=click.Choice(["owner", "admin", "staff", "viewer"]), default="admin", show_default=True
)
def token_create(org_code: str, name: str, role: str) -> None:
    """Issue an API token (printed once)."""
    from rappit.tenancy.service import create_token

    issued, live = as_org(org_code, lambda s: create_token(s, name=name, role=role))
    print_token(live, issued.plaintext, label=f"API token {name!r} ({role}) for {org_code.upper()}")


VERIFY_STATEMENT_MS = 10 * 60 * 1000
"""A verify scans every ledger row of an org: more than the request budget (DB_STATEMENT_TIMEOUT_MS)."""


@rappit.command()
@click.option("--org", "org_code", default=None, help="Check this organization only (default: every one).")
@click.option(
    "--stuck-after",
    default=900,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds after which a pending or failed webhook event counts as stuck (15 minutes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON instead of text.")
def verify(org_code: str | None, stuck_after: int, as_json: bool) -> None:
    """Check that stored facts still add up (run it after an incident): levels against the ledger,
    reserved against active reservations, open orders against their reservations, webhook events
    stuck pending. Prints every drift with the rows involved; exits 1 on drift, 2 if it cannot check."""
    from datetime import timedelta

    from rappit.ops.verify import Options
    from rappit.platform.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)  # to stderr: stdout is the report
    options = Options(stuck_after=timedelta(seconds=stuck_after))
    with stack(settings, migrate=False) as live:
        try:
            reports = asyncio.run(_verify(live, org_code, options))
        except VerifyUnavailable as exc:
            click.echo(f"rappit verify: {exc}", err=True)
            sys.exit(2)
    if as_json:
        click.echo(json.dumps([_report_json(r) for r in reports], indent=2))
    else:
        for report in reports:
            _echo_report(report)
    drifted = [r for r in reports if not r.clean]
    findings = sum(len(r.findings) for r in drifted)
    if drifted:
        click.echo(
            f"verify: {findings} drift(s) in {len(drifted)} of {len(reports)} organization(s)", err=True
        )
        sys.exit(1)
    if not as_json:
        click.echo(f"verify: {len(reports)} organization(s) clean")


class VerifyUnavailable(Exception):
    """The check could not run (unknown org, no system role to list orgs with)."""


async def _verify(settings: Settings, org_code: str | None, options: Any) -> list[Any]:
    """Each org checked in its own transaction, as that org (row-level security on); only the list
    of orgs (when no --org is given) is read across orgs, with the system role."""
    from rappit.ops.verify import organizations, verify_org
    from rappit.platform.db import long_statements, make_engine, make_sessionmaker, provide_session
    from rappit.platform.errors import NotFound
    from rappit.tenancy.context import Actor, org_context
    from rappit.tenancy.scoping import install_scoping, set_transaction_org, unscoped
    from rappit.tenancy.service import get_org_by_code

    install_scoping()
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    system = None
    try:
        sessionmaker = make_sessionmaker(engine)
        if org_code is not None:
            async with provide_session(sessionmaker) as session:
                try:
                    orgs = [await get_org_by_code(session, org_code)]
                except NotFound as exc:
                    raise VerifyUnavailable(exc.message) from exc
        elif settings.system_database_url:
            system = make_engine(settings, url=settings.system_database_url, pool_size=1, max_overflow=0)
            async with unscoped(make_sessionmaker(system, system=True), reason="verify: list orgs") as s:
                orgs = await organizations(s)
        else:
            raise VerifyUnavailable(
                "checking every organization needs SYSTEM_DATABASE_URL (the role that may list them); "
                "set it, or pass --org CODE"
            )
        reports = []
        for org_id, _code in orgs:
            with org_context(org_id, Actor(kind="system", label="cli:verify")):
                async with provide_session(sessionmaker) as session:
                    await set_transaction_org(session, org_id)
                    async with long_statements(session, VERIFY_STATEMENT_MS):
                        reports.append(await verify_org(session, options))
        return reports
    finally:
        await engine.dispose()
        if system is not None:
            await system.dispose()


def _report_json(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "org_id": str(report.org_id),
        "org_code": report.org_code,
        "clean": report.clean,
        "checks": list(report.checks),
        "not_checked": report.not_checked,
        "findings": [asdict(f) for f in report.findings],
    }


def _echo_report(report: Any) -> None:
    if report.clean:
        click.echo(f"{report.org_code}: clean ({len(report.checks)} checks)")
    else:
        click.echo(f"{report.org_code}: {len(report.findings)} drift(s)")
    for finding in report.findings:
        click.echo(f"  [{finding.check}] {finding.message}")
        parts = (("rows", finding.rows), ("expected", finding.expected), ("found", finding.found))
        for label, values in parts:
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)
            click.echo(f"      {label + ':':<10}{shown}")
    for name, why in report.not_checked.items():
        click.echo(f"  (not checked: {name}: {why})")


def main() -> None:
    rappit(prog_name="rappit")


if __name__ == "__main__":
    main()
