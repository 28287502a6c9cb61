"""The jobs behind the carrier callback inbox: apply one callback (bounded retries with backoff, a dead
letter at the end) and the sweeper that re-enqueues what Redis lost. The same three short transactions
as the webhook inbox's job (`rappit.workers.inbox`): count the attempt, do the work under a deadline,
record a failure (retry or dead-letter)."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from datetime import timedelta

import structlog
from arq import Retry

from rappit.platform.db import provide_session
from rappit.platform.logging import bind_request_id
from rappit.shipping import callbacks, fulfillment
from rappit.tenancy.context import Actor, org_context
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps, redis

log = structlog.get_logger("rappit.workers.carrier_callbacks")
MAX_ATTEMPTS = 5
EXPECTED = (callbacks.ShipmentNotReady,)
SHIPPED = ("shipped", "shipped_and_delivered")
"""Outcomes that moved the shipment through ship(), which wrote a channel push to enqueue."""
UNFINISHED = "an earlier attempt did not finish (it timed out or its worker died)"


async def process_carrier_callback(
    ctx: Ctx, org_id: str, event_id: str, request_id: str | None = None
) -> str:
    bind_request_id(request_id)
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), callback_id=event_id, org_id=org_id)
    d, eid = deps(ctx), uuid.UUID(event_id)
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="carrier-callback-processor")):
        async with provide_session(d.sessionmaker) as session:
            event = await callbacks.count_attempt(session, eid)
            attempts = event.attempts if event else 0
            last_error = event.last_error if event else None
        if event is None:
            return "done"  # gone, or already applied by an earlier run
        if attempts > MAX_ATTEMPTS:  # every allowed run started and none recorded an outcome
            return await _failed(d, eid, last_error or UNFINISHED)
        try:
            async with asyncio.timeout(_budget(d)):
                outcome, shipment_id = await _apply(d, eid)
        except Exception as exc:  # any failure, a timeout included, is recorded
            error = f"{type(exc).__name__}: {exc}"
            trace = None if isinstance(exc, EXPECTED) else traceback.format_exc(limit=5)
            log.warning("carrier_callback.processing_failed", attempt=attempts, error=error, trace=trace)
            return await _failed(d, eid, error)
        if outcome in SHIPPED and shipment_id is not None:
            await _push_now(ctx, d, shipment_id)
    log.info("carrier_callback.processed", outcome=outcome)
    return outcome


async def _push_now(ctx: Ctx, d: Deps, shipment_id: uuid.UUID) -> None:
    """After the commit that shipped: enqueue the channel push `ship()` wrote (the sweeper catches it
    if this fails)."""
    async with provide_session(d.sessionmaker) as session:
        push = await fulfillment.push_of_shipment(session, shipment_id)
    if push is not None and push.status == "pending":
        await fulfillment.try_enqueue(redis(ctx), push.org_id, push.id)


def _budget(d: Deps) -> float:
    return max(d.settings.job_timeout_seconds * 0.8, d.settings.job_timeout_seconds - 5)


async def _apply(d: Deps, event_id: uuid.UUID) -> tuple[str, uuid.UUID | None]:
    async with provide_session(d.sessionmaker) as session:
        event = await callbacks.lock(session, event_id)
        if event is None or event.status in callbacks.DONE:
            return "done", None  # another run got here first
        outcome = await callbacks.apply(session, event)
        shipment_id = event.shipment_id
    return outcome, shipment_id


async def _failed(d: Deps, event_id: uuid.UUID, error: str) -> str:
    """Record the failure in a fresh transaction; retry with backoff, or dead-letter after the last try."""
    async with provide_session(d.sessionmaker) as session:
        event = await callbacks.lock(session, event_id)
        if event is None or event.status in callbacks.DONE:
            return "done"
        event.last_error = error[:4000]
        if event.attempts >= MAX_ATTEMPTS:
            event.status = "dead"
            await dead_letters.record(
                session,
                org_id=event.org_id,
                kind=dead_letters.CARRIER_CALLBACK,
                ref_id=event.id,
                job_name=callbacks.JOB,
                payload={
                    "account_id": str(event.account_id),
                    "carrier": event.carrier,
                    "carrier_event_id": event.carrier_event_id,
                    "tracking_number": event.tracking_number,
                    "body": event.payload.decode("utf-8", "replace")[:100_000],
                },
                error=error,
                attempts=event.attempts,
            )
            return "dead"
        event.status = "failed"
        backoff = d.callback_backoff
        retry_in = backoff[min(event.attempts - 1, len(backoff) - 1)]
    raise Retry(defer=timedelta(seconds=retry_in))  # after the commit: the failure is on record


async def sweep_pending_callbacks(ctx: Ctx) -> int:
    """Cron: enqueue callbacks still pending or failed after a grace period (Redis was down, a worker
    died). arq refuses a job id that is queued or running, so none is queued twice."""
    d = deps(ctx)
    rows = await callbacks.stale(d.system_sessionmaker, older_than=timedelta(seconds=d.sweep_grace_seconds))
    queued = 0
    for org_id, event_id, request_id in rows:
        if await callbacks.enqueue(redis(ctx), org_id, event_id, request_id):
            queued += 1
    if rows:
        log.info("carrier_callback.sweep", pending=len(rows), enqueued=queued)
    return queued
