"""Carrier accounts, breaker states and shipments. The label purchase and void span several
transactions (the saga), so those routes open their own with `provide_session` instead of taking the
request's one session; every other route is the usual one transaction."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from rappit.integrations.carriers.base import LabelFormat
from rappit.orders.routes import detail as order_detail
from rappit.orders.schemas import OrderDetailOut
from rappit.platform.errors import Conflict, error_responses
from rappit.platform.http import DbSession, Id, Limit, Offset
from rappit.shipping import accounts, cancellation, fulfillment, saga, service
from rappit.shipping.schemas import (
    AccountQuoteOut,
    BreakerOut,
    CarrierAccountIn,
    CarrierAccountOut,
    CarrierAccountWithSecretOut,
    RatesIn,
    RatesOut,
    ShipmentDetailOut,
    ShipmentEventOut,
    ShipmentIn,
    ShipmentOut,
    StatusFilter,
)
from rappit.tenancy.auth import requires
from rappit.tenancy.context import require_org_id
from rappit.tenancy.idempotency import HEADER, idempotent

READ = [requires("shipments:read")]
MANAGE = [requires("carriers:manage")]
CREATE = [requires("shipments:create")]
VOID = [requires("shipments:void")]


class CarrierAccountController(Controller):
    path = "/api/v1/carrier-accounts"
    tags = ["shipping"]

    @post("/", guards=MANAGE)
    async def create(
        self, state: State, db_session: DbSession, data: JSONBody[CarrierAccountIn]
    ) -> CarrierAccountWithSecretOut:
        made = await accounts.create_account(
            db_session,
            state.secret_box,
            carrier=data.carrier,
            name=data.name,
            credentials=data.credentials,
            account_number=data.account_number,
            base_url=data.base_url,
        )
        return CarrierAccountWithSecretOut(CarrierAccountOut.of(made.account), made.callback_secret)

    @get("/", guards=READ)
    async def list_accounts(
        self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0
    ) -> list[CarrierAccountOut]:
        found = await accounts.list_accounts(db_session, limit=limit, offset=offset)
        return [CarrierAccountOut.of(a) for a in found]

    @get("/{account_id:uuid}", guards=READ)
    async def show(self, db_session: DbSession, account_id: Id) -> CarrierAccountOut:
        return CarrierAccountOut.of(await accounts.get_account(db_session, account_id))

    @post("/{account_id:uuid}/disable", guards=MANAGE, status_code=200)
    async def disable(
        self, request: Request[Any, Any, Any], db_session: DbSession, account_id: Id
    ) -> Response[Any]:
        async def op() -> CarrierAccountOut:
            return CarrierAccountOut.of(await accounts.disable_account(db_session, account_id))

        return await idempotent(request, db_session, op, status_code=200)


class BreakerController(Controller):
    path = "/api/v1/carriers"
    tags = ["shipping"]

    @get("/breakers", guards=READ)
    async def breakers(self, state: State, db_session: DbSession) -> list[BreakerOut]:
        states = await accounts.breaker_states(db_session, state.carriers.breakers)
        return [BreakerOut.of(a, s) for a, s in states]


class ShipmentController(Controller):
    path = "/api/v1/shipments"
    tags = ["shipping"]

    @post("/rates", guards=READ, status_code=200, responses=error_responses({404}))
    async def rates(self, state: State, data: JSONBody[RatesIn]) -> RatesOut:
        quotes = await saga.rates(state.sessionmaker, state.carriers, data.order_id, data.to_input())
        return RatesOut([AccountQuoteOut.of(q) for q in quotes])

    @post("/", guards=CREATE, responses=error_responses({404}))
    async def buy(
        self, request: Request[Any, Any, Any], state: State, data: JSONBody[ShipmentIn]
    ) -> Response[Any]:
        """Buy a label: the `pending` row is committed before the carrier is called; the answer is
        recorded after. An Idempotency-Key finds the shipment of an earlier attempt, whatever its state."""
        bought = await saga.buy_label(
            state.sessionmaker,
            state.carriers,
            order_id=data.order_id,
            account_id=data.carrier_account_id,
            service_code=data.service,
            data=data.to_input(),
            label_format=LabelFormat(data.label_format),
            idempotency_key=request.headers.get(HEADER),
        )
        if bought.replayed:
            return Response(
                ShipmentOut.of(bought.shipment), status_code=200, headers={"Idempotent-Replayed": "true"}
            )
        return Response(ShipmentOut.of(bought.shipment), status_code=201)

    @get("/", guards=READ)
    async def list_shipments(
        self,
        db_session: DbSession,
        order_id: Annotated[uuid.UUID | None, QueryParameter(required=False)] = None,
        status: Annotated[StatusFilter | None, QueryParameter(required=False)] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> list[ShipmentOut]:
        found = await service.list_shipments(
            db_session, order_id=order_id, status=status, limit=limit, offset=offset
        )
        return [ShipmentOut.of(s) for s in found]

    @get("/{shipment_id:uuid}", guards=READ)
    async def show(self, db_session: DbSession, shipment_id: Id) -> ShipmentDetailOut:
        shipment = await service.get_shipment(db_session, shipment_id)
        events = await service.timeline(db_session, shipment_id)
        return ShipmentDetailOut(ShipmentOut.of(shipment), [ShipmentEventOut.of(e) for e in events])

    @get("/{shipment_id:uuid}/label", guards=READ)
    async def label(self, db_session: DbSession, shipment_id: Id) -> Response[bytes]:
        shipment = await service.get_shipment(db_session, shipment_id)
        if not shipment.label_document:
            raise Conflict("this shipment has no label document", code="NO_LABEL",
                           details={"status": shipment.status})  # fmt: skip
        fmt = LabelFormat(shipment.label_format or "pdf")
        return Response(
            shipment.label_document,
            media_type=fmt.content_type,
            headers={"Content-Disposition": f'inline; filename="{shipment.id}.{fmt.value}"'},
        )

    @post("/{shipment_id:uuid}/void", guards=VOID, status_code=200)
    async def void(self, state: State, shipment_id: Id) -> ShipmentOut:
        """Voided only on the carrier's confirmation, through the account that bought the label."""
        return ShipmentOut.of(await saga.void_label(state.sessionmaker, state.carriers, shipment_id))

    @post("/{shipment_id:uuid}/ship", guards=CREATE, status_code=200)
    async def ship(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, shipment_id: Id
    ) -> Response[Any]:
        """Manual hand-over: in transit, and the shipment's reserved stock committed (exactly once);
        the order's channel is told by a job enqueued once this transaction has committed."""

        async def op() -> ShipmentOut:
            return ShipmentOut.of(await service.ship(db_session, shipment_id))

        response = await idempotent(request, db_session, op, status_code=200)
        push = await fulfillment.push_of_shipment(db_session, shipment_id)
        if push is not None and push.status == "pending":
            response.background = BackgroundTask(fulfillment.try_enqueue, state.arq, push.org_id, push.id)
        return response


class OrderCancelController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]

    @post("/{order_id:uuid}/cancel", guards=[requires("orders:write")], status_code=200)
    async def cancel(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, order_id: Id
    ) -> Response[Any]:
        """Cancel: reservations released, bought labels voided by a job after the commit; an order with
        a shipment in transit or delivered is a 409 naming the shipment."""
        voids: list[uuid.UUID] = []

        async def op() -> OrderDetailOut:
            done = await cancellation.cancel_order(db_session, order_id)
            voids.extend(done.labels_to_void)
            return await order_detail(db_session, done.order)

        response = await idempotent(request, db_session, op, status_code=200)
        if voids:  # runs after the response, so after the commit
            response.background = BackgroundTask(
                cancellation.enqueue_voids, state.arq, require_org_id(), voids
            )
        return response


ROUTES = [CarrierAccountController, BreakerController, ShipmentController, OrderCancelController]
