"""Orders API, channel event listing, dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter
from sqlalchemy import select

from rappit.channels import service as channels
from rappit.channels.models import WebhookEvent
from rappit.channels.webhooks import enqueue
from rappit.integrations.channels.canonical import CanonicalLine
from rappit.inventory import service as inventory
from rappit.orders import jobs, service
from rappit.orders.models import Order
from rappit.orders.schemas import (
    DeadLetterOut,
    ManualOrderIn,
    OrderDetailOut,
    OrderEventOut,
    OrderLineOut,
    OrderOut,
    OrderPage,
    ReservationRef,
    WebhookEventOut,
)
from rappit.platform.http import DbSession, Id, Limit, Offset
from rappit.tenancy.idempotency import idempotent
from rappit.platform.logging import current_request_id
from rappit.tenancy.auth import Principal, requires
from rappit.workers.models import DeadLetter


def order_out(o: Order) -> OrderOut:
    return OrderOut(
        id=o.id, number=o.number, source=o.source, channel_id=o.channel_id, external_id=o.external_id,
        external_name=o.external_name, status=o.status, hold_reason=o.hold_reason, currency=o.currency,
        created_at=o.created_at, updated_at=o.updated_at, cancelled_at=o.cancelled_at,
    )


async def detail(session: Any, order: Order) -> OrderDetailOut:
    lines = await service.current_lines(session, order.id)
    reservations = [
        ReservationRef(id=r.id, sku=sku, warehouse_code=wh, quantity=r.quantity, status=r.status)
        for r, sku, wh in await inventory.reservations_view(session, reference=(service.RESERVATION_REF, str(order.id)))
    ]
    return OrderDetailOut(
        order=order_out(order),
        lines=[OrderLineOut(position=ln.position, sku=ln.sku, title=ln.title, quantity=ln.quantity,
                            unit_price_minor=ln.unit_price_minor, currency=ln.currency,
                            external_line_id=ln.external_line_id) for ln in lines],
        reservations=reservations,
        timeline=[OrderEventOut(kind=e.kind, detail=e.detail, created_at=e.created_at, webhook_event_id=e.webhook_event_id)
                  for e in await service.timeline(session, order.id)],
    )


class OrderController(Controller):
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
        offset: Offset = 0,
    ) -> OrderPage:
        orders, total = await service.list_orders(
            db_session, status=status, channel_id=channel_id, created_from=created_from, created_to=created_to,
            limit=limit, offset=offset,
        )
        return OrderPage(items=[order_out(o) for o in orders], total=total, limit=limit, offset=offset)

    @get("/{order_id:uuid}", guards=[requires("orders:read")])
    async def show(self, db_session: DbSession, order_id: Id) -> OrderDetailOut:
        return await detail(db_session, await service.get_order(db_session, order_id))

    @post("/", guards=[requires("orders:write")])
    async def create_manual(
        self, request: Request[Principal, Any, Any], db_session: DbSession, data: JSONBody[ManualOrderIn]
    ) -> Response[Any]:
        async def op() -> OrderDetailOut:
            order = await service.create_manual(
                db_session, org_code=request.user.org_code, currency=data.currency, reference=data.reference,
                lines=[CanonicalLine(None, ln.sku, ln.title or ln.sku, ln.quantity, ln.unit_price_minor) for ln in data.lines],
            )
            return await detail(db_session, order)

        return await idempotent(request, db_session, op)

    @post("/{order_id:uuid}/cancel", guards=[requires("orders:write")])
    async def cancel(self, request: Request[Any, Any, Any], db_session: DbSession, order_id: Id) -> Response[Any]:
        async def op() -> OrderDetailOut:
            order = await service.get_order(db_session, order_id, for_update=True)
            await service.cancel(db_session, order)
            return await detail(db_session, order)

        return await idempotent(request, db_session, op, status_code=200)

    @post("/{order_id:uuid}/retry-reservation", guards=[requires("orders:write")])
    async def retry_reservation(self, request: Request[Principal, Any, Any], db_session: DbSession, order_id: Id) -> Response[Any]:
        """Try again to reserve an on-hold order's lines (after a stock receipt)."""

        async def op() -> OrderDetailOut:
            order = await service.get_order(db_session, order_id)
            warehouse = None
            if order.channel_id:
                warehouse = (await channels.get_channel(db_session, order.channel_id)).warehouse_id
            ref = service.ChannelRef(id=order.channel_id, source=order.source, org_code=request.user.org_code,
                                     warehouse_id=warehouse)
            return await detail(db_session, await service.retry_hold(db_session, order_id, ref))

        return await idempotent(request, db_session, op, status_code=200)


class ChannelEventsController(Controller):
    path = "/api/v1/channels"
    tags = ["channels"]

    @get("/{channel_id:uuid}/events", guards=[requires("channels:read")])
    async def events(self, db_session: DbSession, channel_id: Id, limit: Limit = 50, offset: Offset = 0) -> list[WebhookEventOut]:
        await channels.get_channel(db_session, channel_id)
        rows = await db_session.execute(
            select(WebhookEvent).where(WebhookEvent.channel_id == channel_id)
            .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id).limit(limit).offset(offset)
        )
        return [
            WebhookEventOut(id=e.id, topic=e.topic, delivery_id=e.delivery_id, status=e.status, attempts=e.attempts,
                            last_error=e.last_error, received_at=e.received_at, processed_at=e.processed_at,
                            order_id=e.order_id)
            for e in rows.scalars()
        ]


def dead_out(d: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(id=d.id, kind=d.kind, ref_id=d.ref_id, job_name=d.job_name, error=d.error, attempts=d.attempts,
                         status=d.status, first_failed_at=d.first_failed_at, last_failed_at=d.last_failed_at,
                         retried_at=d.retried_at, payload=d.payload)


class DeadLetterController(Controller):
    path = "/api/v1/jobs/dead"
    tags = ["jobs"]

    @get("/", guards=[requires("jobs:read")])
    async def list_dead(
        self, db_session: DbSession,
        status: Annotated[Literal["dead", "retried"] | None, QueryParameter()] = "dead",
        limit: Limit = 50, offset: Offset = 0,
    ) -> list[DeadLetterOut]:
        query = select(DeadLetter).order_by(DeadLetter.last_failed_at.desc(), DeadLetter.id).limit(limit).offset(offset)
        if status:
            query = query.where(DeadLetter.status == status)
        return [dead_out(d) for d in (await db_session.execute(query)).scalars()]

    @post("/{dead_letter_id:uuid}/retry", guards=[requires("jobs:retry")])
    async def retry(
        self, request: Request[Principal, Any, Any], state: State, db_session: DbSession, dead_letter_id: Id
    ) -> Response[Any]:
        async def op() -> DeadLetterOut:
            letter = await jobs.retry_dead_letter(db_session, dead_letter_id, request.user.actor.describe())
            return dead_out(letter)

        response = await idempotent(request, db_session, op, status_code=200)
        if response.headers.get("idempotent-replayed") != "true":
            from litestar.background_tasks import BackgroundTask

            letter = await db_session.get(DeadLetter, dead_letter_id)
            assert letter is not None
            response.background = BackgroundTask(enqueue, state, letter.org_id, letter.ref_id, current_request_id())
        return response


ROUTES = [OrderController, ChannelEventsController, DeadLetterController]
