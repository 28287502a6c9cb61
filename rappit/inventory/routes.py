"""Inventory API: SKUs, warehouses, levels, adjustments, ledger, reservations, bulk import."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import JSONBody, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory import bulk, catalogue, queries, reservations, stock
from rappit.inventory.combiner import ReservationCombiner
from rappit.inventory.schemas import (
    AdjustIn,
    AdjustOut,
    LedgerOut,
    LedgerPage,
    LevelOut,
    LevelPage,
    ReservationIn,
    ReservationOut,
    ReservationsOut,
    SkuIn,
    SkuOut,
    WarehouseIn,
    WarehouseOut,
)
from rappit.platform.db import utcnow
from rappit.platform.errors import BadRequest, BusinessRuleViolation, UnsupportedMediaType
from rappit.platform.http import (
    INT64_MAX,
    Cursor,
    DbSession,
    Id,
    Limit,
    Offset,
    OptionalOffset,
    decode_cursor,
    encode_cursor,
    is_json_media_type,
    json_body,
    paging,
)
from rappit.tenancy.auth import requires
from rappit.tenancy.context import require_org_id
from rappit.tenancy.idempotency import HEADER as IDEMPOTENCY_HEADER
from rappit.tenancy.idempotency import idempotent

READ = [requires("inventory:read")]
WRITE = [requires("inventory:write")]


class CatalogueController(Controller):
    path = "/api/v1"
    tags = ["inventory"]

    @post("/skus", guards=WRITE)
    async def create_sku(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[SkuIn]
    ) -> Response[Any]:
        async def op() -> SkuOut:
            sku = await catalogue.create_sku(
                db_session,
                code=data.code,
                name=data.name,
                reorder_point=data.reorder_point,
                hs_code=data.hs_code,
                country_of_origin=data.country_of_origin,
                customs_value_minor=data.customs_value_minor,
                customs_currency=data.customs_currency,
                weight_grams=data.weight_grams,
            )
            return SkuOut.of(sku)

        return await idempotent(request, db_session, op)

    @get("/skus", guards=READ)
    async def list_skus(self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0) -> list[SkuOut]:
        skus = await catalogue.list_skus(db_session, limit=limit, offset=offset)
        return [SkuOut.of(s) for s in skus]

    @post("/warehouses", guards=WRITE)
    async def create_warehouse(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[WarehouseIn]
    ) -> Response[Any]:
        async def op() -> WarehouseOut:
            wh = await catalogue.create_warehouse(db_session, code=data.code, name=data.name)
            return WarehouseOut(id=wh.id, code=wh.code, name=wh.name)

        return await idempotent(request, db_session, op)

    @get("/warehouses", guards=READ)
    async def list_warehouses(
        self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0
    ) -> list[WarehouseOut]:
        warehouses = await catalogue.list_warehouses(db_session, limit=limit, offset=offset)
        return [WarehouseOut(id=w.id, code=w.code, name=w.name) for w in warehouses]


class InventoryController(Controller):
    path = "/api/v1/inventory"
    tags = ["inventory"]

    @get("/", guards=READ)
    async def levels(
        self,
        db_session: DbSession,
        sku: Annotated[str | None, QueryParameter(description="exact SKU code")] = None,
        warehouse: Annotated[str | None, QueryParameter(description="exact warehouse code")] = None,
        low_stock: Annotated[bool, QueryParameter(description="only available <= reorder point")] = False,
        limit: Limit = 50,
        offset: OptionalOffset = None,
        cursor: Cursor = None,
    ) -> LevelPage:
        """By SKU code, then warehouse code. Keyset paging: pass the page's `next_cursor` as `cursor`;
        `offset` still works and adds `total`."""
        paging(offset, cursor)
        rows, total = await queries.list_levels(
            db_session,
            sku=sku,
            warehouse=warehouse,
            low_stock=low_stock,
            limit=limit,
            offset=offset,
            after=decode_cursor(cursor, str, str) if cursor else None,
        )
        items = [
            LevelOut(
                sku=s,
                warehouse_code=w,
                on_hand=oh,
                reserved=r,
                available=a,
                reorder_point=rp,
                low_stock=a <= rp,
                updated_at=u,
            )
            for s, w, oh, r, a, rp, u in rows
        ]
        last = items[-1] if len(items) == limit else None
        return LevelPage(
            items=items,
            total=total,
            limit=limit,
            offset=offset,
            next_cursor=encode_cursor(last.sku, last.warehouse_code) if last else None,
        )

    @post("/adjust", guards=WRITE, status_code=200)
    async def adjust(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[AdjustIn]
    ) -> Response[Any]:
        async def op() -> AdjustOut:
            change = await stock.with_retries(
                db_session,
                lambda: stock.adjust(
                    db_session,
                    sku=data.sku,
                    warehouse=data.warehouse_code,
                    quantity=data.quantity,
                    mode=data.mode,
                    reason=data.reason,
                    note=data.note,
                ),
            )
            return AdjustOut(
                sku=change.sku,
                warehouse_code=change.warehouse,
                on_hand_before=change.on_hand_before,
                on_hand=change.on_hand_after,
                reserved=change.reserved,
                available=change.on_hand_after - change.reserved,
                changed=change.changed,
            )

        return await idempotent(request, db_session, op, status_code=200)

    @get("/{sku:str}/ledger", guards=READ)
    async def ledger(
        self,
        db_session: DbSession,
        sku: Annotated[str, PathParameter()],
        limit: Limit = 100,
        before_id: Annotated[
            int | None, QueryParameter(ge=1, le=INT64_MAX, description="page: entries older than this id")
        ] = None,
    ) -> LedgerPage:
        rows = await queries.ledger_for_sku(db_session, sku=sku, limit=limit, before_id=before_id)
        items = [
            LedgerOut(
                id=e.id,
                warehouse_code=wh,
                reason=e.reason,
                on_hand_before=e.on_hand_before,
                on_hand_after=e.on_hand_after,
                on_hand_delta=e.on_hand_delta,
                reserved_before=e.reserved_before,
                reserved_after=e.reserved_after,
                reserved_delta=e.reserved_delta,
                actor=e.actor,
                reference_type=e.reference_type,
                reference_id=e.reference_id,
                request_id=e.request_id,
                note=e.note,
                created_at=e.created_at,
            )
            for e, wh in rows
        ]
        return LedgerPage(sku=sku, items=items, next_before_id=items[-1].id if len(items) == limit else None)

    @post("/bulk", guards=WRITE, status_code=200)
    async def bulk_import(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        mode: Annotated[
            Literal["set", "add"], QueryParameter(description="default for rows without a mode")
        ] = "set",
    ) -> Response[Any]:
        """CSV (text/csv), a JSON array, or a multipart upload (field `file`): sku,quantity,warehouse_code."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("text/csv", "application/csv", "text/plain"):
            parsed = bulk.parse_csv(await request.body(), mode)
        elif is_json_media_type(content_type):
            parsed = bulk.parse_json(await json_body(request), mode)
        elif content_type == "multipart/form-data":
            await request.body()  # cache the raw body first: the Idempotency-Key fingerprint needs it
            form = await request.form()
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadRequest("multipart upload needs a file field named 'file'", code="MISSING_FILE")
            parsed = bulk.parse_csv(await upload.read(), form.get("mode") or mode)
        else:
            raise UnsupportedMediaType(
                "send text/csv, application/json or multipart/form-data",
                details={"content_type": content_type},
            )

        async def op() -> dict[str, Any]:
            return await stock.with_retries(db_session, lambda: bulk.apply(db_session, parsed))

        return await idempotent(request, db_session, op, status_code=200)


class ReservationController(Controller):
    path = "/api/v1/reservations"
    tags = ["inventory"]

    @post("/", guards=WRITE)
    async def create(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[ReservationIn]
    ) -> Response[Any]:
        """A manual hold: every line or none (422 INSUFFICIENT_STOCK lists each short SKU).

        A one-line hold without an Idempotency-Key goes through this process's combiner
        (rappit/inventory/combiner.py): concurrent holds of one SKU share one locked statement and
        commit, each with its own reservation, ledger row and answer. With a key, the hold commits in
        the request's own transaction together with the stored response, as every keyed request does.
        """
        if len(data.lines) == 1 and request.headers.get(IDEMPOTENCY_HEADER) is None:
            return Response(await _combined_hold(request, db_session, data), status_code=201)

        async def op() -> ReservationsOut:
            expires = (
                utcnow() + timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds else None
            )
            made = await reservations.reserve_by_codes(
                db_session,
                [(ln.sku, ln.warehouse_code, ln.quantity) for ln in data.lines],
                reference_type="manual",
                reference_id=data.reference,
                expires_at=expires,
            )
            return ReservationsOut(await _views(db_session, [m.reservation_id for m in made]))

        return await idempotent(request, db_session, op)

    @get("/{reservation_id:uuid}", guards=READ)
    async def show(self, db_session: DbSession, reservation_id: Id) -> ReservationOut:
        await reservations.get_reservation(db_session, reservation_id)
        return (await _views(db_session, [reservation_id]))[0]

    @post("/{reservation_id:uuid}/release", guards=WRITE, status_code=200)
    async def release(
        self, request: Request[Any, Any, Any], db_session: DbSession, reservation_id: Id
    ) -> Response[Any]:
        """Release an active hold; releasing one already released or committed changes nothing."""

        async def op() -> ReservationOut:
            await reservations.get_reservation(db_session, reservation_id)
            await stock.with_retries(db_session, lambda: reservations.release(db_session, [reservation_id]))
            db_session.expire_all()
            return (await _views(db_session, [reservation_id]))[0]

        return await idempotent(request, db_session, op, status_code=200)


async def _combined_hold(
    request: Request[Any, Any, Any], db_session: AsyncSession, data: ReservationIn
) -> ReservationsOut:
    (line,) = data.lines
    skus = await catalogue.sku_ids(db_session, [line.sku])
    whs = await catalogue.warehouse_ids(db_session, [line.warehouse_code])
    if line.sku not in skus or line.warehouse_code not in whs:
        raise BusinessRuleViolation(
            "unknown SKU or warehouse codes",
            code="UNKNOWN_CODES",
            details={
                "skus": [line.sku] if line.sku not in skus else [],
                "warehouses": [line.warehouse_code] if line.warehouse_code not in whs else [],
            },
        )
    expires = utcnow() + timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds else None
    combiner: ReservationCombiner = request.app.state.reservation_combiner
    made = await combiner.reserve(
        require_org_id(),
        skus[line.sku],
        whs[line.warehouse_code],
        line.quantity,
        reference_type="manual",
        reference_id=data.reference,
        expires_at=expires,
        labels=(line.sku, line.warehouse_code),
    )
    return ReservationsOut(await _views(db_session, [made.reservation_id]))


async def _views(db_session: Any, ids: list[Any]) -> list[ReservationOut]:
    return [
        ReservationOut(
            id=r.id,
            sku=sku,
            warehouse_code=wh,
            quantity=r.quantity,
            status=r.status,
            reference_type=r.reference_type,
            reference_id=r.reference_id,
            expires_at=r.expires_at,
            created_at=r.created_at,
            closed_at=r.closed_at,
            close_reason=r.close_reason,
        )
        for r, sku, wh in await queries.reservations_view(db_session, ids)
    ]


ROUTES = [CatalogueController, InventoryController, ReservationController]
