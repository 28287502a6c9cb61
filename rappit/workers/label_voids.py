"""Voiding the labels of cancelled orders: the job (retried with backoff, dead-lettered after the last
try) and the sweeper that finds every bought label of a cancelled order that is neither voided nor
dead-lettered (Redis lost the job, or the purchase finished after the cancel) and enqueues its job."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from arq import Retry
from sqlalchemy import text

from rappit.platform.db import provide_session
from rappit.shipping import cancellation, service
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps, redis

log = structlog.get_logger("rappit.workers.label_voids")
UNFINISHED = "an earlier attempt did not finish (it timed out or its worker died)"

_LEFT_BEHIND = text(
    f"""SELECT s.org_id, s.id
          FROM shipments s
          JOIN orders o ON o.org_id = s.org_id AND o.id = s.order_id
         WHERE s.status = 'label_purchased' AND o.status = 'cancelled'
           AND NOT EXISTS (SELECT 1 FROM dead_letters d
                            WHERE d.org_id = s.org_id AND d.kind = '{dead_letters.LABEL_VOID}'
                              AND d.ref_id = s.id AND d.status = 'dead')
         ORDER BY s.updated_at
         LIMIT 1000"""
)


async def void_cancelled_label(ctx: Ctx, org_id: str, shipment_id: str) -> str:
    """arq's job_try counts the attempts (a run whose worker died counts too): attempt N failing waits
    `label_void_backoff[N-1]`; the last allowed one dead-letters and leaves the label as it is."""
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), shipment_id=shipment_id, org_id=org_id)
    d, sid = deps(ctx), uuid.UUID(shipment_id)
    attempt = int(ctx.get("job_try") or 1)
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="label-voider")):
        if attempt > d.label_void_attempts:
            return await _dead(d, sid, UNFINISHED, attempt - 1)
        try:
            outcome = await cancellation.void_label(d.sessionmaker, d.carriers, sid)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("label_void.failed", attempt=attempt, error=error)
            if attempt >= d.label_void_attempts:
                return await _dead(d, sid, error, attempt)
            backoff = d.label_void_backoff
            raise Retry(defer=timedelta(seconds=backoff[min(attempt - 1, len(backoff) - 1)])) from None
    log.info("label_void.done", outcome=outcome)
    return outcome


async def _dead(d: Deps, shipment_id: uuid.UUID, error: str, attempts: int) -> str:
    async with provide_session(d.sessionmaker) as session:
        shipment = await service.get_shipment(session, shipment_id)
        await dead_letters.record(
            session,
            org_id=shipment.org_id,
            kind=dead_letters.LABEL_VOID,
            ref_id=shipment.id,
            job_name=cancellation.VOID_JOB,
            payload={
                "shipment_id": str(shipment.id),
                "order_id": str(shipment.order_id),
                "carrier": shipment.carrier,
                "carrier_account_id": str(shipment.carrier_account_id),
                "tracking_numbers": shipment.tracking_numbers or [],
                "status": shipment.status,
            },
            error=error,
            attempts=attempts,
        )
        await service.note(session, shipment.id, "void_dead_lettered", error=error[:500], attempts=attempts)
    return "dead"


async def sweep_cancelled_labels(ctx: Ctx) -> int:
    """Cron: enqueue a void for every bought label of a cancelled order (not yet dead-lettered)."""
    d = deps(ctx)
    async with unscoped(d.system_sessionmaker, reason="label void sweeper: labels of cancelled orders") as s:
        rows = (await s.execute(_LEFT_BEHIND)).all()
    queued = 0
    for org_id, shipment_id in rows:
        if await cancellation.enqueue_void(redis(ctx), org_id, shipment_id):
            queued += 1
    if rows:
        log.info("label_void.sweep", left_behind=len(rows), enqueued=queued)
    return queued
