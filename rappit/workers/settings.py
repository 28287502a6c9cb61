"""arq worker settings and the job table: small and explicit. Jobs are thin; they call services."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import structlog
from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function

from rappit.inventory import imports as inventory_imports
from rappit.inventory import jobs as inventory_jobs
from rappit.orders import jobs as order_jobs
from rappit.platform.db import assert_bypasses_rls
from rappit.platform.logging import configure_logging
from rappit.platform.settings import Settings
from rappit.shipping import callbacks as carrier_callbacks
from rappit.shipping import cancellation, fulfillment
from rappit.shipping import jobs as shipping_jobs
from rappit.tenancy.idempotency import purge_expired
from rappit.tenancy.scoping import install_scoping, unscoped
from rappit.workers import retention
from rappit.workers.carrier_callbacks import process_carrier_callback, sweep_pending_callbacks
from rappit.workers.context import Ctx, Deps, deps
from rappit.workers.fulfillment import MAX_ATTEMPTS as PUSH_ATTEMPTS
from rappit.workers.fulfillment import push_fulfillment, sweep_pending_pushes
from rappit.workers.imports import run_import, sweep_unfinished_imports
from rappit.workers.label_voids import sweep_cancelled_labels, void_cancelled_label

log = structlog.get_logger("rappit.worker")


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    return RedisSettings.from_dsn(settings.redis_url)


async def startup(ctx: Ctx) -> None:
    """Settings from ctx (tests, `rappit worker`) or the environment; tuning knobs from ctx (tests)."""
    settings = ctx.get("settings") or Settings.from_env(system_db="required")
    configure_logging(settings.log_level, json=settings.log_json)
    install_scoping()
    knobs = (
        "webhook_backoff",
        "fulfillment_backoff",
        "sweep_grace_seconds",
        "shipment_recovery_after_seconds",
        "callback_backoff",
        "label_void_backoff",
        "label_void_attempts",
        "import_backoff",
        "import_sweep_grace_seconds",
    )
    tuning = {k: ctx[k] for k in knobs if k in ctx}
    ctx["deps"] = built = Deps.build(settings, **tuning)  # pool: max_jobs concurrent jobs + crons
    await assert_bypasses_rls(built.system_engine)
    log.info("worker.started")


async def shutdown(ctx: Ctx) -> None:
    found = ctx.get("deps")
    if found is not None:  # None when Redis went away before on_startup ran (workers/runner.py)
        await found.close()
    log.info("worker.stopped")


async def ping(ctx: Ctx, value: str) -> str:
    """A no-op job: proves a worker is consuming the queue (tests and operators)."""
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"))
    log.info("worker.ping", value=value)
    return value


async def purge_idempotency_keys(ctx: Ctx) -> int:
    """Hourly: forget Idempotency-Keys older than 24 hours, across orgs (as the system role, logged)."""
    async with unscoped(deps(ctx).system_sessionmaker, reason="purge expired idempotency keys") as session:
        return await purge_expired(session)


async def release_expired_reservations(ctx: Ctx) -> int:
    """Every minute: release holds past their expiry, org by org."""
    d = deps(ctx)
    return await inventory_jobs.release_expired_reservations(d.sessionmaker, d.system_sessionmaker)


async def reconcile_channels(ctx: Ctx) -> int:
    """Every 5 minutes: ingest orders whose webhooks never came, from channels that can list them."""
    d = deps(ctx)
    budget = d.reconcile_budget_seconds or 0.6 * d.settings.job_timeout_seconds
    return await order_jobs.reconcile_all(
        d.sessionmaker, d.system_sessionmaker, d.channels, d.secret_box, budget_seconds=budget
    )


async def purge_history(ctx: Ctx) -> dict[str, int]:
    """Hourly: delete processed webhook events and order events past RETENTION_DAYS, in small batches
    that skip locked rows (never blocking ingress); the ledger is kept."""
    d = deps(ctx)
    return await retention.purge_history(
        d.system_sessionmaker,
        retention_days=d.settings.retention_days,
        budget_seconds=0.6 * d.settings.job_timeout_seconds,
    )


async def recover_pending_shipments(ctx: Ctx) -> dict[str, int]:
    """Every minute: label purchases left `pending` (a crash or lost answer after the carrier call) are
    resolved by asking the carrier by our reference: recorded and voided, or failed."""
    d = deps(ctx)
    return await shipping_jobs.recover_pending(
        d.sessionmaker,
        d.system_sessionmaker,
        d.carriers,
        older_than_seconds=d.shipment_recovery_after_seconds,
    )


def functions(timeout: int) -> Sequence[Function]:
    """The job table: every job a worker runs, by name. Enqueued jobs are named by the constant of the
    module that enqueues them (fulfillment.JOB), never by a repeated literal. Webhook events are not
    jobs: the worker's claim loops take them from the inbox (rappit.workers.inbox)."""
    return [
        func(ping),
        func(release_expired_reservations),
        func(purge_idempotency_keys),
        # The push row counts its own attempts (MAX_ATTEMPTS); arq's cap only bounds runaway re-runs.
        func(
            push_fulfillment,
            name=fulfillment.JOB,
            keep_result=0,
            max_tries=2 * PUSH_ATTEMPTS,
            timeout=timeout,
        ),
        func(sweep_pending_pushes),
        # The import row, not arq, is the record (attempts, error, dead letter).
        func(run_import, name=inventory_imports.JOB, keep_result=0, max_tries=10, timeout=timeout),
        func(sweep_unfinished_imports),
        func(reconcile_channels),
        func(recover_pending_shipments),
        # The callback row counts the attempts, arq's max_tries is only a backstop.
        func(
            process_carrier_callback, name=carrier_callbacks.JOB, keep_result=0, max_tries=10, timeout=timeout
        ),
        func(sweep_pending_callbacks),
        # job_try counts the attempts (Deps.label_void_attempts, fewer than max_tries); keep_result=0
        # frees the job id at once, and the sweeper skips labels already dead-lettered.
        func(void_cancelled_label, name=cancellation.VOID_JOB, keep_result=0, max_tries=20, timeout=timeout),
        func(sweep_cancelled_labels),
        func(purge_history),
    ]


def cron_jobs(timeout: int) -> list[CronJob]:
    return [
        cron(sweep_pending_pushes, second={15, 45}, timeout=timeout),
        cron(sweep_unfinished_imports, second={15, 45}, run_at_startup=True, timeout=timeout),
        cron(reconcile_channels, minute=set(range(2, 60, 5)), second={0}, timeout=timeout),
        cron(release_expired_reservations, second={0}, run_at_startup=True, timeout=timeout),
        cron(purge_idempotency_keys, minute={17}, second={30}, timeout=timeout),
        cron(recover_pending_shipments, second={20}, timeout=timeout),
        cron(sweep_pending_callbacks, second={15, 45}, run_at_startup=True, timeout=timeout),
        cron(sweep_cancelled_labels, second={50}, timeout=timeout),
        cron(purge_history, minute={41}, second={10}, timeout=timeout),
    ]


def worker_options(settings: Settings) -> dict[str, Any]:
    """Functions, crons and timeouts. A killed worker's job runs again only after its in-progress key
    expires (the largest timeout + 10 s), so every timeout is the one short JOB_TIMEOUT_SECONDS."""
    t = settings.job_timeout_seconds
    return {
        "functions": functions(t),
        "cron_jobs": cron_jobs(t),
        "job_timeout": t,
        # arq starts at most max_jobs per poll and sleeps poll_delay between polls, so its default
        # (10 per 0.5 s) caps a worker at 20 jobs/s however fast they are: bench/webhooks.py measured
        # exactly that. 20 jobs every 50 ms lifts the cap far above what one worker's CPU can do.
        "poll_delay": 0.05,
        "max_jobs": 20,
    }


_DEFAULT_TIMEOUT: int = next(f.default for f in fields(Settings) if f.name == "job_timeout_seconds")  # type: ignore[assignment]


class WorkerSettings:
    """For `arq rappit.workers.settings.WorkerSettings` (default timeouts); `rappit worker` applies the
    settings' own through `worker_options`."""

    functions = functions(_DEFAULT_TIMEOUT)
    cron_jobs = cron_jobs(_DEFAULT_TIMEOUT)
    job_timeout = _DEFAULT_TIMEOUT
    poll_delay = 0.05
    max_jobs = 20
    on_startup = startup
    on_shutdown = shutdown
    max_tries = 3
    keep_result = 3600
    health_check_interval = 30
