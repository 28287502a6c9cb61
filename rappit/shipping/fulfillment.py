"""Back to the channel: when a shipment goes in_transit, its order's sales channel is told (Shopify: a
fulfillment with tracking; WooCommerce: completed plus a tracking note), through the channel adapter.

Nothing is lost: `record_push` writes the outbox row in the hand-over's own transaction (one per
shipment, a UNIQUE constraint); the caller enqueues the job after the commit and a sweeper enqueues
rows left pending. A run is three short transactions (the inbox's pattern): count the attempt, read
what to send, record the outcome; the channel call in between holds no transaction. Every attempt's
outcome goes on the order's and the shipment's timelines. The arq job itself (retry, backoff, dead
letter) is `rappit.workers.fulfillment`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis
from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.channels import service as channels
from rappit.integrations.carriers.registry import tracking_link
from rappit.integrations.channels.base import (
    ChannelAccess,
    ChannelActionNeeded,
    Fulfillment,
    FulfillmentLine,
    PushResult,
)
from rappit.orders import service as orders
from rappit.platform.crypto import SecretBox
from rappit.platform.db import utcnow
from rappit.shipping.models import FulfillmentPush, Shipment, ShipmentEvent
from rappit.tenancy.context import require_org_id
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.fulfillment")
JOB = "push_fulfillment"
"""The arq job that runs one push: (org id, push id), job id `fulfillment:{push id}`."""


def job_id(push_id: uuid.UUID) -> str:
    return f"fulfillment:{push_id}"


def _timeline(session: AsyncSession, push: FulfillmentPush, kind: str, **detail: Any) -> None:
    """The same line on the order's timeline and on the shipment's."""
    detail = {"push_id": str(push.id), "tracking_number": push.tracking_number, **detail}
    orders.add_event(session, push.order_id, kind, **detail)
    session.add(ShipmentEvent(shipment_id=push.shipment_id, kind=kind, detail=detail))


# ---- the outbox row ------------------------------------------------------------------------------


async def record_push(session: AsyncSession, shipment: Shipment) -> uuid.UUID | None:
    """In the hand-over's transaction: the push of this shipment to its order's channel (None for an
    order entered by hand, which has no channel to tell). One per shipment, whoever asks: the
    UNIQUE (org_id, shipment_id) constraint makes a second insert a no-op."""
    order = await orders.get_order(session, shipment.order_id)
    if order.channel_id is None or not shipment.tracking_numbers:
        return None
    stmt = (
        insert(FulfillmentPush)
        .values(
            id=uuid.uuid4(),
            org_id=require_org_id(),
            shipment_id=shipment.id,
            order_id=order.id,
            channel_id=order.channel_id,
            status="pending",
            tracking_number=str(shipment.tracking_numbers[0]),
            carrier=shipment.carrier,
            attempts=0,
        )
        .on_conflict_do_nothing()
        .returning(FulfillmentPush.id)
    )
    push_id = (await session.execute(stmt)).scalar_one_or_none()
    if push_id is not None:
        push = await get_push(session, push_id)
        _timeline(session, push, "fulfillment_push_queued", channel_id=str(order.channel_id))
        await session.flush()
    return push_id


async def get_push(session: AsyncSession, push_id: uuid.UUID, *, lock: bool = False) -> FulfillmentPush:
    query = select(FulfillmentPush).where(FulfillmentPush.id == push_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar_one()


async def push_of_shipment(session: AsyncSession, shipment_id: uuid.UUID) -> FulfillmentPush | None:
    found = await session.execute(select(FulfillmentPush).where(FulfillmentPush.shipment_id == shipment_id))
    return found.scalar_one_or_none()


# ---- one run: count, prepare, (the call), record --------------------------------------------------


async def count_attempt(session: AsyncSession, push_id: uuid.UUID) -> int | None:
    """Count a run before its work, committed on its own: a run that dies still counts. None when the
    push is gone or no longer pending (a re-run after the outcome was recorded: nothing to do)."""
    push = (
        await session.execute(select(FulfillmentPush).where(FulfillmentPush.id == push_id).with_for_update())
    ).scalar_one_or_none()
    if push is None or push.status != "pending":
        return None
    push.attempts += 1
    push.updated_at = utcnow()
    return push.attempts


@dataclass(frozen=True, slots=True)
class Attempt:
    channel_type: str
    access: ChannelAccess
    fulfillment: Fulfillment


async def prepare(session: AsyncSession, push_id: uuid.UUID, box: SecretBox) -> Attempt:
    """What to tell the channel: the shipment's lines as the channel's order lines, and its tracking.
    ChannelActionNeeded when the channel cannot be told (disabled, or the order has no channel id)."""
    push = await get_push(session, push_id)
    channel = await channels.get_channel(session, push.channel_id)
    if channel.status != "active":
        raise ChannelActionNeeded("the order's channel is disabled: enable it, then retry the dead letter")
    order = await orders.get_order(session, push.order_id)
    if not order.external_id:
        raise ChannelActionNeeded("the order has no id on its channel")
    shipment = (await session.execute(select(Shipment).where(Shipment.id == push.shipment_id))).scalar_one()
    current = await orders.current_lines(session, order.id)
    lines: list[FulfillmentLine] = []
    for carried in shipment.lines:
        left = int(carried["quantity"])
        for line in current:
            if left == 0:
                break
            if line.sku is not None and line.sku == carried["sku"] and line.quantity > 0:
                take = min(left, line.quantity)
                lines.append(FulfillmentLine(line.external_line_id, line.sku, take))
                left -= take
        if left:
            raise ChannelActionNeeded(f"the order no longer has {carried['quantity']} x {carried['sku']}")
    link = tracking_link(push.carrier, push.tracking_number)
    return Attempt(
        channel_type=channel.type,
        access=channels.access(box, channel),
        fulfillment=Fulfillment(
            order_external_id=order.external_id,
            lines=tuple(lines),
            tracking_number=link.number,
            tracking_company=link.company,
            tracking_url=link.url,
            reference=str(push.id),
        ),
    )


async def record_success(session: AsyncSession, push_id: uuid.UUID, result: PushResult, attempt: int) -> bool:
    """pending -> pushed, once (a conditional UPDATE): False if another run recorded it first."""
    now = utcnow()
    moved = (
        await session.execute(
            update(FulfillmentPush)
            .where(FulfillmentPush.id == push_id, FulfillmentPush.status == "pending")
            .values(
                status="pushed",
                pushed_at=now,
                updated_at=now,
                external_ref=result.external_ref[:100],
                last_error=None,
            )  # fmt: skip
            .returning(FulfillmentPush.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if moved is None:
        return False
    push = await get_push(session, push_id)
    _timeline(
        session,
        push,
        "fulfillment_pushed",
        attempt=attempt,
        external_ref=result.external_ref,
        already_at_channel=result.already_there,
    )
    log.info("fulfillment.pushed", push_id=str(push_id), already_at_channel=result.already_there)
    return True


async def record_failure(
    session: AsyncSession,
    push_id: uuid.UUID,
    error: str,
    attempt: int,
    *,
    final: bool,
    retry_in: float | None,
) -> FulfillmentPush | None:
    """An attempt failed: on the timelines, and `failed` if it was the last (the caller dead-letters).
    None if the push is no longer pending (another run finished it)."""
    push = (
        await session.execute(
            select(FulfillmentPush)
            .where(FulfillmentPush.id == push_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if push is None or push.status != "pending":
        return None
    push.last_error, push.updated_at = error[:4000], utcnow()
    if final:
        push.status = "failed"
        _timeline(session, push, "fulfillment_push_failed", attempt=attempt, error=error[:500])
    else:
        _timeline(
            session,
            push,
            "fulfillment_push_attempt_failed",
            attempt=attempt,
            error=error[:500],
            retry_in=retry_in,
        )
    return push


async def reopen(session: AsyncSession, push_id: uuid.UUID) -> FulfillmentPush:
    """Operator retry of a dead push: pending again, with a fresh attempt budget."""
    push = (
        await session.execute(select(FulfillmentPush).where(FulfillmentPush.id == push_id).with_for_update())
    ).scalar_one_or_none()
    if push is None:
        raise LookupError(f"fulfillment push {push_id} is gone")
    push.status, push.attempts, push.last_error, push.updated_at = "pending", 0, None, utcnow()
    _timeline(session, push, "fulfillment_push_retried")
    return push


# ---- queueing ------------------------------------------------------------------------------------


async def enqueue(redis: ArqRedis, org_id: uuid.UUID, push_id: uuid.UUID) -> bool:
    """Queue the push's job; False if a job with its id is already queued or running (arq dedup)."""
    return await redis.enqueue_job(JOB, str(org_id), str(push_id), _job_id=job_id(push_id)) is not None


async def try_enqueue(redis: ArqRedis, org_id: uuid.UUID, push_id: uuid.UUID) -> None:
    """Best effort, after the commit: if Redis is down, the sweeper enqueues the row later."""
    try:
        await enqueue(redis, org_id, push_id)
    except Exception as exc:  # the outbox row is the source of truth
        log.warning("fulfillment.enqueue_failed", push_id=str(push_id), error=type(exc).__name__)


async def stale(
    system_sessionmaker: async_sessionmaker[AsyncSession], *, older_than: timedelta, limit: int = 1000
) -> Sequence[Row[uuid.UUID, uuid.UUID]]:
    """(org_id, id) of every org's pushes still pending after `older_than` (read as the system role)."""
    cutoff: datetime = utcnow() - older_than
    async with unscoped(system_sessionmaker, reason="fulfillment sweeper: pending pushes of every org") as s:
        rows = await s.execute(
            select(FulfillmentPush.org_id, FulfillmentPush.id)
            .where(FulfillmentPush.status == "pending", FulfillmentPush.created_at < cutoff)
            .order_by(FulfillmentPush.created_at)
            .limit(limit)
        )
        return rows.all()
