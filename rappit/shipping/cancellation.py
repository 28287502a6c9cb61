"""Cancelling an order that may have shipments: shipping orchestrates it because orders must not import
shipping (shipping already imports orders).

`cancel_order` runs in the caller's one transaction: the order is locked FOR UPDATE, then its shipments
(the same lock order as `service.ship`, so a hand-over and a cancel of one order serialize). A shipment
in transit or delivered refuses the cancel (409 naming it); otherwise the order is cancelled and its
reservations released (`orders.service.cancel`), and each bought label is handed to a void job after
the commit (`void_label`, retried and dead-lettered by `rappit.workers.shipping`). A purchase still
`pending` at that moment is left to finish: its label then belongs to a cancelled order, which the
sweeper finds and voids (and the recovery job voids labels it recovers in any case).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.orders import service as orders
from rappit.orders.models import Order
from rappit.platform.db import provide_session
from rappit.platform.errors import Conflict
from rappit.shipping import service
from rappit.shipping.accounts import Carriers
from rappit.shipping.models import Shipment

log = structlog.get_logger("rappit.shipping.cancellation")
VOID_JOB = "void_cancelled_label"
"""The arq job that voids one label of a cancelled order: (org id, shipment id), job id `label_void:{id}`."""
SHIPPED = ("in_transit", "delivered")


class OrderShipped(Conflict):
    code = "ORDER_SHIPPED"


@dataclass(frozen=True, slots=True)
class Cancelled:
    order: Order
    labels_to_void: list[uuid.UUID]


async def cancel_order(session: AsyncSession, order_id: uuid.UUID) -> Cancelled:
    order = await orders.get_order(session, order_id, for_update=True)
    shipments = list(
        (
            await session.execute(
                select(Shipment)
                .where(Shipment.order_id == order_id)
                .order_by(Shipment.created_at, Shipment.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    )
    moving = [s for s in shipments if s.status in SHIPPED]
    if moving:
        first = moving[0]
        raise OrderShipped(
            f"order {order.number} cannot be cancelled: shipment {first.id} is {first.status}",
            details={
                "order_id": str(order_id),
                "shipments": [
                    {"id": str(s.id), "status": s.status, "tracking_numbers": s.tracking_numbers or []}
                    for s in moving
                ],
            },
        )
    if order.status == "cancelled":
        return Cancelled(order, [s.id for s in shipments if s.status == "label_purchased"])
    await orders.cancel(session, order)
    to_void = [s.id for s in shipments if s.status == "label_purchased"]
    for shipment_id in to_void:
        await service.note(session, shipment_id, "void_requested_by_cancel", order_id=str(order_id))
    return Cancelled(order, to_void)


async def enqueue_voids(redis: ArqRedis, org_id: uuid.UUID, shipment_ids: list[uuid.UUID]) -> None:
    """Best effort, after the cancel is committed: the sweeper finds any label left behind."""
    for shipment_id in shipment_ids:
        try:
            await enqueue_void(redis, org_id, shipment_id)
        except Exception as exc:  # Redis down: the sweeper enqueues it once Redis is back
            log.warning("label_void.enqueue_failed", shipment_id=str(shipment_id), error=type(exc).__name__)


async def enqueue_void(redis: ArqRedis, org_id: uuid.UUID, shipment_id: uuid.UUID) -> bool:
    job = await redis.enqueue_job(
        VOID_JOB, str(org_id), str(shipment_id), _job_id=f"label_void:{shipment_id}"
    )
    return job is not None


async def void_label(
    sessionmaker: async_sessionmaker[AsyncSession], carriers: Carriers, shipment_id: uuid.UUID
) -> str:
    """Void one label of a cancelled order through the account that bought it, for the org in context.
    Voided only on the carrier's confirmation (a carrier without void: `void_requested`). Returns the
    outcome; raises when the carrier could not be asked (CarrierUnavailable) or refused (VoidRefused), so
    the job retries and finally dead-letters, the label left `label_purchased`."""
    async with provide_session(sessionmaker) as session:
        shipment = await service.get_shipment(session, shipment_id)
        if shipment.status != "label_purchased":
            return f"nothing_to_void:{shipment.status}"
        order = await orders.get_order(session, shipment.order_id)
        if order.status != "cancelled":
            return "order_not_cancelled"
        ask = await service.prepare_void(session, shipment_id)
    outcome = await service.ask_void(carriers, ask)
    async with provide_session(sessionmaker) as session:
        after = await service.record_void(session, shipment_id, outcome)
    refused = service.refusal(shipment_id, outcome)
    if refused is not None:
        raise refused
    return after.status
