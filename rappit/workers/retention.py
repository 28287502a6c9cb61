"""Retention: processed webhook events and order events older than RETENTION_DAYS (30) are deleted in
small batches, each its own short transaction that skips rows another transaction holds (SKIP LOCKED),
so the purge never waits on ingress or the inbox jobs and never holds many locks for long. Pending,
failed and dead events are kept whatever their age (they are work, or evidence). The inventory ledger
is kept for ever: it is the audit trail, and no hot path scans it (it is read by (org, sku, id)).
"""

from __future__ import annotations

import time
from datetime import timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.platform.db import utcnow
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger(__name__)

_BATCHES = {
    "webhook_events": text(
        """DELETE FROM webhook_events w
            USING (SELECT org_id, id FROM webhook_events
                    WHERE status IN ('processed', 'ignored') AND processed_at < :cutoff
                    ORDER BY processed_at LIMIT :batch FOR UPDATE SKIP LOCKED) old
            WHERE w.org_id = old.org_id AND w.id = old.id"""
    ),
    "order_events": text(
        """DELETE FROM order_events e
            USING (SELECT org_id, id FROM order_events WHERE created_at < :cutoff
                    ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED) old
            WHERE e.org_id = old.org_id AND e.id = old.id"""
    ),
}


async def purge_history(
    system_sessionmaker: async_sessionmaker[AsyncSession],
    *,
    retention_days: int,
    batch: int = 1000,
    budget_seconds: float = 20.0,
) -> dict[str, int]:
    """Delete what is past retention, batch by batch, until none is left or the budget is spent (the
    next run goes on). Returns the rows deleted per table."""
    cutoff = utcnow() - timedelta(days=retention_days)
    started = time.monotonic()
    deleted = dict.fromkeys(_BATCHES, 0)
    for table, statement in _BATCHES.items():
        while time.monotonic() - started < budget_seconds:
            async with unscoped(
                system_sessionmaker, reason=f"retention: {table} older than {retention_days} days"
            ) as s:
                n = int((await s.execute(statement, {"cutoff": cutoff, "batch": batch})).rowcount or 0)  # type: ignore[attr-defined]
            deleted[table] += n
            if n < batch:
                break
    if any(deleted.values()):
        log.info("retention.purged", retention_days=retention_days, **deleted)
    return deleted
