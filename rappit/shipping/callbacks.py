"""Carrier callbacks: the durable inbox (store, hand to arq, sweep) and applying one to its shipment.

The same shape as the channel webhook inbox: ingress verifies the signature, stores a row and answers
200 only after it is committed; the worker's job (`JOB`, run by `rappit.workers.carrier_callbacks`)
applies it exactly once; the sweeper re-enqueues rows Redis lost. A carrier's redelivery of the same
event id stores nothing new (UNIQUE (org, account, carrier event id)).

Applying a callback, in one transaction with the inbox row locked:
- the shipment is found by our reference (the shipment id the carrier echoes) or by tracking number,
  among the shipments of the account the callback was addressed to; none: the row is `ignored`
  (`unknown_shipment`), still answered 200 at ingress (carriers retry a 404 forever);
- the order, then the shipment, are locked (the order every hand-over and cancel takes), then:
  in transit (or out for delivery) on `label_purchased` -> `service.ship` (stock committed once, the
  one place a shipment goes in transit); delivered on `in_transit` -> delivered; delivered on
  `label_purchased` (the in-transit scan missed or still on its way) -> ship, then delivered, both in
  this transaction; cancelled by the carrier on `label_purchased` -> voided; anything else (a late
  in-transit after delivered, an exception scan, an event on a voided label) changes no state and is
  written to the timeline with a note. States never move backwards.
- a shipment whose label is not recorded yet (`pending`) is a retryable failure: the purchase saga
  records it within moments (or its recovery job does).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis
from sqlalchemy import Row, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rappit.integrations.carriers.base import CarrierEvent, TrackingStatus
from rappit.platform.db import utcnow
from rappit.platform.logging import current_request_id
from rappit.shipping import service
from rappit.shipping.models import CarrierCallbackEvent, Shipment
from rappit.tenancy.context import require_org_id
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.shipping.callbacks")
JOB = "process_carrier_callback"
"""The arq job that applies one callback: (org id, event id, request id), job id `carrier_callback:{id}`."""
DONE = ("processed", "ignored", "dead")
MOVING = (TrackingStatus.IN_TRANSIT, TrackingStatus.OUT_FOR_DELIVERY)

_TARGET = text("SELECT org_id, carrier, status, callback_secret FROM rappit_carrier_callback_account(:a)")


class ShipmentNotReady(Exception):
    """The callback's shipment has no recorded label yet (purchase in flight): try again later."""


async def callback_target(engine: AsyncEngine, account_id: uuid.UUID) -> Row[Any] | None:
    """The account a callback is addressed to, before any org is known: a narrow SECURITY DEFINER
    look-up (org, carrier, status, encrypted callback secret), outside any transaction."""
    async with engine.connect() as conn:
        return (await conn.execute(_TARGET, {"a": account_id})).first()


async def record(
    session: AsyncSession, account_id: uuid.UUID, carrier: str, event: CarrierEvent, payload: bytes
) -> uuid.UUID | None:
    """Insert the callback for the current org; None for a duplicate (the carrier's event id again)."""
    stmt = (
        insert(CarrierCallbackEvent)
        .values(
            id=uuid.uuid4(),
            org_id=require_org_id(),
            account_id=account_id,
            carrier=carrier,
            carrier_event_id=event.event_id[:200],
            tracking_number=event.tracking_number[:100],
            reference=event.reference[:100] if event.reference else None,
            tracking_status=event.status.value,
            code=event.code[:30],
            description=event.description[:2000],
            occurred_at=event.occurred_at,
            payload=payload,
            request_id=current_request_id(),
            status="pending",
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["org_id", "account_id", "carrier_event_id"])
        .returning(CarrierCallbackEvent.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def enqueue(redis: ArqRedis, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None) -> bool:
    """Queue the callback's job; False if a job with its id is already queued or running (arq dedup)."""
    job = await redis.enqueue_job(
        JOB, str(org_id), str(event_id), request_id, _job_id=f"carrier_callback:{event_id}"
    )
    return job is not None


async def try_enqueue(
    redis: ArqRedis, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None
) -> None:
    """Best effort, after the row is committed: if Redis is down the sweeper enqueues the row later."""
    try:
        await enqueue(redis, org_id, event_id, request_id)
    except Exception as exc:  # Redis down, or anything else: the inbox row is the source of truth
        log.warning("carrier_callback.enqueue_failed", event_id=str(event_id), error=type(exc).__name__)


async def lock(session: AsyncSession, event_id: uuid.UUID) -> CarrierCallbackEvent | None:
    """The current org's callback, row-locked until the transaction ends."""
    query = select(CarrierCallbackEvent).where(CarrierCallbackEvent.id == event_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def count_attempt(session: AsyncSession, event_id: uuid.UUID) -> CarrierCallbackEvent | None:
    """Count a run's attempt before its work, in its own transaction (a run that dies still counts).
    None when the callback is gone or already done."""
    event = await lock(session, event_id)
    if event is None or event.status in DONE:
        return None
    event.attempts += 1
    return event


async def stale(
    system_sessionmaker: async_sessionmaker[AsyncSession], *, older_than: timedelta, limit: int = 1000
) -> Sequence[Row[uuid.UUID, uuid.UUID, str | None]]:
    """(org_id, id, request_id) of every org's callbacks still pending or failed after `older_than`."""
    cutoff: datetime = utcnow() - older_than
    async with unscoped(
        system_sessionmaker, reason="carrier callback sweeper: pending callbacks of every org"
    ) as session:
        rows = await session.execute(
            select(CarrierCallbackEvent.org_id, CarrierCallbackEvent.id, CarrierCallbackEvent.request_id)
            .where(
                CarrierCallbackEvent.status.in_(("pending", "failed")),
                CarrierCallbackEvent.received_at < cutoff,
            )
            .order_by(CarrierCallbackEvent.received_at)
            .limit(limit)
        )
        return rows.all()


# ---- applying one ------------------------------------------------------------------------------------


async def find_shipment(session: AsyncSession, event: CarrierCallbackEvent) -> Shipment | None:
    """The shipment of the callback's account that the reference (our shipment id) or the tracking
    number names; None when it names none of ours."""
    matches = [
        Shipment.tracking_numbers.contains([event.tracking_number]),
        Shipment.carrier_shipment_id == event.tracking_number,
    ]
    try:
        matches.append(Shipment.id == uuid.UUID(event.reference or ""))
    except ValueError:
        pass
    query = (
        select(Shipment)
        .where(Shipment.carrier_account_id == event.account_id, or_(*matches))
        .order_by(Shipment.created_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def _lock_shipment(session: AsyncSession, shipment_id: uuid.UUID) -> Shipment:
    query = (
        select(Shipment)
        .where(Shipment.id == shipment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one()


async def apply(session: AsyncSession, event: CarrierCallbackEvent) -> str:
    """Apply the (locked, not yet done) callback to its shipment and mark it done; the outcome."""
    found = await find_shipment(session, event)
    if found is None:
        _done(event, None, "unknown_shipment", ignored=True)
        return "unknown_shipment"
    order_status = await service.lock_order_for_handover(session, found.id, refuse_cancelled=False)
    shipment = await _lock_shipment(session, found.id)
    status, before = TrackingStatus(event.tracking_status), shipment.status
    if before == "pending":
        raise ShipmentNotReady(f"shipment {shipment.id} has no recorded label yet")
    outcome, note = "recorded", None
    if status in MOVING or status is TrackingStatus.DELIVERED:
        if before == "label_purchased" and order_status == "cancelled":
            note = "order_cancelled"  # the label is being voided; stock was released with the order
        elif before == "label_purchased":
            await service.ship(session, shipment.id)
            outcome = "shipped"
        elif before in ("voided", "void_requested", "failed"):
            note = f"shipment_{before}"
        elif before == "delivered" and status in MOVING:
            note = "late_event"  # never moves back
        if status is TrackingStatus.DELIVERED and (outcome == "shipped" or before == "in_transit"):
            await service.require_transition(session, shipment.id, "delivered", kind="delivered")
            outcome = "shipped_and_delivered" if outcome == "shipped" else "delivered"
    elif status is TrackingStatus.CANCELLED and before == "label_purchased":
        await service.require_transition(session, shipment.id, "voided", kind="voided_by_carrier")
        outcome = "voided"
    await service.note(
        session,
        shipment.id,
        "carrier_event",
        callback_event_id=str(event.id),
        carrier_event_id=event.carrier_event_id,
        code=event.code,
        tracking_status=event.tracking_status,
        description=event.description,
        occurred_at=event.occurred_at.isoformat() if event.occurred_at else None,
        outcome=outcome,
        note=note,
    )
    _done(event, shipment.id, outcome, ignored=False)
    return outcome


def _done(event: CarrierCallbackEvent, shipment_id: uuid.UUID | None, outcome: str, *, ignored: bool) -> None:
    event.shipment_id = shipment_id
    event.outcome = outcome
    event.status = "ignored" if ignored else "processed"
    event.processed_at = utcnow()
    event.last_error = None
