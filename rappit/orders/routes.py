"""Orders API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.integrations.channels.canonical import CanonicalLine
from rappit.orders import service
from rappit.orders.models import Order
from rappit.orders.schemas import (
    ManualOrderIn,
    OrderDetailOut,
    OrderEventOut,
    OrderLineOut,
    OrderOut,
    OrderPage,
    ReservationRef,
)
from rappit.platform.http import (
    Cursor,
    DbSession,
    Id,
    Limit,
    OptionalOffset,
    decode_cursor,
    encode_cursor,
    paging,
)
from rappit.tenancy.auth import Principal, requires
from rappit.tenancy.idempotency import idempotent


def order_out(o: Order) -> OrderOut:
    return OrderOut(
        id=o.id,
        number=o.number,
        source=o.source,
        channel_id=o.channel_id,
        external_id=o.external_id,
        external_name=o.external_name,
        status=o.status,
        hold_reason=o.hold_reason,
        currency=o.currency,
        created_at=o.created_at,
        updated_at=o.updated_at,
        cancelled_at=o.cancelled_at,
    )


async def detail(session: AsyncSession, order: Order) -> OrderDetailOut:
    view = await service.order_detail(session, order)
    return OrderDetailOut(
        order=order_out(view.order),
        lines=[
            OrderLineOut(
                position=ln.position,
                sku=ln.sku,
                title=ln.title,
                quantity=ln.quantity,
                unit_price_minor=ln.unit_price_minor,
                currency=ln.currency,
                external_line_id=ln.external_line_id,
            )
            for ln in view.lines
        ],
        reservations=[
            ReservationRef(
                id=r.id, sku=r.sku, warehouse_code=r.warehouse_code, quantity=r.quantity, status=r.status
            )
            for r in view.reservations
        ],
        timeline=[
            OrderEventOut(
                kind=e.kind, detail=e.detail, created_at=e.created_at, webhook_event_id=e.webhook_event_id
            )
            for e in view.timeline
        ],
    )


class OrderController(Controller):
    """`POST /api/v1/orders/{id}/cancel` lives in `rappit.shipping.routes`: cancelling voids the order's
    labels and refuses an order in transit, which orders cannot know about (shipping imports orders)."""

    path = "/api/v1/orders"
    tags = ["orders"]

    @get("/", guards=[requires("orders:read")])
    async def list_orders(
        self,
        db_session: DbSession,
        status: Annotated[Literal["open", "on_hold", "cancelled"] | None, QueryParameter()] = None,
        channel_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        created_from: Annotated[datetime | None, QueryParameter()] = None,
        created_to: Annotated[datetime | None, QueryParameter()] = None,
        limit: Limit = 50,
        offset: OptionalOffset = None,
        cursor: Cursor = None,
    ) -> OrderPage:
        """Newest first. Keyset paging: pass the page's `next_cursor` as `cursor` (the same cost at any
        depth and any history size); `offset` still works and adds `total`."""
        paging(offset, cursor)
        orders, total = await service.list_orders(
            db_session,
            status=status,
            channel_id=channel_id,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            offset=offset,
            after=decode_cursor(cursor, datetime, uuid.UUID) if cursor else None,
        )
        last = orders[-1] if len(orders) == limit else None
        return OrderPage(
            items=[order_out(o) for o in orders],
            total=total,
            limit=limit,
            offset=offset,
            next_cursor=encode_cursor(last.created_at, last.id) if last else None,
        )

    @get("/{order_id:uuid}", guards=[requires("orders:read")])
    async def show(self, db_session: DbSession, order_id: Id) -> OrderDetailOut:
        return await detail(db_session, await service.get_order(db_session, order_id))

    @post("/", guards=[requires("orders:write")])
    async def create_manual(
        self, request: Request[Principal, Any, Any], db_session: DbSession, data: JSONBody[ManualOrderIn]
    ) -> Response[Any]:
        async def op() -> OrderDetailOut:
            order = await service.create_manual(
                db_session,
                org_code=request.user.org_code,
                currency=data.currency,
                reference=data.reference,
                lines=[
                    CanonicalLine(None, ln.sku, ln.title or ln.sku, ln.quantity, ln.unit_price_minor)
                    for ln in data.lines
                ],
            )
            return await detail(db_session, order)

        return await idempotent(request, db_session, op)

    @post("/{order_id:uuid}/retry-reservation", guards=[requires("orders:write")], status_code=200)
    async def retry_reservation(
        self, request: Request[Principal, Any, Any], db_session: DbSession, order_id: Id
    ) -> Response[Any]:
        """Try again to reserve an on-hold order's lines (after a stock receipt)."""

        async def op() -> OrderDetailOut:
            order = await service.get_order(db_session, order_id)
            ref = await service.ref_of(db_session, order)
            return await detail(db_session, await service.retry_hold(db_session, order_id, ref))

        return await idempotent(request, db_session, op, status_code=200)


ROUTES = [OrderController]
