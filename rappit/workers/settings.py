"""arq worker settings: small and explicit. Jobs are thin; they call services."""

from __future__ import annotations

from typing import Any

import structlog
from arq import cron, func
from arq.connections import RedisSettings

from rappit.inventory.jobs import release_expired_reservations
from rappit.orders.jobs import process_webhook_event, reconcile_shopify, sweep_pending_webhooks
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.logging import configure_logging
from rappit.platform.settings import Settings
from rappit.tenancy.scoping import install_scoping

log = structlog.get_logger("rappit.worker")


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    return RedisSettings.from_dsn(settings.redis_url)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or Settings.from_env()
    configure_logging(settings.log_level, json=settings.log_json)
    install_scoping()
    engine = make_engine(settings, pool_size=10, max_overflow=12)  # max_jobs concurrent jobs + crons
    from rappit.orders.jobs import shopify_fetch_order
    from rappit.platform.crypto import SecretBox

    ctx.update(
        settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine),
        secret_box=SecretBox(settings.encryption_keys), shopify_fetch_order=shopify_fetch_order,
    )
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
    from rappit.tenancy.idempotency import purge_expired
    from rappit.tenancy.scoping import unscoped

    async with provide_session(ctx["sessionmaker"]) as session:
        async with unscoped(session, reason="purge expired idempotency keys"):
            return await purge_expired(session)


def worker_options(settings: Settings) -> dict[str, Any]:
    """Functions, crons and timeouts. A killed worker's job runs again only after its in-progress key
    expires (the largest timeout + 10 s), so every timeout is the one short JOB_TIMEOUT_SECONDS."""
    t = settings.job_timeout_seconds
    return {
        "functions": [
            ping,
            release_expired_reservations,
            purge_idempotency_keys,
            # keep_result=0: the job id (the event id) is free again as soon as a run ends, so the
            # sweeper can re-enqueue an event whose run failed; the inbox row, not arq, is the record.
            func(process_webhook_event, keep_result=0, max_tries=10, timeout=t),
            sweep_pending_webhooks,
            reconcile_shopify,
        ],
        "cron_jobs": [
            cron(sweep_pending_webhooks, second={5, 35}, run_at_startup=True, timeout=t),
            cron(reconcile_shopify, minute=set(range(2, 60, 5)), second={0}, timeout=t),
            cron(release_expired_reservations, second={0}, run_at_startup=True, timeout=t),
            cron(purge_idempotency_keys, minute={17}, second={30}, timeout=t),
        ],
        "job_timeout": t,
        # arq starts at most max_jobs per poll and sleeps poll_delay between polls, so its default
        # (10 per 0.5 s) caps a worker at 20 jobs/s however fast they are: bench/webhooks.py measured
        # exactly that. 20 jobs every 50 ms lifts the cap far above what one worker's CPU can do.
        "poll_delay": 0.05,
        "max_jobs": 20,
    }


class WorkerSettings:
    """For `arq rappit.workers.settings.WorkerSettings`; `rappit worker` applies the settings' timeouts."""

    _defaults = worker_options(Settings())
    functions = _defaults["functions"]
    cron_jobs = _defaults["cron_jobs"]
    job_timeout = _defaults["job_timeout"]
    poll_delay = _defaults["poll_delay"]
    max_jobs = _defaults["max_jobs"]
    on_startup = startup
    on_shutdown = shutdown
    max_tries = 3
    keep_result = 3600
    health_check_interval = 30
