"""Dead letters: work that failed every try, kept with its payload and error for an operator, who
can list them and put the work back (`retry`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels import inbox
from rappit.inventory import imports
from rappit.platform.db import get_or_404, utcnow
from rappit.platform.errors import BusinessRuleViolation, NotFound
from rappit.shipping import fulfillment
from rappit.workers.models import DeadLetter

log = structlog.get_logger("rappit.dead_letters")
WEBHOOK_EVENT = "webhook_event"
FULFILLMENT_PUSH = "fulfillment_push"
IMPORT = "import"


async def _reopen_event(session: AsyncSession, ref_id: uuid.UUID) -> None:
    await inbox.reopen(session, ref_id)


async def _reopen_push(session: AsyncSession, ref_id: uuid.UUID) -> None:
    await fulfillment.reopen(session, ref_id)


async def _reopen_import(session: AsyncSession, ref_id: uuid.UUID) -> None:
    await imports.reopen(session, ref_id)


async def _enqueue_event(
    redis: ArqRedis, org_id: uuid.UUID, ref_id: uuid.UUID, request_id: str | None
) -> None:
    """Nothing to queue: webhook events are claimed from the inbox, and `inbox.reopen` notified the
    claiming workers in the retry's own transaction (their poll catches a missed notice)."""


async def _enqueue_push(
    redis: ArqRedis, org_id: uuid.UUID, ref_id: uuid.UUID, request_id: str | None
) -> None:
    await fulfillment.try_enqueue(redis, org_id, ref_id)


async def _enqueue_import(
    redis: ArqRedis, org_id: uuid.UUID, ref_id: uuid.UUID, request_id: str | None
) -> None:
    await imports.try_enqueue(redis, org_id, ref_id)


RETRYABLE: dict[
    str,
    tuple[
        Callable[[AsyncSession, uuid.UUID], Awaitable[None]],
        Callable[[ArqRedis, uuid.UUID, uuid.UUID, str | None], Awaitable[None]],
    ],
] = {
    WEBHOOK_EVENT: (_reopen_event, _enqueue_event),
    FULFILLMENT_PUSH: (_reopen_push, _enqueue_push),
    IMPORT: (_reopen_import, _enqueue_import),
}
"""kind -> (put the work back in the operator's transaction, enqueue it after the commit)."""
CARRIER_CALLBACK = "carrier_callback"
"""A carrier callback that failed every try (ref_id: the carrier_callback_events row)."""
LABEL_VOID = "label_void"
"""A cancelled order's label the carrier would not void (ref_id: the shipment; it stays label_purchased)."""


async def record(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    kind: str,
    ref_id: uuid.UUID,
    job_name: str,
    payload: dict[str, Any],
    error: str,
    attempts: int,
) -> None:
    """One row per (kind, ref): a thing that dies again after a retry updates its letter."""
    now = utcnow()
    stmt = insert(DeadLetter).values(
        id=uuid.uuid4(),
        org_id=org_id,
        kind=kind,
        ref_id=ref_id,
        job_name=job_name,
        payload=payload,
        error=error[:4000],
        attempts=attempts,
        status="dead",
        first_failed_at=now,
        last_failed_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "kind", "ref_id"],
        set_={
            "error": stmt.excluded.error,
            "attempts": DeadLetter.attempts + stmt.excluded.attempts,
            "status": "dead",
            "last_failed_at": now,
        },
    )
    await session.execute(stmt)
    log.error("job.dead_lettered", kind=kind, ref_id=str(ref_id), attempts=attempts, error=error)


async def list_dead(
    session: AsyncSession, *, status: str | None, limit: int, offset: int
) -> Sequence[DeadLetter]:
    query = (
        select(DeadLetter)
        .order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id)
        .limit(limit)
        .offset(offset)
    )
    if status:
        query = query.where(DeadLetter.status == status)
    return (await session.execute(query)).scalars().all()


async def retry(session: AsyncSession, dead_letter_id: uuid.UUID, actor: str) -> DeadLetter:
    """Operator action: put the work back with a fresh attempt budget (the caller enqueues it later)."""
    letter = (
        await session.execute(select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update())
    ).scalar_one_or_none()
    if letter is None:
        raise NotFound("no such dead letter", details={"dead_letter_id": str(dead_letter_id)})
    if letter.status != "dead":
        raise BusinessRuleViolation("this dead letter was already retried", code="ALREADY_RETRIED")
    if letter.kind not in RETRYABLE:
        raise BusinessRuleViolation(
            f"dead letters of kind {letter.kind!r} cannot be retried", code="NOT_RETRYABLE"
        )
    await RETRYABLE[letter.kind][0](session, letter.ref_id)
    letter.status, letter.retried_at, letter.retried_by = "retried", utcnow(), actor
    return letter


async def get(session: AsyncSession, dead_letter_id: uuid.UUID) -> DeadLetter:
    return await get_or_404(session, DeadLetter, dead_letter_id, "dead letter")


async def enqueue_retried(redis: ArqRedis, letter: DeadLetter, request_id: str | None) -> None:
    """After the retry's commit: queue the work again (best effort; the sweepers catch a miss)."""
    await RETRYABLE[letter.kind][1](redis, letter.org_id, letter.ref_id, request_id)


async def count_dead(session: AsyncSession) -> int:
    """Dead letters waiting for an operator."""
    query = select(func.count()).select_from(DeadLetter).where(DeadLetter.status == "dead")
    return int((await session.execute(query)).scalar_one())
