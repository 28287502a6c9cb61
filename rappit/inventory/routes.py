"""Inventory API: SKUs, warehouses, levels, adjustments, ledger, reservations, bulk import."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, Router, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State, UploadFile
from litestar.params import JSONBody, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory import bulk, catalogue, imports, queries, reservations, stock
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
from rappit.platform.errors import BadRequest, BusinessRuleViolation
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
    paging,
)
from rappit.platform.settings import Settings
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


class ImportController(Controller):
    """Bulk imports of stock levels and of the catalogue. Small uploads are applied in the request
    (200 and the summary); bigger ones (over IMPORT_JOB_THRESHOLD_BYTES, or `?job=true`) are stored
    and run by a job (202 and an import id to poll). Bodies up to MAX_IMPORT_BYTES (the router's limit)."""

    path = "/api/v1"
    tags = ["imports"]

    @post("/inventory/bulk", guards=WRITE, status_code=200)
    async def stock_import(
        self,
        request: Request[Any, Any, Any],
        state: State,
        db_session: DbSession,
        mode: Annotated[
            Literal["set", "add"], QueryParameter(description="default for rows without a mode")
        ] = "set",
        job: RunAsJob = False,
    ) -> Response[Any]:
        """CSV (text/csv), a JSON array, or a multipart upload (field `file`): sku,quantity,warehouse_code."""
        op, status = _plan(state, db_session, await _upload(request, "stock", mode), job)
        return _then_enqueue(await idempotent(request, db_session, op, status_code=status), state)

    @post("/skus/bulk", guards=WRITE, status_code=200)
    async def sku_import(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, job: RunAsJob = False
    ) -> Response[Any]:
        """Upsert SKUs by code. CSV (text/csv) with a header naming `code` and any of name, reorder_point,
        hs_code, country_of_origin, customs_value_minor, customs_currency, weight_grams; a JSON array of
        such objects; or a multipart upload (field `file`)."""
        op, status = _plan(state, db_session, await _upload(request, "skus", None), job)
        return _then_enqueue(await idempotent(request, db_session, op, status_code=status), state)

    @get("/imports", guards=READ)
    async def list_imports(
        self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0
    ) -> list[dict[str, Any]]:
        rows = await imports.list_recent(db_session, limit=limit, offset=offset)
        return [{k: v for k, v in imports.view(r).items() if k not in ("summary", "rejected")} for r in rows]

    @get("/imports/{import_id:uuid}", guards=READ)
    async def show_import(self, db_session: DbSession, import_id: Id) -> dict[str, Any]:
        """Status (queued, running, done, failed), processed/total rows, summary and rejected lines."""
        return imports.view(await imports.get(db_session, import_id))

    @get("/imports/{import_id:uuid}/rejected.csv", guards=READ, media_type="text/csv")
    async def rejected_csv(self, db_session: DbSession, import_id: Id) -> Response[str]:
        row = await imports.get(db_session, import_id)
        return Response(
            imports.rejected_csv(row),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="import-{import_id}-rejected.csv"'},
        )


RunAsJob = Annotated[
    bool, QueryParameter(description="run as a job (202 and an import id) whatever the upload's size")
]


async def _upload(request: Request[Any, Any, Any], kind: str, mode: str | None) -> imports.Upload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        await request.body()  # cache the raw body first: the Idempotency-Key fingerprint needs it
        form = await request.form()
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise BadRequest("multipart upload needs a file field named 'file'", code="MISSING_FILE")
        body, media = await file.read(), "text/csv"
        mode = form.get("mode") or mode
    else:
        media, body = imports.media_type(content_type), await request.body()
    if kind == "stock":
        mode = bulk.check_mode(mode)
    return imports.Upload(kind=kind, content_type=media, body=body, mode=mode)


def _plan(
    state: State, db_session: Any, upload: imports.Upload, job: bool
) -> tuple[Callable[[], Awaitable[dict[str, Any]]], int]:
    """The operation for this upload and its status: stored for a job (202), or applied now (200)."""
    if job or imports.runs_as_job(upload, state.settings.import_job_threshold_bytes):

        async def submit() -> dict[str, Any]:
            return await imports.submit(db_session, upload)

        return submit, 202
    parsed = imports.parse(upload)  # a file that cannot be read is a 400 before anything is stored

    async def run() -> dict[str, Any]:
        return await imports.run_now(db_session, upload, parsed)

    return run, 200


def _then_enqueue(response: Response[Any], state: State) -> Response[Any]:
    """A stored import's job is enqueued after the commit (a replay enqueues again: arq dedups, and the
    job skips a finished import); if Redis is down, the sweeper finds the import."""
    if response.status_code == 202:
        content = response.content
        answer = content if isinstance(content, dict) else msgspec.json.decode(content)  # a replay: bytes
        response.background = BackgroundTask(
            imports.try_enqueue, state.arq, require_org_id(), uuid.UUID(answer["import_id"])
        )
    return response


def import_router(settings: Settings) -> Router:
    """The import routes, with their own body limit (MAX_IMPORT_BYTES instead of MAX_BODY_BYTES)."""
    return Router(
        path="/", route_handlers=[ImportController], request_max_body_size=settings.max_import_bytes
    )


ROUTES = [CatalogueController, InventoryController, ReservationController]
