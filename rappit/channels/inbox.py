"""The durable inbox of verified channel deliveries: store, hand to arq, list, sweep, re-open.

arq is only the trigger; the inbox row is the truth. Ingress stores a row before it answers
(`rappit.channels.ingest`: batched, through the `rappit_webhook_ingest` definer function);
the worker's job (`JOB`, run by `rappit.workers`) applies it exactly once; the sweeper re-enqueues
rows that Redis lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from arq.connections import ArqRedis
from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.channels.models import WebhookEvent
from rappit.platform.db import utcnow
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.inbox")
JOB = "process_webhook_event"
"""The arq job that applies one inbox row: (org id, event id, request id), job id `webhook:{event id}`."""
DONE = ("processed", "ignored", "dead")


async def enqueue(redis: ArqRedis, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None) -> bool:
    """Queue the event's job; False if a job with its id is already queued or running (arq dedup)."""
    job = await redis.enqueue_job(JOB, str(org_id), str(event_id), request_id, _job_id=f"webhook:{event_id}")
    return job is not None


async def try_enqueue(
    redis: ArqRedis, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None
) -> None:
    """Best effort, after the row is committed: if Redis is down the sweeper enqueues the row later."""
    try:
        await enqueue(redis, org_id, event_id, request_id)
    except Exception as exc:  # Redis down, or anything else: the inbox row is the source of truth
        log.warning("webhook.enqueue_failed", event_id=str(event_id), error=type(exc).__name__)


async def lock(session: AsyncSession, event_id: uuid.UUID) -> WebhookEvent | None:
    """The current org's event, row-locked until the transaction ends."""
    query = select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def count_attempt(session: AsyncSession, event_id: uuid.UUID) -> WebhookEvent | None:
    """Count a run's attempt before its work, in its own transaction: a run that fails, times out or
    dies still counts. None when the event is gone or already done (a re-run: nothing to do)."""
    event = await lock(session, event_id)
    if event is None or event.status in DONE:
        return None
    event.attempts += 1
    return event


def mark_done(event: WebhookEvent, order_id: uuid.UUID | None) -> None:
    """Applied (an order written) or ignored (nothing to do for this topic)."""
    event.order_id = order_id
    event.status = "processed" if order_id else "ignored"
    event.processed_at = utcnow()
    event.last_error = None


async def reopen(session: AsyncSession, event_id: uuid.UUID) -> WebhookEvent:
    """Operator retry of a dead event: pending again, with a fresh attempt budget."""
    event = await lock(session, event_id)
    if event is None:
        raise LookupError(f"webhook event {event_id} is gone")
    event.status, event.attempts, event.last_error = "pending", 0, None
    return event


async def list_events(
    session: AsyncSession, channel_id: uuid.UUID, *, limit: int, offset: int
) -> Sequence[WebhookEvent]:
    rows = await session.execute(
        select(WebhookEvent)
        .where(WebhookEvent.channel_id == channel_id)
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.scalars().all()


async def stale(
    system_sessionmaker: async_sessionmaker[AsyncSession], *, older_than: timedelta, limit: int = 1000
) -> Sequence[Row[uuid.UUID, uuid.UUID, str | None]]:
    """(org_id, id, request_id) of every org's events still pending or failed after `older_than`: one
    read as the system role (the sweeper runs in the worker, which holds it)."""
    cutoff: datetime = utcnow() - older_than
    async with unscoped(
        system_sessionmaker, reason="webhook sweeper: pending events of every org"
    ) as session:
        rows = await session.execute(
            select(WebhookEvent.org_id, WebhookEvent.id, WebhookEvent.request_id)
            .where(WebhookEvent.status.in_(("pending", "failed")), WebhookEvent.received_at < cutoff)
            .order_by(WebhookEvent.received_at)
            .limit(limit)
        )
        return rows.all()


async def received_per_channel(session: AsyncSession, *, since: datetime) -> dict[uuid.UUID, tuple[int, int]]:
    """channel id -> (deliveries received since `since`, how many of them failed or are dead)."""
    failed = func.count().filter(WebhookEvent.status.in_(("failed", "dead")))
    rows = await session.execute(
        select(WebhookEvent.channel_id, func.count(), failed)
        .where(WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.channel_id)
    )
    return {channel_id: (total, bad) for channel_id, total, bad in rows.all()}
