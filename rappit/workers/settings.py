"""arq worker settings: small and explicit. Jobs are thin; they call services."""

from __future__ import annotations

from typing import Any

import structlog
from arq import cron
from arq.connections import RedisSettings

from rappit.inventory.jobs import release_expired_reservations
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.logging import configure_logging
from rappit.platform.settings import Settings

log = structlog.get_logger("rappit.worker")


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    return RedisSettings.from_dsn(settings.redis_url)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings.from_env()
    configure_logging(settings.log_level, json=settings.log_json)
    engine = make_engine(settings, pool_size=5, max_overflow=5)
    ctx.update(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine))
    log.info("worker.started")


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["engine"].dispose()
    log.info("worker.stopped")


async def ping(ctx: dict[str, Any], value: str) -> str:
    """A no-op job: proves a worker is consuming the queue (tests and operators)."""
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"))
    log.info("worker.ping", value=value)
    return value


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Hourly: forget Idempotency-Keys older than 24 hours, across orgs (logged bypass)."""
    from rappit.platform.idempotency import purge_expired
    from rappit.tenancy.scoping import unscoped

    async with provide_session(ctx["sessionmaker"]) as session:
        async with unscoped(session, reason="purge expired idempotency keys"):
            return await purge_expired(session)


class WorkerSettings:
    functions = [ping, release_expired_reservations, purge_idempotency_keys]
    cron_jobs = [
        cron(release_expired_reservations, second={0}, run_at_startup=True, timeout=50),
        cron(purge_idempotency_keys, minute={17}, second={30}, timeout=50),
    ]
    on_startup = startup
    on_shutdown = shutdown
    # Short timeouts: a killed worker's job is re-run only after the largest timeout + 10 s.
    job_timeout = 60
    max_tries = 3
    keep_result = 3600
    health_check_interval = 30
