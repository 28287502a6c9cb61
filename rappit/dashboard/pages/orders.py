"""Orders: filtered list with keyset pages, detail (lines, reservations, shipments, timeline), cancel,
retry a hold, rates from every carrier account, buy a label, download it, void it."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from rappit.channels import service as channels
from rappit.dashboard.web import PREFIX, QText, done, form_text, notice, render
from rappit.integrations.carriers.base import LabelFormat, Parcel
from rappit.orders import service as orders
from rappit.platform.errors import BadRequest, Conflict
from rappit.platform.http import DbSession
from rappit.shipping import cancellation, saga
from rappit.shipping import service as shipping
from rappit.shipping.schemas import AddressIn
from rappit.tenancy.auth import requires
from rappit.tenancy.context import require_org_id

READ = [requires("orders:read")]
WRITE = [requires("orders:write")]
SHIP_READ = [requires("shipments:read")]
SHIP_CREATE = [requires("shipments:create")]
SHIP_VOID = [requires("shipments:void")]
PAGE = 25
STATUSES = ("open", "on_hold", "cancelled")
ADDRESS_FIELDS = ("name", "street", "city", "postal_code", "country_code", "phone")


def order_page(order_id: uuid.UUID) -> str:
    return f"{PREFIX}/orders/{order_id}"


def encode_cursor(order: Any) -> str:
    return f"{order.created_at.isoformat()}_{order.id}"


def decode_cursor(raw: str) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        stamp, _, ident = raw.rpartition("_")
        return datetime.fromisoformat(stamp), uuid.UUID(ident)
    except ValueError:
        raise BadRequest(
            "the page cursor is not valid; start from the first page", code="BAD_CURSOR"
        ) from None


def parse_day(raw: str, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.combine(datetime.fromisoformat(raw).date(), time.min).astimezone()
    except ValueError:
        raise BadRequest(f"{name}: expected a date like 2026-12-01, got {raw!r}", code="BAD_DATE") from None


def address_from(form: Any, prefix: str) -> Any:
    """The form's ship_from/ship_to fields, checked by the API's own AddressIn rules."""
    raw = {f: form_text(form, f"{prefix}_{f}") for f in ADDRESS_FIELDS}
    try:
        address = msgspec.convert(
            {
                "name": raw["name"],
                "street_lines": [raw["street"]] if raw["street"] else [],
                "city": raw["city"],
                "postal_code": raw["postal_code"],
                "country_code": raw["country_code"].upper(),
                "phone": raw["phone"],
            },
            AddressIn,
        )
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{prefix}: {exc}", code="INVALID_ADDRESS", details={"field": prefix}) from None
    return address.to_address(), raw


def shipment_input(form: Any) -> tuple[shipping.ShipmentInput, dict[str, Any]]:
    ship_from, raw_from = address_from(form, "from")
    ship_to, raw_to = address_from(form, "to")
    weight = form_text(form, "weight_grams")
    if not weight.isdigit() or not 1 <= int(weight) <= 1_000_000:
        raise BadRequest("weight_grams: a whole number of grams from 1 to 1,000,000", code="INVALID_PARCEL")
    kept = {f"from_{k}": v for k, v in raw_from.items()} | {f"to_{k}": v for k, v in raw_to.items()}
    kept["weight_grams"] = weight
    return (
        shipping.ShipmentInput(ship_from=ship_from, ship_to=ship_to, parcels=(Parcel(int(weight)),)),
        kept,
    )


class OrderPages(Controller):
    path = "/orders"

    @get("/", guards=READ, name="dashboard.orders")
    async def list_orders(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        status: QText = "",
        channel: QText = "",
        date_from: QText = "",
        date_to: QText = "",
        after: QText = "",
    ) -> Template:
        if status and status not in STATUSES:
            raise BadRequest(f"status: one of {', '.join(STATUSES)}", code="BAD_STATUS")
        try:
            channel_id = uuid.UUID(channel) if channel else None
        except ValueError:
            raise BadRequest("channel: not a channel id", code="BAD_CHANNEL") from None
        end = parse_day(date_to, "date_to")
        found, total = await orders.list_orders(
            db_session,
            status=status or None,
            channel_id=channel_id,
            created_from=parse_day(date_from, "date_from"),
            created_to=end + timedelta(days=1) if end else None,
            limit=PAGE + 1,
            after=decode_cursor(after),
        )
        more = len(found) > PAGE
        found = found[:PAGE]
        filters = {"status": status, "channel": channel, "date_from": date_from, "date_to": date_to}
        return render(
            request,
            "orders.html",
            orders=found,
            total=total,
            next_cursor=encode_cursor(found[-1]) if more else None,
            first_page=not after,
            filters=filters,
            statuses=STATUSES,
            channels=await channels.list_channels(db_session, limit=100, offset=0),
        )

    @get("/{order_id:uuid}", guards=READ)
    async def show(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        order_id: Annotated[uuid.UUID, PathParameter()],
    ) -> Template:
        view = await orders.order_detail(db_session, await orders.get_order(db_session, order_id))
        shipments = await shipping.list_shipments(
            db_session, order_id=order_id, status=None, limit=50, offset=0
        )
        timelines = {s.id: await shipping.timeline(db_session, s.id) for s in shipments}
        return render(request, "order.html", view=view, shipments=shipments, timelines=timelines, form={})

    @post("/{order_id:uuid}/cancel", guards=WRITE)
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: DbSession,
        order_id: Annotated[uuid.UUID, PathParameter()],
    ) -> Redirect:
        """The API's cancel: refused (409) with a shipment in transit; bought labels voided by a job."""
        cancelled = await cancellation.cancel_order(db_session, order_id)
        voids = cancelled.labels_to_void
        message = f"Order {cancelled.order.number} cancelled; its stock is released."
        if voids:
            message += f" {len(voids)} unshipped label(s) are being voided."
        response = done(request, message, order_page(order_id))
        if voids:  # runs after the response, so after the commit; the sweeper catches a miss
            response.background = BackgroundTask(
                cancellation.enqueue_voids, state.arq, require_org_id(), voids
            )
        return response

    @post("/{order_id:uuid}/retry", guards=WRITE)
    async def retry(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        order_id: Annotated[uuid.UUID, PathParameter()],
    ) -> Redirect:
        order = await orders.get_order(db_session, order_id)
        ref = await orders.ref_of(db_session, order)
        order = await orders.retry_hold(db_session, order_id, ref)
        if order.status == "on_hold":
            notice(
                request, f"Order {order.number} is still on hold: {reason_text(order.hold_reason)}", ok=False
            )
            return Redirect(order_page(order_id), status_code=303)
        return done(request, f"Order {order.number} is open: its stock is reserved.", order_page(order_id))

    @post("/{order_id:uuid}/rates", guards=SHIP_READ)
    async def rates(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: DbSession,
        order_id: Annotated[uuid.UUID, PathParameter()],
    ) -> Template:
        """Quotes from every active carrier account; an unavailable one is listed with its reason."""
        form = await request.form()
        data, kept = shipment_input(form)
        order = await orders.get_order(db_session, order_id)
        quotes = await saga.rates(state.sessionmaker, state.carriers, order_id, data)
        return render(
            request,
            "rates.html",
            order=order,
            quotes=quotes,
            kept=kept,
            purchase_key=f"dash-{uuid.uuid4().hex}",
        )

    @post("/{order_id:uuid}/labels", guards=SHIP_CREATE)
    async def buy(
        self, request: Request[Any, Any, Any], state: State, order_id: Annotated[uuid.UUID, PathParameter()]
    ) -> Redirect:
        form = await request.form()
        data, _ = shipment_input(form)
        try:
            account_id = uuid.UUID(form_text(form, "account_id"))
        except ValueError:
            raise BadRequest("account_id: pick a carrier account", code="BAD_ACCOUNT") from None
        bought = await saga.buy_label(
            state.sessionmaker,
            state.carriers,
            order_id=order_id,
            account_id=account_id,
            service_code=form_text(form, "service"),
            data=data,
            label_format=LabelFormat.PDF,
            idempotency_key=form_text(form, "purchase_key") or None,
        )
        s = bought.shipment
        return done(
            request,
            f"Label bought: {s.carrier} {s.service}, tracking {', '.join(s.tracking_numbers or [])}.",
            order_page(order_id),
        )


def reason_text(reason: dict[str, Any] | None) -> str:
    if not reason:
        return "no reason recorded"
    return str(reason.get("message") or reason)


class ShipmentPages(Controller):
    path = "/shipments"

    @get("/{shipment_id:uuid}/label", guards=SHIP_READ)
    async def label(
        self, db_session: DbSession, shipment_id: Annotated[uuid.UUID, PathParameter()]
    ) -> Response[bytes]:
        shipment = await shipping.get_shipment(db_session, shipment_id)
        if not shipment.label_document:
            raise Conflict("this shipment has no label document", code="NO_LABEL")
        fmt = LabelFormat(shipment.label_format or "pdf")
        name = f"label-{(shipment.tracking_numbers or [shipment.id])[0]}.{fmt.value}"
        return Response(
            shipment.label_document,
            media_type=fmt.content_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post("/{shipment_id:uuid}/void", guards=SHIP_VOID)
    async def void(
        self,
        request: Request[Any, Any, Any],
        state: State,
        shipment_id: Annotated[uuid.UUID, PathParameter()],
    ) -> Redirect:
        shipment = await saga.void_label(state.sessionmaker, state.carriers, shipment_id)
        word = (
            "voided" if shipment.status == "voided" else "void requested (the carrier cannot confirm voids)"
        )
        return done(request, f"Label {word}.", order_page(shipment.order_id))
