"""Background work of shipping, dependencies passed in (the arq job in `rappit.workers` is a thin
wrapper): the saga's recovery of purchases left `pending`."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.integrations.carriers.base import CarrierUnavailable, Label, LabelFormat
from rappit.platform.db import provide_session, utcnow
from rappit.shipping import service
from rappit.shipping.accounts import Carriers, get_account
from rappit.shipping.models import Shipment
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.shipping.jobs")
RECOVERY = Actor(kind="system", id="shipment_recovery")


async def recover_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    system_sessionmaker: async_sessionmaker[AsyncSession],
    carriers: Carriers,
    *,
    older_than_seconds: float,
) -> dict[str, int]:
    """Every `pending` shipment older than the longest label call: ask its carrier by our reference
    whether a label was sold. Sold: record it and void it (the buyer never received it; a carrier
    without void marks void_requested). None sold: failed. No answer: left for the next run."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    async with unscoped(system_sessionmaker, reason="shipment recovery: pending purchases") as s:
        targets = (
            await s.execute(
                select(Shipment.org_id, Shipment.id).where(
                    Shipment.status == "pending", Shipment.created_at <= cutoff
                )
            )
        ).all()
    counts: dict[str, int] = {}
    for org_id, shipment_id in targets:
        with org_context(org_id, RECOVERY):
            try:
                outcome = await recover_one(sessionmaker, carriers, shipment_id)
            except Exception as exc:  # one shipment's failure must not stop the others
                outcome = "error"
                log.error("shipment.recovery_failed", shipment_id=str(shipment_id), error=repr(exc))
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def recover_one(
    sessionmaker: async_sessionmaker[AsyncSession], carriers: Carriers, shipment_id: uuid.UUID
) -> str:
    async with provide_session(sessionmaker) as session:
        shipment = await service.get_shipment(session, shipment_id)
        if shipment.status != "pending":
            return "skipped"
        account = await get_account(session, shipment.carrier_account_id)
        ship_date = shipment.ship_date
    try:
        lookup = await carriers.adapter(account).find_label(str(shipment_id), ship_date)
    except CarrierUnavailable:
        return "unknown"
    if lookup.found is None or (lookup.found and not lookup.tracking_numbers):
        return "unknown"  # never read "no answer" as "no label"
    if not lookup.found:
        async with provide_session(sessionmaker) as session:
            await service.transition(session, shipment_id, "failed", kind="recovered_no_label")
        return "failed"
    numbers = list(lookup.tracking_numbers)
    async with provide_session(sessionmaker) as session:
        moved = await service.transition(
            session,
            shipment_id,
            "label_purchased",
            kind="label_recovered",
            carrier_shipment_id=numbers[0],
            tracking_numbers=numbers,
        )
    if moved is None:
        return "skipped"
    label = Label(numbers[0], tuple(numbers), b"", LabelFormat.PDF, None, None, str(shipment_id))
    try:
        outcome = await service.ask_void(carriers, service.VoidAsk(shipment_id, account, label))
    except CarrierUnavailable:
        return "recorded"  # the label is recorded (not an orphan); the merchant can void it later
    async with provide_session(sessionmaker) as session:
        after = await service.record_void(session, shipment_id, outcome)
    return "recorded" if after.status == "label_purchased" else after.status
