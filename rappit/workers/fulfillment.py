"""The job that tells a sales channel a shipment left (`rappit.shipping.fulfillment` holds the steps),
and its sweeper.

A run: (1) count the attempt, committed before any work; (2) read what to send and call the channel's
adapter, under the job's own deadline, no transaction open during the call; (3) record the outcome.
A transport failure, a 5xx or a 429 is retried with backoff (arq `Retry`, the same job id) up to
MAX_ATTEMPTS; a refusal (4xx) or a channel that cannot be told fails at once. A push that fails for
good is marked `failed` and dead-lettered, and the operator's retry (POST /api/v1/jobs/dead/{id}/retry)
puts it back. The adapter looks for what an earlier attempt already created before creating anything,
so a run repeated after a lost answer or a failed record never fulfils twice.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog
from arq import Retry

from rappit.integrations.channels.base import ChannelActionNeeded, ChannelRejected, OperationNotSupported
from rappit.platform.db import provide_session
from rappit.shipping import fulfillment
from rappit.tenancy.context import Actor, org_context
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps, redis

log = structlog.get_logger("rappit.workers.fulfillment")
MAX_ATTEMPTS = 5
FINAL = (ChannelRejected, ChannelActionNeeded, OperationNotSupported)
"""Failures that asking again unchanged cannot fix: no retry, a dead letter at once."""
UNFINISHED = "earlier attempts did not finish (they timed out or their worker died)"
ACTOR = Actor(kind="system", id="fulfillment-push")


async def push_fulfillment(ctx: Ctx, org_id: str, push_id: str) -> str:
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), push_id=push_id, org_id=org_id)
    d, pid = deps(ctx), uuid.UUID(push_id)
    with org_context(uuid.UUID(org_id), ACTOR):
        async with provide_session(d.sessionmaker) as session:
            attempt = await fulfillment.count_attempt(session, pid)
        if attempt is None:
            return "done"  # gone, or its outcome is already recorded
        if attempt > MAX_ATTEMPTS:  # every allowed run started and none recorded an outcome
            return await _failed(d, pid, UNFINISHED, attempt, final=True)
        try:
            async with asyncio.timeout(_budget(d)):
                async with provide_session(d.sessionmaker) as session:
                    plan = await fulfillment.prepare(session, pid, d.secret_box)
                adapter = d.channels[plan.channel_type]
                result = await adapter.push_fulfillment(plan.access, plan.fulfillment, http=d.carriers.http)
        except FINAL as exc:
            log.warning("fulfillment.refused", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
            return await _failed(d, pid, f"{type(exc).__name__}: {exc}", attempt, final=True)
        except Exception as exc:  # transport, 5xx, 429, a timeout: worth another try
            log.warning("fulfillment.attempt_failed", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
            return await _failed(
                d, pid, f"{type(exc).__name__}: {exc}", attempt, final=attempt >= MAX_ATTEMPTS
            )
        async with provide_session(d.sessionmaker) as session:
            await fulfillment.record_success(session, pid, result, attempt)
    return "pushed"


def _budget(d: Deps) -> float:
    """The run's own deadline, inside arq's job timeout: a slow channel is a counted, retried failure."""
    return max(d.settings.job_timeout_seconds * 0.8, d.settings.job_timeout_seconds - 5)


async def _failed(d: Deps, push_id: uuid.UUID, error: str, attempt: int, *, final: bool) -> str:
    """Record the failure in a fresh transaction; retry with backoff, or mark failed and dead-letter."""
    retry_in = None if final else d.fulfillment_backoff[min(attempt - 1, len(d.fulfillment_backoff) - 1)]
    async with provide_session(d.sessionmaker) as session:
        push = await fulfillment.record_failure(
            session, push_id, error, attempt, final=final, retry_in=retry_in
        )
        if push is None:
            return "done"
        if final:
            await dead_letters.record(
                session,
                org_id=push.org_id,
                kind=dead_letters.FULFILLMENT_PUSH,
                ref_id=push.id,
                job_name=fulfillment.JOB,
                payload={
                    "shipment_id": str(push.shipment_id),
                    "order_id": str(push.order_id),
                    "channel_id": str(push.channel_id),
                    "tracking_number": push.tracking_number,
                    "carrier": push.carrier,
                },
                error=error,
                attempts=attempt,
            )
    if final:
        return "dead"
    raise Retry(defer=timedelta(seconds=retry_in or 0))  # after the commit: the failure is on record


async def sweep_pending_pushes(ctx: Ctx) -> int:
    """Cron: enqueue pushes still pending after a grace period (Redis was down at the hand-over, a
    worker died, a run failed without a retry). The job id is the push id and arq refuses an id that
    is queued or running, so a push whose job is on its way is never queued twice."""
    d = deps(ctx)
    rows = await fulfillment.stale(d.system_sessionmaker, older_than=timedelta(seconds=d.sweep_grace_seconds))
    queued = 0
    for org_id, push_id in rows:
        if await fulfillment.enqueue(redis(ctx), org_id, push_id):
            queued += 1
    if rows:
        log.info("fulfillment.sweep", pending=len(rows), enqueued=queued)
    return queued
