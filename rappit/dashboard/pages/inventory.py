"""Inventory: levels with search and filters, adjustments with a reason, a SKU's ledger and chart."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, PathParameter
from litestar.response import Redirect, Template

from rappit.dashboard.charts import stock_lines
from rappit.dashboard.web import PREFIX, QFlag, QPage, QText, done, render
from rappit.inventory import catalogue, queries, reservations, stock
from rappit.platform.errors import BadRequest
from rappit.platform.http import DbSession
from rappit.tenancy import service as tenancy
from rappit.tenancy.auth import requires

READ = [requires("inventory:read")]
WRITE = [requires("inventory:write")]
PAGE = 50


class AdjustForm(msgspec.Struct):
    sku: str
    warehouse_code: str
    quantity: int
    mode: str = "delta"
    reason: str = "adjust"
    note: str = ""


class HoldForm(msgspec.Struct):
    sku: str
    warehouse_code: str
    quantity: int
    reference: str = ""


async def actor_names(session: Any) -> dict[str, str]:
    """ "user:<id>" -> the user's e-mail, so the ledger says who in words."""
    users = await tenancy.list_users(session, limit=200, offset=0)
    return {f"user:{u.id}": u.email for u in users}


def sku_page(sku: str) -> str:
    return f"{PREFIX}/inventory/sku/{sku}"


class InventoryPages(Controller):
    path = "/inventory"

    @get("/", guards=READ, name="dashboard.inventory")
    async def levels(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        q: QText = "",
        warehouse: QText = "",
        low: QFlag = False,
        page: QPage = 1,
    ) -> Template:
        page = max(page, 1)
        rows, total = await queries.list_levels(
            db_session,
            sku=None,
            sku_contains=q.strip() or None,
            warehouse=warehouse or None,
            low_stock=low,
            limit=PAGE,
            offset=(page - 1) * PAGE,
        )
        total = total or 0  # counted: offset paging was asked for
        return render(
            request,
            "inventory.html",
            rows=rows,
            total=total,
            page=page,
            pages=max((total + PAGE - 1) // PAGE, 1),
            q=q,
            warehouse=warehouse,
            low=low,
            warehouses=await catalogue.list_warehouses(db_session, limit=200, offset=0),
        )

    @get("/sku/{sku:str}", guards=READ)
    async def sku(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        sku: Annotated[str, PathParameter()],
        warehouse: QText = "",
    ) -> Template:
        entries = await queries.ledger_for_sku(db_session, sku=sku, limit=200, before_id=None)
        levels, _ = await queries.list_levels(
            db_session, sku=sku, warehouse=None, low_stock=False, limit=50, offset=0
        )
        codes = sorted({wh for _, wh in entries} | {row[1] for row in levels})
        shown = warehouse if warehouse in codes else (codes[0] if codes else "")
        series = [
            (e.created_at, e.on_hand_after, e.reserved_after) for e, wh in reversed(entries) if wh == shown
        ]
        return render(
            request,
            "sku.html",
            sku=sku,
            entries=entries,
            levels=levels,
            codes=codes,
            shown=shown,
            chart=stock_lines(series),
            actors=await actor_names(db_session),
        )

    @post("/adjust", guards=WRITE)
    async def adjust(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        data: Annotated[AdjustForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        if data.mode not in ("delta", "set") or data.reason not in ("receive", "adjust"):
            raise BadRequest("mode must be delta or set, and reason receive or adjust", code="BAD_FORM")
        change = await stock.with_retries(
            db_session,
            lambda: stock.adjust(
                db_session,
                sku=data.sku.strip(),
                warehouse=data.warehouse_code.strip(),
                quantity=data.quantity,
                mode=data.mode,
                reason=data.reason,
                note=data.note.strip() or None,
            ),
        )
        return done(
            request,
            f"{change.sku} at {change.warehouse}: on hand {change.on_hand_before} → {change.on_hand_after}"
            f" ({data.reason}).",
            sku_page(change.sku),
        )

    @post("/hold", guards=WRITE)
    async def hold(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        data: Annotated[HoldForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        """A manual hold (as `POST /api/v1/reservations`): refused with the short lines named."""
        sku, warehouse = data.sku.strip(), data.warehouse_code.strip()
        await reservations.reserve_by_codes(
            db_session,
            [(sku, warehouse, data.quantity)],
            reference_type="manual",
            reference_id=data.reference.strip() or f"dashboard-{uuid.uuid4().hex[:8]}",
            expires_at=None,
        )
        return done(request, f"Held {data.quantity} of {sku} at {warehouse}.", sku_page(sku))
