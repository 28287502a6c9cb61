"""The jobs behind the webhook inbox: apply one event (with retries and a dead letter at the end),
and the sweeper that re-enqueues what Redis lost.

A run is three short transactions, so nothing that goes wrong can leave an attempt uncounted:
1. count the attempt (committed before any work, so a run that times out or whose worker dies
   still counts, and the run after the last allowed one dead-letters instead of trying again);
2. the work, under its own deadline: lock the row, skip it if done, apply the order, mark it
   processed, all in the order's transaction, so a run that repeats applies the event once;
3. on any failure, a fresh transaction records the error and either schedules a retry or
   dead-letters the event.
"""

from __future__ import annotations

import asyncio
import traceback
import uuid
from datetime import timedelta

import structlog
from arq import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels import inbox
from rappit.channels.models import WebhookEvent
from rappit.integrations.channels.base import ChannelActionNeeded
from rappit.integrations.channels.canonical import PayloadError
from rappit.orders.jobs import apply_event
from rappit.platform.db import provide_session
from rappit.platform.logging import bind_request_id
from rappit.tenancy.context import Actor, org_context
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps, redis

log = structlog.get_logger("rappit.workers.inbox")
MAX_ATTEMPTS = 3
EXPECTED = (PayloadError, ChannelActionNeeded)
"""Failures that need no stack trace in the log: the payload or the channel is at fault."""
UNFINISHED = "an earlier attempt did not finish (it timed out or its worker died)"


async def process_webhook_event(ctx: Ctx, org_id: str, event_id: str, request_id: str | None = None) -> str:
    bind_request_id(request_id)
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), event_id=event_id, org_id=org_id)
    d, eid = deps(ctx), uuid.UUID(event_id)
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="webhook-processor")):
        async with provide_session(d.sessionmaker) as session:
            event = await inbox.count_attempt(session, eid)
            attempts = event.attempts if event else 0
        if event is None:
            return "done"  # gone, or already applied by an earlier run
        if attempts > MAX_ATTEMPTS:  # the runs allowed all started, and none recorded an outcome
            return await _failed(d, eid, event.last_error or UNFINISHED)
        try:
            async with asyncio.timeout(_budget(d)):
                outcome = await _apply(d, eid)
        except Exception as exc:  # any failure, a timeout included, is recorded: the others go on
            error = f"{type(exc).__name__}: {exc}"
            trace = None if isinstance(exc, EXPECTED) else traceback.format_exc(limit=5)
            log.warning("webhook.processing_failed", attempt=attempts, error=error, trace=trace)
            return await _failed(d, eid, error)
    log.info("webhook.processed", outcome=outcome)
    return outcome


def _budget(d: Deps) -> float:
    """The work's own deadline, inside arq's job timeout so that a slow run is a counted failure
    with a retry, not a cancellation."""
    return max(d.settings.job_timeout_seconds * 0.8, d.settings.job_timeout_seconds - 5)


async def _apply(d: Deps, event_id: uuid.UUID) -> str:
    async with provide_session(d.sessionmaker) as session:
        event = await inbox.lock(session, event_id)
        if event is None or event.status in inbox.DONE:
            return "done"  # another run got here first
        structlog.contextvars.bind_contextvars(channel_id=str(event.channel_id), topic=event.topic)
        order, outcome = await apply_event(session, d.channels, d.secret_box, event)
        inbox.mark_done(event, order.id if order else None)
    if order is not None:  # committed: the job's later lines (and "processed") name the order
        structlog.contextvars.bind_contextvars(order_id=str(order.id), order_number=order.number)
    return outcome


async def _failed(d: Deps, event_id: uuid.UUID, error: str) -> str:
    """Record the failure in a fresh transaction; retry with backoff, or dead-letter after the last try."""
    async with provide_session(d.sessionmaker) as session:
        event = await inbox.lock(session, event_id)
        if event is None or event.status in inbox.DONE:
            return "done"
        event.last_error = error[:4000]
        if event.attempts >= MAX_ATTEMPTS:
            await _dead(session, event, error)
            return "dead"
        event.status = "failed"
        retry_in = d.webhook_backoff[min(event.attempts - 1, len(d.webhook_backoff) - 1)]
    raise Retry(defer=timedelta(seconds=retry_in))  # after the commit: the failure is on record


async def _dead(session: AsyncSession, event: WebhookEvent, error: str) -> None:
    event.status = "dead"
    await dead_letters.record(
        session,
        org_id=event.org_id,
        kind=dead_letters.WEBHOOK_EVENT,
        ref_id=event.id,
        job_name=inbox.JOB,
        payload={
            "channel_id": str(event.channel_id),
            "topic": event.topic,
            "delivery_id": event.delivery_id,
            "body": event.payload.decode("utf-8", "replace")[:100_000],
        },
        error=error,
        attempts=event.attempts,
    )


async def sweep_pending_webhooks(ctx: Ctx) -> int:
    """Cron: enqueue inbox rows still pending or failed after a grace period (Redis was down, a
    worker died). The job id is the event id, and arq refuses a job id that is queued or running,
    so an event whose job is still on its way is never queued twice."""
    d = deps(ctx)
    rows = await inbox.stale(d.system_sessionmaker, older_than=timedelta(seconds=d.sweep_grace_seconds))
    queued = 0
    for org_id, event_id, request_id in rows:
        if await inbox.enqueue(redis(ctx), org_id, event_id, request_id):
            queued += 1
    if rows:
        log.info("webhook.sweep", pending=len(rows), enqueued=queued)
    return queued
