"""The jobs behind the webhook inbox: apply one event (with retries and a dead letter at the end),
and the sweeper that re-enqueues what Redis lost.

The job locks its row, skips it if it is already done, and marks it processed in the same
transaction as the order it wrote, so a job that runs twice (retry, a killed worker's job re-run,
the sweeper) applies the event once.
"""

from __future__ import annotations

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
from rappit.platform.db import provide_session, utcnow
from rappit.platform.logging import bind_request_id
from rappit.tenancy.context import Actor, org_context
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, deps, redis

log = structlog.get_logger("rappit.workers.inbox")
MAX_ATTEMPTS = 3
EXPECTED = (PayloadError, ChannelActionNeeded)
"""Failures that need no stack trace in the log: the payload or the channel is at fault."""


async def process_webhook_event(ctx: Ctx, org_id: str, event_id: str, request_id: str | None = None) -> str:
    bind_request_id(request_id)
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), event_id=event_id, org_id=org_id)
    retry_in: float | None = None
    d = deps(ctx)
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="webhook-processor")):
        async with provide_session(d.sessionmaker) as session:
            event = await inbox.lock(session, uuid.UUID(event_id))
            if event is None:
                log.warning("webhook.event_missing")
                return "missing"
            if event.status in inbox.DONE:
                return event.status  # a re-run: already applied, nothing to do
            event.attempts += 1
            try:
                async with session.begin_nested():
                    order_id, outcome = await apply_event(session, d.channels, d.secret_box, event)
                    event.order_id = order_id
                    event.status = "processed" if order_id else "ignored"
                    event.processed_at = utcnow()
                    event.last_error = None
            except Exception as exc:  # this event failed: record it; others are unaffected
                error = f"{type(exc).__name__}: {exc}"
                event.last_error = error[:4000]
                log.warning(
                    "webhook.processing_failed",
                    attempt=event.attempts,
                    error=error,
                    trace=None if isinstance(exc, EXPECTED) else traceback.format_exc(limit=5),
                )
                if event.attempts >= MAX_ATTEMPTS:
                    await _dead(session, event, error)
                    outcome = "dead"
                else:
                    event.status = "failed"
                    backoff = d.webhook_backoff
                    retry_in = backoff[min(event.attempts - 1, len(backoff) - 1)]
                    outcome = "retry"
    if retry_in is not None:  # committed first: the attempt count survives whatever happens next
        raise Retry(defer=timedelta(seconds=retry_in))
    log.info("webhook.processed", outcome=outcome)
    return outcome


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
    worker died). The job id is the event id, so a row already queued is not queued twice."""
    d = deps(ctx)
    rows = await inbox.stale(d.system_sessionmaker, older_than=timedelta(seconds=d.sweep_grace_seconds))
    queued = 0
    for org_id, event_id, request_id in rows:
        if await inbox.enqueue(redis(ctx), org_id, event_id, request_id):
            queued += 1
    if rows:
        log.info("webhook.sweep", pending=len(rows), enqueued=queued)
    return queued
