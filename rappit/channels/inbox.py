"""The durable inbox of verified channel deliveries: store, lock, mark, list, re-open.

The inbox row is the truth and the queue: ingress stores a row before it answers
(`rappit.channels.ingest`: batched, through the `rappit_webhook_ingest` definer function); the
workers claim pending rows themselves and apply each exactly once (`rappit.workers.inbox`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels.models import WebhookEvent
from rappit.platform.db import utcnow

log = structlog.get_logger("rappit.inbox")
JOB = "process_webhook_event"
"""The name of the work that applies one inbox row (dead letters of webhook events carry it)."""
DONE = ("processed", "ignored", "dead")


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
    event.status, event.attempts, event.failures = "pending", 0, 0
    event.last_error, event.next_attempt_at = None, None
    await session.execute(text("SELECT pg_notify('rappit_inbox', '')"))  # wakes the claimers at commit
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


async def received_per_channel(session: AsyncSession, *, since: datetime) -> dict[uuid.UUID, tuple[int, int]]:
    """channel id -> (deliveries received since `since`, how many of them failed or are dead)."""
    failed = func.count().filter(WebhookEvent.status.in_(("failed", "dead")))
    rows = await session.execute(
        select(WebhookEvent.channel_id, func.count(), failed)
        .where(WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.channel_id)
    )
    return {channel_id: (total, bad) for channel_id, total, bad in rows.all()}
