"""Shipments: rate shopping, the label purchase saga, void, and hand-over (stock committed once).

The purchase is a saga in three steps, each its own transaction, opened by the caller (route or job):
`start_purchase` commits a `pending` row before any carrier call (our shipment id is the carrier's
customer reference); the caller then calls `buy` (no database); `finish_purchase` records what came
back. If the process fails between the carrier's answer and the record, `jobs.recover_pending` asks
the carrier by our reference and records or voids. Every state change is `transition`: one conditional
UPDATE naming the states it may leave, so racing callers change a row once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.integrations.carriers.base import (
    Address,
    CarrierMessage,
    CarrierUnavailable,
    ContentsType,
    CustomsDeclaration,
    CustomsLine,
    Incoterm,
    Label,
    LabelFormat,
    LabelRequest,
    LabelResult,
    OperationNotSupported,
    Parcel,
    Rate,
    ShipmentRequest,
)
from rappit.integrations.carriers.customs import missing_customs_fields
from rappit.inventory import reservations
from rappit.inventory.models import InventoryLevel, Reservation, Sku
from rappit.orders import service as orders
from rappit.orders.models import Order
from rappit.orders.service import RESERVATION_REF
from rappit.platform.db import add_unique, get_or_404, utcnow
from rappit.platform.errors import BusinessRuleViolation, Conflict
from rappit.shipping import fulfillment
from rappit.shipping.accounts import Carriers, get_account, list_accounts
from rappit.shipping.models import TRANSITIONS, CarrierAccount, Shipment, ShipmentEvent


class InvalidTransition(Conflict):
    code = "INVALID_TRANSITION"


@dataclass(frozen=True, slots=True)
class SkuCustoms:
    """Customs facts of one SKU, given with the request (SKUs do not store them yet)."""

    hs_code: str | None = None
    origin_country: str | None = None
    weight_grams: int | None = None
    """Per unit."""
    unit_value_minor: int | None = None
    """Per unit; defaults to the order line's unit price."""
    description: str | None = None


@dataclass(frozen=True, slots=True)
class CustomsInput:
    items: dict[str, SkuCustoms] = field(default_factory=dict)
    incoterm: str | None = "DAP"
    contents_type: str | None = "merchandise"
    exporter_eori: str | None = None
    exporter_vat: str | None = None
    importer_eori: str | None = None
    importer_vat: str | None = None
    paperless_trade: bool = False


@dataclass(frozen=True, slots=True)
class ShipmentInput:
    ship_from: Address
    ship_to: Address
    parcels: tuple[Parcel, ...]
    customs: CustomsInput | None = None
    lines: tuple[tuple[str, int], ...] | None = None
    """(sku, quantity) this shipment carries; None: every SKU line of the order."""
    ship_date: date | None = None


# ---- building the carrier request ------------------------------------------------------------------


async def _shipment_lines(
    session: AsyncSession, order_id: uuid.UUID, wanted: tuple[tuple[str, int], ...] | None
) -> tuple[list[tuple[str, int, str, int, str]], str]:
    """[(sku, quantity, title, unit price, currency)] of the shipment, and the order's currency."""
    order = await orders.get_order(session, order_id)
    by_sku: dict[str, tuple[int, str, int, str]] = {}
    for line in await orders.current_lines(session, order_id):
        if line.sku and line.quantity > 0:
            qty = by_sku.get(line.sku, (0, "", 0, ""))[0] + line.quantity
            by_sku[line.sku] = (qty, line.title, line.unit_price_minor, line.currency)
    if wanted is None:
        return [(s, q, t, p, c) for s, (q, t, p, c) in sorted(by_sku.items())], order.currency
    out = []
    for sku, qty in wanted:
        if sku not in by_sku or qty > by_sku[sku][0]:
            raise BusinessRuleViolation(
                f"the order has no {qty} x {sku} to ship", code="LINE_NOT_IN_ORDER", details={"sku": sku}
            )
        if qty != by_sku[sku][0]:
            # Hand-over commits whole reservations; splitting one SKU's hold across shipments is not built.
            raise BusinessRuleViolation(
                f"a shipment carries all {by_sku[sku][0]} x {sku} of the order or none (partial quantities "
                "of one SKU are not supported yet)",
                code="PARTIAL_QUANTITY_NOT_SUPPORTED",
                details={"sku": sku, "ordered": by_sku[sku][0], "requested": qty},
            )
        out.append((sku, qty, *by_sku[sku][1:]))
    return out, order.currency


async def _declaration(
    session: AsyncSession, lines: list[tuple[str, int, str, int, str]], customs: CustomsInput | None
) -> CustomsDeclaration:
    """Per SKU: what the request gives, else what the SKU stores, else (value) the order line's price."""
    given = customs or CustomsInput()
    stored = {
        s.code: s
        for s in (await session.execute(select(Sku).where(Sku.code.in_([ln[0] for ln in lines])))).scalars()
    }
    out = []
    for sku, qty, title, price, currency in lines:
        item = given.items.get(sku, SkuCustoms())
        row = stored.get(sku)
        unit_value, value_currency = price, currency
        if item.unit_value_minor is not None:
            unit_value = item.unit_value_minor
        elif row is not None and row.customs_value_minor is not None:
            unit_value, value_currency = row.customs_value_minor, row.customs_currency or currency
        weight = item.weight_grams if item.weight_grams is not None else (row.weight_grams if row else None)
        out.append(
            CustomsLine(
                sku=sku,
                description=item.description or title,
                hs_code=item.hs_code or (row.hs_code if row else None),
                origin_country=item.origin_country or (row.country_of_origin if row else None),
                value_minor=unit_value * qty,
                currency=value_currency,
                weight_grams=weight * qty if weight is not None else None,
                quantity=qty,
            )
        )
    return CustomsDeclaration(
        lines=tuple(out),
        contents_type=ContentsType(given.contents_type) if given.contents_type else None,
        incoterm=Incoterm(given.incoterm) if given.incoterm else None,
        exporter_eori=given.exporter_eori,
        exporter_vat=given.exporter_vat,
        importer_eori=given.importer_eori,
        importer_vat=given.importer_vat,
        paperless_trade=given.paperless_trade,
    )


async def build_request(
    session: AsyncSession, order_id: uuid.UUID, data: ShipmentInput, *, service: str | None
) -> tuple[ShipmentRequest, list[tuple[str, int]]]:
    """The carrier request for an order; a cross-border one with missing customs data is a 422
    naming every SKU and field, before any carrier is called."""
    lines, _ = await _shipment_lines(session, order_id, data.lines)
    customs = None
    if data.ship_from.country_code.upper() != data.ship_to.country_code.upper():
        customs = await _declaration(session, lines, data.customs)
        missing = missing_customs_fields(data.ship_from.country_code, data.ship_to.country_code, customs)
        if missing:
            raise BusinessRuleViolation(
                "customs data missing: " + "; ".join(str(m) for m in missing),
                code="CUSTOMS_INCOMPLETE",
                details={
                    "missing": [{"sku": m.sku, "field": m.field, "problem": m.problem} for m in missing]
                },
            )
    request = ShipmentRequest(
        shipper=data.ship_from,
        recipient=data.ship_to,
        parcels=data.parcels,
        ship_date=data.ship_date or utcnow().date(),
        service=service,
        customs=customs,
    )
    return request, [(s, q) for s, q, *_ in lines]


# ---- rates ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountQuote:
    account_id: uuid.UUID
    carrier: str
    name: str
    available: bool
    rates: tuple[Rate, ...] = ()
    messages: tuple[CarrierMessage, ...] = ()
    reason: str | None = None
    """Why unavailable: breaker_open, timeout, server_error, connection_error, deadline."""
    details: dict[str, Any] = field(default_factory=dict)


async def prepare_quote(
    session: AsyncSession, order_id: uuid.UUID, data: ShipmentInput
) -> tuple[ShipmentRequest, list[CarrierAccount]]:
    """What `quote` needs from the database, read before the carrier calls (no transaction waits on them)."""
    request, _ = await build_request(session, order_id, data, service=None)
    return request, await list_accounts(session, active_only=True)


async def quote(
    carriers: Carriers, request: ShipmentRequest, accounts: Sequence[CarrierAccount], *, deadline: float
) -> list[AccountQuote]:
    """Quotes from every account at once; one that cannot answer within `deadline` seconds
    (breaker open, timeout, 5xx) is listed as unavailable instead of failing the request."""

    async def one(account: CarrierAccount) -> AccountQuote:
        base: dict[str, Any] = {"account_id": account.id, "carrier": account.carrier, "name": account.name}
        try:
            result = await asyncio.wait_for(carriers.adapter(account).rate(request), deadline)
        except CarrierUnavailable as exc:
            return AccountQuote(**base, available=False, reason=exc.reason, details=exc.details)
        except TimeoutError:
            return AccountQuote(
                **base, available=False, reason="deadline", details={"deadline_seconds": deadline}
            )
        return AccountQuote(**base, available=True, rates=result.rates, messages=result.messages)

    return list(await asyncio.gather(*(one(a) for a in accounts)))


# ---- state machine -------------------------------------------------------------------------------


async def _event(
    session: AsyncSession, shipment_id: uuid.UUID, kind: str, frm: str | None, to: str | None, **detail: Any
) -> None:
    session.add(
        ShipmentEvent(shipment_id=shipment_id, kind=kind, from_status=frm, to_status=to, detail=detail)
    )
    await session.flush()


async def transition(
    session: AsyncSession, shipment_id: uuid.UUID, to: str, *, kind: str | None = None, **values: Any
) -> Shipment | None:
    """Move the shipment to `to` if it is in a state that may; None if it is not (someone else moved
    it first, or the move is illegal: `require_transition` says which)."""
    sources = TRANSITIONS[to]
    moved = (
        await session.execute(
            update(Shipment)
            .where(Shipment.id == shipment_id, Shipment.status.in_(sources))
            .values(status=to, updated_at=utcnow(), **values)
            .returning(Shipment.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if moved is None:
        return None
    shipment = await get_shipment(session, shipment_id, refresh=True)
    detail = {k: v for k, v in values.items() if k in ("carrier_shipment_id", "tracking_numbers")}
    frm = sources[0] if len(sources) == 1 else None
    await _event(session, shipment_id, kind or to, frm, to, **detail)
    return shipment


async def require_transition(
    session: AsyncSession, shipment_id: uuid.UUID, to: str, *, kind: str | None = None, **values: Any
) -> Shipment:
    moved = await transition(session, shipment_id, to, kind=kind, **values)
    if moved is not None:
        return moved
    current = await get_shipment(session, shipment_id, refresh=True)
    raise InvalidTransition(
        f"a shipment cannot go from {current.status} to {to}",
        details={"shipment_id": str(shipment_id), "from": current.status, "to": to},
    )


# ---- purchase saga -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Purchase:
    shipment_id: uuid.UUID
    account: CarrierAccount
    request: LabelRequest


async def by_idempotency_key(session: AsyncSession, key: str) -> Shipment | None:
    found = await session.execute(select(Shipment).where(Shipment.idempotency_key == key))
    return found.scalar_one_or_none()


async def start_purchase(
    session: AsyncSession,
    order_id: uuid.UUID,
    account_id: uuid.UUID,
    service: str,
    data: ShipmentInput,
    *,
    label_format: LabelFormat = LabelFormat.PDF,
    idempotency_key: str | None = None,
) -> Purchase:
    """Step 1: the `pending` row (commit it before calling `buy`)."""
    account = await get_account(session, account_id)
    if account.status != "active":
        raise BusinessRuleViolation("this carrier account is disabled", code="CARRIER_ACCOUNT_DISABLED")
    if (await orders.get_order(session, order_id)).status == "cancelled":
        raise BusinessRuleViolation(
            "the order is cancelled: no label is bought for it",
            code="ORDER_CANCELLED",
            details={"order_id": str(order_id)},
        )
    base, lines = await build_request(session, order_id, data, service=service)
    shipment = Shipment(
        id=uuid.uuid4(),
        order_id=order_id,
        carrier_account_id=account.id,
        carrier=account.carrier,
        service=service,
        ship_date=base.ship_date,
        request={"label_format": label_format.value, "ship_from": asdict(data.ship_from)},
        lines=[{"sku": s, "quantity": q} for s, q in lines],
        idempotency_key=idempotency_key,
    )
    await add_unique(
        session,
        shipment,
        Conflict("a purchase with this Idempotency-Key is in progress", code="IDEMPOTENCY_IN_PROGRESS"),
    )
    await _event(session, shipment.id, "created", None, "pending", account=account.name, service=service)
    request = LabelRequest(
        shipper=base.shipper,
        recipient=base.recipient,
        parcels=base.parcels,
        ship_date=base.ship_date,
        service=service,
        customs=base.customs,
        reference=str(shipment.id),
        label_format=label_format,
    )
    return Purchase(shipment.id, account, request)


async def buy(carriers: Carriers, purchase: Purchase) -> LabelResult | CarrierUnavailable:
    """Step 2: the carrier call (no transaction open). Transport failures come back as the error."""
    try:
        return await carriers.adapter(purchase.account).buy_label(purchase.request)
    except CarrierUnavailable as exc:
        return exc


def _messages(messages: Sequence[CarrierMessage]) -> list[dict[str, str]]:
    return [{"code": m.code, "text": m.text, "severity": m.severity} for m in messages]


async def record_label(
    session: AsyncSession, shipment_id: uuid.UUID, label: Label, **detail: Any
) -> Shipment | None:
    return await transition(
        session,
        shipment_id,
        "label_purchased",
        carrier_shipment_id=label.carrier_shipment_id,
        tracking_numbers=list(label.tracking_numbers),
        label_document=label.document,
        label_format=label.format.value,
        cost_minor=label.cost_minor,
        currency=label.currency,
    )


async def finish_purchase(
    session: AsyncSession, shipment_id: uuid.UUID, outcome: LabelResult | CarrierUnavailable
) -> Shipment:
    """Step 3: record the carrier's answer. A refusal or a call that never left fails the shipment;
    a call that may have reached the carrier stays `pending` for the recovery job."""
    if isinstance(outcome, CarrierUnavailable):
        if not outcome.maybe_processed:
            await transition(session, shipment_id, "failed", kind="carrier_unavailable")
        else:
            await _event(session, shipment_id, "carrier_no_answer", None, None, reason=outcome.reason)
        return await get_shipment(session, shipment_id, refresh=True)
    if outcome.label is None:
        await transition(session, shipment_id, "failed", kind="carrier_refused")
        await _event(
            session, shipment_id, "carrier_messages", None, None, messages=_messages(outcome.messages)
        )
        return await get_shipment(session, shipment_id, refresh=True)
    shipment = await record_label(session, shipment_id, outcome.label)
    if outcome.messages:
        await _event(
            session, shipment_id, "carrier_messages", None, None, messages=_messages(outcome.messages)
        )
    return shipment or await get_shipment(session, shipment_id, refresh=True)


# ---- reading -------------------------------------------------------------------------------------


async def get_shipment(session: AsyncSession, shipment_id: uuid.UUID, *, refresh: bool = False) -> Shipment:
    if refresh:
        found = (
            await session.execute(
                select(Shipment).where(Shipment.id == shipment_id).execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return await get_or_404(session, Shipment, shipment_id, "shipment")


async def list_shipments(
    session: AsyncSession, *, order_id: uuid.UUID | None, status: str | None, limit: int, offset: int
) -> list[Shipment]:
    query = select(Shipment).order_by(Shipment.created_at.desc(), Shipment.id)
    if order_id is not None:
        query = query.where(Shipment.order_id == order_id)
    if status is not None:
        query = query.where(Shipment.status == status)
    return list((await session.execute(query.limit(limit).offset(offset))).scalars())


async def timeline(session: AsyncSession, shipment_id: uuid.UUID) -> list[ShipmentEvent]:
    rows = await session.execute(
        select(ShipmentEvent).where(ShipmentEvent.shipment_id == shipment_id).order_by(ShipmentEvent.id)
    )
    return list(rows.scalars())


def label_of(shipment: Shipment) -> Label:
    return Label(
        carrier_shipment_id=shipment.carrier_shipment_id or "",
        tracking_numbers=tuple(shipment.tracking_numbers or ()),
        document=shipment.label_document or b"",
        format=LabelFormat(shipment.label_format or "pdf"),
        cost_minor=shipment.cost_minor,
        currency=shipment.currency,
        reference=str(shipment.id),
    )


# ---- void ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoidAsk:
    shipment_id: uuid.UUID
    account: CarrierAccount
    label: Label


async def prepare_void(session: AsyncSession, shipment_id: uuid.UUID) -> VoidAsk:
    """Only a purchased label can be voided, and only through the account that bought it."""
    shipment = await get_shipment(session, shipment_id)
    if shipment.status != "label_purchased":
        raise InvalidTransition(
            f"a shipment cannot go from {shipment.status} to voided",
            details={"shipment_id": str(shipment_id), "from": shipment.status, "to": "voided"},
        )
    account = await get_account(session, shipment.carrier_account_id)
    return VoidAsk(shipment.id, account, label_of(shipment))


@dataclass(frozen=True, slots=True)
class VoidOutcome:
    voided: bool
    supported: bool = True
    messages: tuple[CarrierMessage, ...] = ()
    why: str = ""


async def ask_void(carriers: Carriers, ask: VoidAsk) -> VoidOutcome:
    """The carrier's answer (no transaction open). CarrierUnavailable propagates: nothing changes."""
    try:
        result = await carriers.adapter(ask.account).void_label(ask.label)
    except OperationNotSupported as exc:
        return VoidOutcome(voided=False, supported=False, why=exc.why)
    return VoidOutcome(voided=result.voided, messages=result.messages)


class VoidRefused(BusinessRuleViolation):
    code = "VOID_REFUSED"


async def record_void(session: AsyncSession, shipment_id: uuid.UUID, outcome: VoidOutcome) -> Shipment:
    """voided only on the carrier's confirmation; a carrier without void marks `void_requested` (the
    merchant asked, the carrier never confirmed); a refusal changes no state (see `refusal`)."""
    if outcome.voided:
        return await require_transition(session, shipment_id, "voided", kind="voided_by_carrier")
    if not outcome.supported:
        shipment = await require_transition(session, shipment_id, "void_requested")
        await _event(session, shipment_id, "carrier_cannot_void", None, None, why=outcome.why)
        return shipment
    await _event(session, shipment_id, "void_refused", None, None, messages=_messages(outcome.messages))
    return await get_shipment(session, shipment_id, refresh=True)


def refusal(shipment_id: uuid.UUID, outcome: VoidOutcome) -> VoidRefused | None:
    """The error to answer when the carrier refused (the refusal is on the timeline, the state kept)."""
    if outcome.voided or not outcome.supported:
        return None
    text = "; ".join(f"{m.code}: {m.text}" for m in outcome.messages) or "the carrier did not confirm"
    return VoidRefused(
        f"the carrier refused to void this label ({text})",
        details={"shipment_id": str(shipment_id), "carrier_messages": _messages(outcome.messages)},
    )


# ---- hand-over -----------------------------------------------------------------------------------


async def ship(session: AsyncSession, shipment_id: uuid.UUID) -> Shipment:
    """label_purchased -> in_transit, and exactly the units this shipment carries are committed from
    the order's reservations (a reservation holding more is split; units the order no longer holds
    come from free stock), in the same transaction: only the caller whose conditional UPDATE moved
    the row commits, so two concurrent hand-overs commit once. The API and carrier callbacks both come here.
    The same transaction writes the push that tells the order's channel (`fulfillment`): enqueue its
    job after the commit (`fulfillment.push_of_shipment` + `try_enqueue`; the sweeper catches what is not).

    The order is share-locked first (cancelling takes it FOR UPDATE, then the shipments): a hand-over
    and a cancel of the same order serialize, so a cancelled order never ships (its reservations are
    released) and an order with a shipment in transit is never cancelled."""
    await lock_order_for_handover(session, shipment_id)
    shipment = await require_transition(session, shipment_id, "in_transit", kind="handed_over")
    carried: dict[str, int] = {}
    for line in shipment.lines:
        carried[line["sku"]] = carried.get(line["sku"], 0) + int(line["quantity"])
    # The levels each SKU is (or was) reserved on for this order, most recent first: the order's
    # lines may have changed since the label was bought, so exactly what the parcel carries leaves.
    levels: dict[str, list[uuid.UUID]] = {sku: [] for sku in carried}
    for code, level_id in (
        await session.execute(
            select(Sku.code, Reservation.level_id)
            .join(InventoryLevel, InventoryLevel.id == Reservation.level_id)
            .join(Sku, Sku.id == InventoryLevel.sku_id)
            .where(
                Reservation.reference_type == RESERVATION_REF,
                Reservation.reference_id == str(shipment.order_id),
                Sku.code.in_(list(carried)),
            )
            .order_by(Reservation.created_at.desc(), Reservation.id)
        )
    ).all():
        if level_id not in levels[code]:
            levels[code].append(level_id)
    committed = await reservations.commit_units(
        session,
        RESERVATION_REF,
        str(shipment.order_id),
        [(sku, levels[sku], qty) for sku, qty in sorted(carried.items())],
        reference=("shipment", str(shipment_id)),
    )
    await _event(
        session, shipment_id, "stock_committed", None, None, reservations=[str(r) for r in committed]
    )
    await fulfillment.record_push(session, shipment)
    return shipment


async def lock_order_for_handover(
    session: AsyncSession, shipment_id: uuid.UUID, *, refuse_cancelled: bool = True
) -> str:
    """Share-lock the shipment's order (the lock order every hand-over and cancel takes: order first,
    then shipment); a cancelled order is a 409 ORDER_CANCELLED unless told otherwise. Returns the
    order's status."""
    shipment = await get_shipment(session, shipment_id)
    status = (
        await session.execute(
            select(Order.status).where(Order.id == shipment.order_id).with_for_update(read=True)
        )
    ).scalar_one()
    if status == "cancelled" and refuse_cancelled:
        raise Conflict(
            "the order of this shipment is cancelled: it cannot be handed over",
            code="ORDER_CANCELLED",
            details={"shipment_id": str(shipment_id), "order_id": str(shipment.order_id)},
        )
    return str(status)


async def note(session: AsyncSession, shipment_id: uuid.UUID, kind: str, **detail: Any) -> None:
    """A timeline entry that changes no state (a carrier event, a void requested or dead-lettered)."""
    await _event(session, shipment_id, kind, None, None, **detail)
