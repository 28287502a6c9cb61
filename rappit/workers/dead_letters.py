"""Dead letters: work that failed every try, kept with its payload and error for an operator, who
can list them and put the work back (`retry`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels import inbox
from rappit.platform.db import get_or_404, utcnow
from rappit.platform.errors import BusinessRuleViolation, NotFound
from rappit.workers.models import DeadLetter

log = structlog.get_logger("rappit.dead_letters")
WEBHOOK_EVENT = "webhook_event"


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
    if letter.kind != WEBHOOK_EVENT:
        raise BusinessRuleViolation(
            f"dead letters of kind {letter.kind!r} cannot be retried", code="NOT_RETRYABLE"
        )
    await inbox.reopen(session, letter.ref_id)
    letter.status, letter.retried_at, letter.retried_by = "retried", utcnow(), actor
    return letter


async def get(session: AsyncSession, dead_letter_id: uuid.UUID) -> DeadLetter:
    return await get_or_404(session, DeadLetter, dead_letter_id, "dead letter")


async def count_dead(session: AsyncSession) -> int:
    """Dead letters waiting for an operator."""
    query = select(func.count()).select_from(DeadLetter).where(DeadLetter.status == "dead")
    return int((await session.execute(query)).scalar_one())
