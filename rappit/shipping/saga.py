"""The label purchase and void as whole operations: each spans several transactions (the row is
committed before the carrier is called, the answer recorded after), so they take the sessionmaker
rather than one session. The JSON routes and the dashboard both call these."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.integrations.carriers.base import CarrierUnavailable, LabelFormat
from rappit.platform.db import provide_session
from rappit.platform.errors import BusinessRuleViolation
from rappit.shipping import service
from rappit.shipping.accounts import Carriers
from rappit.shipping.models import CarrierAccount, Shipment

RATE_DEADLINE_SECONDS = 8.0


@dataclass(frozen=True, slots=True)
class Bought:
    shipment: Shipment
    replayed: bool
    """True when an earlier purchase with the same idempotency key was found (nothing bought now)."""


async def rates(
    sessionmaker: async_sessionmaker[AsyncSession],
    carriers: Carriers,
    order_id: uuid.UUID,
    data: service.ShipmentInput,
    *,
    deadline: float | None = None,
) -> list[service.AccountQuote]:
    """Quotes from every active account; the database is read first and no transaction waits on a carrier."""
    async with provide_session(sessionmaker) as session:
        request, accounts = await service.prepare_quote(session, order_id, data)
    return await service.quote(carriers, request, accounts, deadline=deadline or RATE_DEADLINE_SECONDS)


async def buy_label(
    sessionmaker: async_sessionmaker[AsyncSession],
    carriers: Carriers,
    *,
    order_id: uuid.UUID,
    account_id: uuid.UUID,
    service_code: str,
    data: service.ShipmentInput,
    label_format: LabelFormat = LabelFormat.PDF,
    idempotency_key: str | None = None,
) -> Bought:
    """Buy a label: `pending` committed first, the carrier called, the answer recorded. An unavailable
    carrier raises CarrierUnavailable and a refusal CARRIER_REFUSED, each naming the shipment."""
    async with provide_session(sessionmaker) as session:
        if idempotency_key is not None:
            earlier = await service.by_idempotency_key(session, idempotency_key)
            if earlier is not None:
                return Bought(earlier, replayed=True)
        purchase = await service.start_purchase(
            session,
            order_id,
            account_id,
            service_code,
            data,
            label_format=label_format,
            idempotency_key=idempotency_key,
        )
    outcome = await service.buy(carriers, purchase)
    async with provide_session(sessionmaker) as session:
        shipment = await service.finish_purchase(session, purchase.shipment_id, outcome)
    if isinstance(outcome, CarrierUnavailable):
        outcome.details = {
            **outcome.details,
            "shipment_id": str(shipment.id),
            "shipment_status": shipment.status,
        }
        raise outcome
    if shipment.status == "failed":
        raise BusinessRuleViolation(
            "the carrier refused the label: " + "; ".join(f"{m.code}: {m.text}" for m in outcome.messages),
            code="CARRIER_REFUSED",
            details={
                "shipment_id": str(shipment.id),
                "carrier_messages": [{"code": m.code, "text": m.text} for m in outcome.messages],
            },
        )
    return Bought(shipment, replayed=False)


async def void_label(
    sessionmaker: async_sessionmaker[AsyncSession], carriers: Carriers, shipment_id: uuid.UUID
) -> Shipment:
    """Voided only on the carrier's confirmation, through the account that bought the label; a refusal
    is recorded on the timeline and raised as VOID_REFUSED."""
    async with provide_session(sessionmaker) as session:
        ask = await service.prepare_void(session, shipment_id)
    outcome = await service.ask_void(carriers, ask)
    async with provide_session(sessionmaker) as session:
        shipment = await service.record_void(session, shipment_id, outcome)
    refused = service.refusal(shipment_id, outcome)
    if refused is not None:
        raise refused
    return shipment


def account_of(accounts: list[CarrierAccount], account_id: uuid.UUID) -> CarrierAccount | None:
    return next((a for a in accounts if a.id == account_id), None)
