"""Orders: turning channel payloads (and manual requests) into canonical orders with reserved stock.

Each call runs in the caller's one transaction. Processing of one channel order is serialized by a
transaction-scoped advisory lock on (channel, external id), and the UNIQUE (org, channel, external
id) constraint makes a second create a no-op whatever happens, so deliveries that repeat, race or
arrive out of order produce exactly one order with exactly one set of reservations.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels.models import Channel, WebhookEvent
from rappit.channels.service import get_channel
from rappit.integrations.channels.canonical import CanonicalLine, CanonicalOrder
from rappit.integrations.channels.registry import ORDER_SOURCES
from rappit.inventory import catalogue, queries, reservations
from rappit.inventory.models import Warehouse
from rappit.orders.models import Order, OrderEvent, OrderLine
from rappit.platform.db import utcnow
from rappit.platform.errors import BusinessRuleViolation, NotFound
from rappit.tenancy import service as tenancy
from rappit.tenancy.context import require_org_id

RESERVATION_REF = "order"


def format_number(org_code: str, source: str, value: int) -> str:
    """The one definition of an order number: ORGCODE-S-000001 (S Shopify, W WooCommerce, M manual)."""
    return f"{org_code}-{ORDER_SOURCES[source]}-{value:06d}"


async def next_number(session: AsyncSession, org_code: str, source: str) -> str:
    """Atomic per-org, per-source counter; its row lock is held to the end of the order's transaction."""
    value = (
        await session.execute(
            text(
                """INSERT INTO order_counters (id, org_id, source, last_value)
                   VALUES (gen_random_uuid(), :org, :s, 1)
                   ON CONFLICT (org_id, source) DO UPDATE SET last_value = order_counters.last_value + 1
                   RETURNING last_value"""
            ),
            {"org": require_org_id(), "s": ORDER_SOURCES[source]},
        )
    ).scalar_one()
    return format_number(org_code, source, value)


@dataclass(frozen=True, slots=True)
class ChannelRef:
    id: uuid.UUID | None
    source: str  # shopify | woocommerce | manual
    org_code: str
    warehouse_id: uuid.UUID | None


async def channel_ref(session: AsyncSession, channel: Channel) -> ChannelRef:
    """What order creation needs to know about a channel (the org code prefixes order numbers)."""
    return ChannelRef(
        id=channel.id,
        source=channel.type,
        org_code=await tenancy.org_code(session, channel.org_id),
        warehouse_id=channel.warehouse_id,
    )


async def ref_of(session: AsyncSession, order: Order) -> ChannelRef:
    """The channel reference of an existing order (manual orders have none)."""
    if order.channel_id:
        return await channel_ref(session, await get_channel(session, order.channel_id))
    return ChannelRef(
        id=None,
        source=order.source,
        org_code=await tenancy.org_code(session, order.org_id),
        warehouse_id=None,
    )


def _desired(lines: list[CanonicalLine]) -> dict[str, int]:
    """Units to reserve per SKU: repeated SKUs add up; lines without a SKU reserve nothing."""
    wanted: dict[str, int] = defaultdict(int)
    for line in lines:
        if line.sku and line.quantity > 0:
            wanted[line.sku] += line.quantity
    return dict(wanted)


async def _event(
    session: AsyncSession, order: Order, kind: str, detail: dict[str, Any], webhook_event_id: uuid.UUID | None
) -> None:
    session.add(OrderEvent(order_id=order.id, kind=kind, detail=detail, webhook_event_id=webhook_event_id))


def add_event(session: AsyncSession, order_id: uuid.UUID, kind: str, **detail: Any) -> None:
    """A line on the order's timeline written by another domain (shipping's pushes to the channel)."""
    session.add(OrderEvent(order_id=order_id, kind=kind, detail=detail))


async def _warehouse(session: AsyncSession, channel: ChannelRef) -> Warehouse | None:
    """Where the channel's orders reserve: its pinned warehouse. A channel made before the org had any
    is pinned here, once, to the first warehouse by code (under the channel's row lock, so concurrent
    orders agree), and never moves when a warehouse that sorts first is added later. Manual orders
    reserve from the first warehouse by code."""
    warehouse_id = channel.warehouse_id
    if warehouse_id is None:
        first = (await session.execute(select(Warehouse.id).order_by(Warehouse.code).limit(1))).scalar()
        if first is None:
            return None
        if channel.id is None:
            warehouse_id = first
        else:
            pinned = (
                update(Channel)
                .where(Channel.id == channel.id)
                .values(warehouse_id=func.coalesce(Channel.warehouse_id, first))
            )
            warehouse_id = (await session.execute(pinned.returning(Channel.warehouse_id))).scalar_one()
    return (await session.execute(select(Warehouse).where(Warehouse.id == warehouse_id))).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What reserving needs, looked up before any lock is taken (plain reads)."""

    warehouse: Warehouse | None
    skus: dict[str, uuid.UUID]


async def _plan(session: AsyncSession, channel: ChannelRef, wanted: dict[str, int]) -> _Plan:
    if not wanted:
        return _Plan(None, {})
    return _Plan(await _warehouse(session, channel), await catalogue.sku_ids(session, list(wanted)))


async def _try_reserve(
    session: AsyncSession,
    order: Order,
    channel: ChannelRef,
    wanted: dict[str, int],
    plan: _Plan | None = None,
) -> tuple[bool, str, dict[str, Any]]:
    """Reserve `wanted` for the order, all or nothing (in a savepoint). On failure the order goes
    on hold with the reason; the customer has paid, so the order itself is never dropped.
    Returns (reserved, timeline event kind, detail) for the caller to record."""
    if not wanted:
        return True, "reserved", {"skus": {}}
    plan = plan or await _plan(session, channel, wanted)
    reason: dict[str, Any]
    unknown = sorted(set(wanted) - plan.skus.keys())
    if plan.warehouse is None:
        reason = {"code": "NO_WAREHOUSE", "message": "the organization has no warehouse to reserve from"}
    elif unknown:
        reason = {"code": "UNKNOWN_CODES", "message": "unknown SKU codes", "skus": unknown, "warehouses": []}
    else:
        wh = plan.warehouse
        try:
            async with session.begin_nested():
                await reservations.reserve(
                    session,
                    [
                        reservations.ReserveLine(plan.skus[sku], wh.id, qty)
                        for sku, qty in sorted(wanted.items())
                    ],
                    reference_type=RESERVATION_REF,
                    reference_id=str(order.id),
                    labels={(plan.skus[sku], wh.id): (sku, wh.code) for sku in wanted},
                )
            return True, "reserved", {"warehouse": wh.code, "skus": wanted}
        except BusinessRuleViolation as exc:
            reason = {"code": exc.code, "message": exc.message, **exc.details}
    order.status = "on_hold"
    order.hold_reason = reason
    return False, "on_hold", reason


async def _still_to_reserve(session: AsyncSession, order: Order, wanted: dict[str, int]) -> dict[str, int]:
    """Units per SKU the order must hold as active reservations: its lines' units less those a
    shipment already committed (stock that left with a label is not reserved again by a later update)."""
    shipped = await reservations.committed_for_reference(session, RESERVATION_REF, str(order.id))
    return {sku: qty - shipped.get(sku, 0) for sku, qty in wanted.items() if qty > shipped.get(sku, 0)}


async def _reserve_or_hold(
    session: AsyncSession,
    order: Order,
    channel: ChannelRef,
    wanted: dict[str, int],
    webhook_event_id: uuid.UUID | None,
) -> bool:
    ok, kind, detail = await _try_reserve(session, order, channel, wanted)
    if wanted:
        await _event(session, order, kind, detail, webhook_event_id)
    return ok


async def _write_lines(
    session: AsyncSession,
    order: Order,
    lines: list[CanonicalLine],
    currency: str,
    *,
    version: int | None = None,
) -> int:
    if version is None:
        version = (
            await session.execute(
                select(func.coalesce(func.max(OrderLine.version), 0)).where(OrderLine.order_id == order.id)
            )
        ).scalar_one() + 1
    for position, line in enumerate(lines, start=1):
        session.add(
            OrderLine(
                order_id=order.id,
                version=version,
                position=position,
                external_line_id=line.external_line_id,
                sku=line.sku,
                title=line.title,
                quantity=line.quantity,
                unit_price_minor=line.unit_price_minor,
                currency=currency,
            )
        )
    return version


def _same_lines(stored: list[OrderLine], lines: list[CanonicalLine]) -> bool:
    def key(ext: str | None, sku: str | None, qty: int, price: int) -> tuple[str, str, int, int]:
        return (ext or "", sku or "", qty, price)

    return sorted(key(x.external_line_id, x.sku, x.quantity, x.unit_price_minor) for x in stored) == sorted(
        key(x.external_line_id, x.sku, x.quantity, x.unit_price_minor) for x in lines
    )


async def _earlier_deletion(
    session: AsyncSession, channel: ChannelRef, external_id: str, webhook_event_id: uuid.UUID | None
) -> uuid.UUID | None:
    """An event of this channel that deleted this order before Rappit had it (stored `ignored`)."""
    query = select(WebhookEvent.id).where(
        WebhookEvent.channel_id == channel.id,
        WebhookEvent.external_id == external_id,
        WebhookEvent.status == "ignored",
    )
    if webhook_event_id is not None:
        query = query.where(WebhookEvent.id != webhook_event_id)
    found: uuid.UUID | None = (await session.execute(query.limit(1))).scalar_one_or_none()
    return found


async def apply_channel_order(
    session: AsyncSession,
    channel: ChannelRef,
    payload: CanonicalOrder,
    *,
    webhook_event_id: uuid.UUID | None = None,
) -> tuple[Order | None, str]:
    """Create or update the order a channel payload describes. Returns (order, what happened)."""
    org_id = require_org_id()
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"order:{org_id}:{channel.id}:{payload.external_id}"},
    )
    order = (
        await session.execute(
            select(Order).where(Order.channel_id == channel.id, Order.external_id == payload.external_id)
        )
    ).scalar_one_or_none()
    if order is None:
        if payload.cancelled and not payload.lines:
            # A deletion/cancel of an order Rappit never saw carries no lines: nothing to create or
            # release. Its event keeps the order id (jobs.apply_event), in case the create is late.
            return None, "ignored"
        deleted_by = await _earlier_deletion(session, channel, payload.external_id, webhook_event_id)
        if deleted_by is not None and not payload.cancelled:
            # The create arrives after the order's deletion was processed (its job was killed and
            # re-run later, or it was delivered late): the order exists only as cancelled.
            order = await _create(session, channel, replace(payload, cancelled=True), webhook_event_id)
            await _event(session, order, "cancelled_before_seen", {"deleted_by_event": str(deleted_by)},
                         webhook_event_id)  # fmt: skip
            return order, "cancelled"
        return await _create(session, channel, payload, webhook_event_id), "created"
    if order.status == "cancelled":
        await _event(
            session,
            order,
            "ignored_after_cancel",
            {"external_updated_at": str(payload.updated_at)},
            webhook_event_id,
        )
        return order, "ignored"
    if (
        payload.updated_at is not None
        and order.external_updated_at is not None
        and payload.updated_at <= order.external_updated_at
    ):
        await _event(
            session,
            order,
            "ignored_stale",
            {
                "payload_updated_at": payload.updated_at.isoformat(),
                "order_updated_at": order.external_updated_at.isoformat(),
            },
            webhook_event_id,
        )
        return order, "ignored"
    if payload.cancelled:
        if payload.lines and not _same_lines(await current_lines(session, order.id), payload.lines):
            # A cancel carrying the whole order (Shopify orders/cancelled, a WooCommerce status) is the
            # order's last word: an update that was still on its way (a killed job waits for arq's
            # in-progress key) is ignored after the cancel, so the snapshot is taken from the cancel.
            await _write_lines(session, order, payload.lines, payload.currency)
        await cancel(
            session, order, webhook_event_id=webhook_event_id, external_updated_at=payload.updated_at
        )
        return order, "cancelled"
    await _update(session, channel, order, payload, webhook_event_id)
    return order, "updated"


async def _create(
    session: AsyncSession, channel: ChannelRef, payload: CanonicalOrder, webhook_event_id: uuid.UUID | None
) -> Order:
    order = Order(
        id=uuid.uuid4(),
        source=channel.source,
        channel_id=channel.id,
        external_id=payload.external_id or None,
        external_name=payload.name or None,
        status="cancelled" if payload.cancelled else "open",
        currency=payload.currency,
        external_updated_at=payload.updated_at,
        cancelled_at=utcnow() if payload.cancelled else None,
    )
    wanted = {} if payload.cancelled else _desired(payload.lines)
    plan = await _plan(session, channel, wanted)  # reads first, outside the counter's lock
    # The number next: the per-org counter's row lock then orders every creation of this org the
    # same way (counter, then stock rows). Taking it after the reservation was tried and deadlocked
    # under concurrent creations (bench/webhooks.py showed it), so creations of one org and source
    # are serialized from here to commit (kept short); other orgs are unaffected.
    order.number = await next_number(session, channel.org_code, channel.source)
    outcome = None
    if wanted:
        outcome = await _try_reserve(
            session, order, channel, wanted, plan
        )  # reservations name the order's id
    session.add(order)
    await session.flush()
    await _write_lines(session, order, payload.lines, payload.currency, version=1)
    await _event(
        session, order, "created", {"number": order.number, "external_name": payload.name}, webhook_event_id
    )
    if outcome is not None:
        await _event(session, order, outcome[1], outcome[2], webhook_event_id)
    return order


async def _update(
    session: AsyncSession,
    channel: ChannelRef,
    order: Order,
    payload: CanonicalOrder,
    webhook_event_id: uuid.UUID | None,
) -> None:
    version = await _write_lines(session, order, payload.lines, payload.currency)
    order.external_updated_at = payload.updated_at or order.external_updated_at
    order.external_name = payload.name
    order.updated_at = utcnow()
    wanted = await _still_to_reserve(session, order, _desired(payload.lines))
    current = await reservations.reserved_for_reference(session, RESERVATION_REF, str(order.id))
    changes = {
        sku: wanted.get(sku, 0) - current.get(sku, (None, 0))[1]
        for sku in set(wanted) | set(current)
        if wanted.get(sku, 0) != current.get(sku, (None, 0))[1]
    }
    await _event(session, order, "updated", {"version": version, "changes": changes}, webhook_event_id)
    if order.status == "on_hold":
        # Nothing partial to keep: try the whole order again.
        await reservations.release_reference(session, RESERVATION_REF, str(order.id))
        if await _reserve_or_hold(session, order, channel, wanted, webhook_event_id):
            order.status, order.hold_reason = "open", None
        return
    if not changes:
        return
    try:
        async with session.begin_nested():
            # Decreases and removals: release that SKU's hold and reserve the new, smaller quantity;
            # increases: reserve the difference. The row locks taken here stay until commit.
            down = [current[sku][0] for sku, delta in changes.items() if delta < 0]
            if down:
                await reservations.release_reference(session, RESERVATION_REF, str(order.id), level_ids=down)
            again = {sku: (wanted.get(sku, 0) if delta < 0 else delta) for sku, delta in changes.items()}
            again = {sku: qty for sku, qty in again.items() if qty > 0}
            if again:
                warehouse = await _warehouse(session, channel)
                if warehouse is None:
                    raise BusinessRuleViolation(
                        "the organization has no warehouse to reserve from", code="NO_WAREHOUSE"
                    )
                await reservations.reserve_by_codes(
                    session,
                    [(sku, warehouse.code, qty) for sku, qty in sorted(again.items())],
                    reference_type=RESERVATION_REF,
                    reference_id=str(order.id),
                )
        await _event(session, order, "reservations_adjusted", {"changes": changes}, webhook_event_id)
    except BusinessRuleViolation as exc:
        # All or nothing, as at creation: an order on hold holds no stock (its units go back to
        # other orders until someone retries it), so the rest of its reservations are released too.
        released = await reservations.release_reference(session, RESERVATION_REF, str(order.id))
        order.status = "on_hold"
        order.hold_reason = {"code": exc.code, "message": exc.message, **exc.details}
        await _event(
            session, order, "on_hold", {**order.hold_reason, "released": len(released)}, webhook_event_id
        )


async def cancel(
    session: AsyncSession,
    order: Order,
    *,
    webhook_event_id: uuid.UUID | None = None,
    external_updated_at: datetime | None = None,
) -> Order:
    """Release every active reservation and mark the order cancelled (cancelling twice changes nothing)."""
    if order.status == "cancelled":
        return order
    released = await reservations.release_reference(session, RESERVATION_REF, str(order.id))
    order.status = "cancelled"
    order.hold_reason = None
    order.cancelled_at = utcnow()
    order.updated_at = utcnow()
    if external_updated_at:
        order.external_updated_at = external_updated_at
    await _event(session, order, "cancelled", {"released_reservations": len(released)}, webhook_event_id)
    return order


async def retry_hold(session: AsyncSession, order_id: uuid.UUID, channel: ChannelRef) -> Order:
    order = await get_order(session, order_id, for_update=True)
    if order.status != "on_hold":
        raise BusinessRuleViolation(
            f"order {order.number} is {order.status}, not on hold", code="NOT_ON_HOLD"
        )
    lines = await current_lines(session, order.id)
    await reservations.release_reference(session, RESERVATION_REF, str(order.id))
    wanted = _desired(
        [
            CanonicalLine(ln.external_line_id, ln.sku, ln.title, ln.quantity, ln.unit_price_minor)
            for ln in lines
        ]
    )
    wanted = await _still_to_reserve(session, order, wanted)
    if await _reserve_or_hold(session, order, channel, wanted, None):
        order.status, order.hold_reason = "open", None
    return order


async def create_manual(
    session: AsyncSession, *, org_code: str, currency: str, lines: list[CanonicalLine], reference: str | None
) -> Order:
    channel = ChannelRef(id=None, source="manual", org_code=org_code, warehouse_id=None)
    payload = CanonicalOrder(
        external_id=reference or "",
        name=reference or "",
        currency=currency,
        updated_at=None,
        cancelled=False,
        lines=lines,
    )
    return await _create(session, channel, payload, None)


async def get_order(session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False) -> Order:
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    order = (await session.execute(query)).scalar_one_or_none()
    if order is None:
        raise NotFound("no such order", details={"order_id": str(order_id)})
    return order


async def current_lines(session: AsyncSession, order_id: uuid.UUID) -> list[OrderLine]:
    latest = select(func.max(OrderLine.version)).where(OrderLine.order_id == order_id).scalar_subquery()
    rows = await session.execute(
        select(OrderLine)
        .where(OrderLine.order_id == order_id, OrderLine.version == latest)
        .order_by(OrderLine.position)
    )
    return list(rows.scalars())


async def timeline(session: AsyncSession, order_id: uuid.UUID) -> list[OrderEvent]:
    rows = await session.execute(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
    )
    return list(rows.scalars())


@dataclass(frozen=True, slots=True)
class ReservedLine:
    id: uuid.UUID
    sku: str
    warehouse_code: str
    quantity: int
    status: str


@dataclass(frozen=True, slots=True)
class OrderDetail:
    """One order as the API and the dashboard show it: current lines, reservations, timeline."""

    order: Order
    lines: list[OrderLine]
    reservations: list[ReservedLine]
    timeline: list[OrderEvent]


async def order_detail(session: AsyncSession, order: Order) -> OrderDetail:
    held = await queries.reservations_view(session, reference=(RESERVATION_REF, str(order.id)))
    return OrderDetail(
        order=order,
        lines=await current_lines(session, order.id),
        reservations=[ReservedLine(r.id, sku, wh, r.quantity, r.status) for r, sku, wh in held],
        timeline=await timeline(session, order.id),
    )


async def list_orders(
    session: AsyncSession,
    *,
    status: str | None,
    channel_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    limit: int,
    offset: int | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[Order], int | None]:
    """Newest first, by (created_at, id) descending: an index range scan from `after` (the last row of
    the previous page) whatever the number of orders. With `offset` (older clients) the total is
    counted too, a cost that grows with the history."""
    query = select(Order)
    if status:
        query = query.where(Order.status == status)
    if channel_id:
        query = query.where(Order.channel_id == channel_id)
    if created_from:
        query = query.where(Order.created_at >= created_from)
    if created_to:
        query = query.where(Order.created_at < created_to)
    total = None
    if offset is not None:
        total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    if after is not None:
        query = query.where(tuple_(Order.created_at, Order.id) < tuple_(*after))
    query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    rows = await session.execute(query.offset(offset) if offset else query)
    return list(rows.scalars()), total


@dataclass(frozen=True, slots=True)
class OrderStats:
    today: int
    on_hold: int
    per_hour: list[tuple[datetime, int]]
    """The last 24 hours, oldest first, one entry per hour (zero-filled)."""


async def order_stats(session: AsyncSession, *, now: datetime | None = None) -> OrderStats:
    """Orders since midnight (UTC), on hold now, and per hour over the last 24 hours."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    top = now.replace(minute=0, second=0, microsecond=0)
    first = top - timedelta(hours=23)
    today = (
        await session.execute(select(func.count()).select_from(Order).where(Order.created_at >= midnight))
    ).scalar_one()
    on_hold = (
        await session.execute(select(func.count()).select_from(Order).where(Order.status == "on_hold"))
    ).scalar_one()
    hour = func.date_trunc("hour", Order.created_at, "UTC")
    rows = await session.execute(select(hour, func.count()).where(Order.created_at >= first).group_by(hour))
    counts = {h.replace(tzinfo=UTC): n for h, n in rows.all()}
    per_hour = [(first + timedelta(hours=i), counts.get(first + timedelta(hours=i), 0)) for i in range(24)]
    return OrderStats(today=today, on_hold=on_hold, per_hour=per_hour)
