"""Read queries over stock: levels with filters, reservations by reference, a SKU's ledger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.catalogue import sku_ids
from rappit.inventory.models import InventoryLevel, LedgerEntry, Reservation, Sku, Warehouse
from rappit.platform.errors import NotFound


async def reservations_view(
    session: AsyncSession, ids: Sequence[uuid.UUID] | None = None, *, reference: tuple[str, str] | None = None
) -> list[Any]:
    """Reservations (by id, or by reference type and id) with their SKU and warehouse codes, one query."""
    query = (
        select(Reservation, Sku.code, Warehouse.code)
        .join(InventoryLevel, InventoryLevel.id == Reservation.level_id)
        .join(Sku, Sku.id == InventoryLevel.sku_id)
        .join(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
        .order_by(Sku.code, Warehouse.code)
    )
    if ids is not None:
        query = query.where(Reservation.id.in_(list(ids)))
    if reference is not None:
        query = query.where(
            Reservation.reference_type == reference[0], Reservation.reference_id == reference[1]
        )
    return list((await session.execute(query)).all())


async def list_levels(
    session: AsyncSession,
    *,
    sku: str | None,
    warehouse: str | None,
    low_stock: bool,
    limit: int,
    offset: int | None = None,
    after: tuple[str, str] | None = None,
    sku_contains: str | None = None,
) -> tuple[list[Any], int | None]:
    """Levels by (SKU code, warehouse code), from `after` (the last pair of the previous page); the
    total only with `offset` (offset paging), a count that grows with the catalogue."""
    available = InventoryLevel.on_hand - InventoryLevel.reserved
    query = (
        select(
            Sku.code,
            Warehouse.code,
            InventoryLevel.on_hand,
            InventoryLevel.reserved,
            available,
            Sku.reorder_point,
            InventoryLevel.updated_at,
        )
        .join(Sku, Sku.id == InventoryLevel.sku_id)
        .join(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
    )
    conditions = []
    if sku:
        conditions.append(Sku.code == sku)
    if sku_contains:
        pattern = sku_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Sku.code.ilike(f"%{pattern}%", escape="\\"))
    if warehouse:
        conditions.append(Warehouse.code == warehouse)
    if low_stock:
        conditions.append(available <= Sku.reorder_point)
    if conditions:
        query = query.where(and_(*conditions))
    total = None
    if offset is not None:
        total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    if after is not None:
        # the first column alone as well: lets the planner start the SKU index scan at the cursor
        query = query.where(Sku.code >= after[0], tuple_(Sku.code, Warehouse.code) > tuple_(*after))
    query = query.order_by(Sku.code, Warehouse.code).limit(limit)
    rows = await session.execute(query.offset(offset) if offset else query)
    return list(rows.all()), total


async def ledger_for_sku(
    session: AsyncSession, *, sku: str, limit: int, before_id: int | None
) -> list[tuple[LedgerEntry, str]]:
    skus = await sku_ids(session, [sku])
    if sku not in skus:
        raise NotFound(f"no SKU {sku!r}", code="UNKNOWN_SKU", details={"sku": sku})
    query = (
        select(LedgerEntry, Warehouse.code)
        .join(Warehouse, Warehouse.id == LedgerEntry.warehouse_id)
        .where(LedgerEntry.sku_id == skus[sku])
    )
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    rows = await session.execute(query.order_by(LedgerEntry.id.desc()).limit(limit))
    return list(rows.all())
