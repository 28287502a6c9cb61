"""The catalogue: SKUs and warehouses, and resolving their codes to ids."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, String, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.models import Sku, Warehouse
from rappit.platform.db import add_unique
from rappit.platform.errors import BusinessRuleViolation, Conflict


async def create_sku(
    session: AsyncSession, *, code: str, name: str = "", reorder_point: int = 0, **customs: Any
) -> Sku:
    """`customs`: hs_code, country_of_origin, customs_value_minor + customs_currency, weight_grams."""
    if (customs.get("customs_value_minor") is None) != (customs.get("customs_currency") is None):
        raise BusinessRuleViolation(
            "customs_value_minor and customs_currency go together", code="CUSTOMS_VALUE_NEEDS_CURRENCY"
        )
    sku = Sku(code=code.strip(), name=name, reorder_point=reorder_point, **customs)
    await add_unique(
        session, sku, Conflict(f"SKU {code!r} already exists", code="SKU_EXISTS", details={"sku": code})
    )
    return sku


async def create_warehouse(session: AsyncSession, *, code: str, name: str = "") -> Warehouse:
    warehouse = Warehouse(code=code.strip(), name=name)
    await add_unique(
        session,
        warehouse,
        Conflict(f"warehouse {code!r} already exists", code="WAREHOUSE_EXISTS", details={"warehouse": code}),
    )
    return warehouse


def _codes(codes: Sequence[str]) -> Any:
    """One array parameter, however many codes (an IN list would hit asyncpg's 32,767-parameter cap)."""
    return any_(bindparam("codes", sorted(set(codes)), type_=ARRAY(String)))


async def sku_ids(session: AsyncSession, codes: Sequence[str]) -> dict[str, uuid.UUID]:
    rows = await session.execute(select(Sku.code, Sku.id).where(Sku.code == _codes(codes)))
    return dict(rows.all())


async def warehouse_ids(session: AsyncSession, codes: Sequence[str]) -> dict[str, uuid.UUID]:
    rows = await session.execute(select(Warehouse.code, Warehouse.id).where(Warehouse.code == _codes(codes)))
    return dict(rows.all())


async def resolve_pair(session: AsyncSession, sku: str, warehouse: str) -> tuple[uuid.UUID, uuid.UUID]:
    skus, whs = await sku_ids(session, [sku]), await warehouse_ids(session, [warehouse])
    if sku not in skus:
        raise BusinessRuleViolation(f"no SKU {sku!r}", code="UNKNOWN_SKU", details={"sku": sku})
    if warehouse not in whs:
        raise BusinessRuleViolation(
            f"no warehouse {warehouse!r}", code="UNKNOWN_WAREHOUSE", details={"warehouse": warehouse}
        )
    return skus[sku], whs[warehouse]


async def list_skus(session: AsyncSession, *, limit: int, offset: int) -> list[Sku]:
    return list((await session.execute(select(Sku).order_by(Sku.code).limit(limit).offset(offset))).scalars())


async def list_warehouses(session: AsyncSession, *, limit: int, offset: int) -> list[Warehouse]:
    rows = await session.execute(select(Warehouse).order_by(Warehouse.code).limit(limit).offset(offset))
    return list(rows.scalars())
