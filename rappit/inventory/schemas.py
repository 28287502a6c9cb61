"""Shapes at the HTTP edge for inventory."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# Same rule as the database CHECK: no slash, no control characters (C0, DEL, C1), no outer spaces.
SkuCode = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[^/\x00-\x1f\x7f-\x9f\s](?:[^/\x00-\x1f\x7f-\x9f]*[^/\x00-\x1f\x7f-\x9f\s])?$",
    ),
]
WarehouseCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class SkuIn(msgspec.Struct, forbid_unknown_fields=True):
    code: SkuCode
    name: Annotated[str, msgspec.Meta(max_length=300)] = ""
    reorder_point: Annotated[int, msgspec.Meta(ge=0)] = 0
    hs_code: Annotated[str, msgspec.Meta(pattern="^[0-9]{6,10}$")] | None = None
    country_of_origin: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] | None = None
    customs_value_minor: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Per unit, in customs_currency (both or neither)."""
    customs_currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] | None = None
    weight_grams: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None


class SkuOut(msgspec.Struct):
    id: uuid.UUID
    code: str
    name: str
    reorder_point: int
    hs_code: str | None = None
    country_of_origin: str | None = None
    customs_value_minor: int | None = None
    customs_currency: str | None = None
    weight_grams: int | None = None

    @classmethod
    def of(cls, s: Any) -> SkuOut:
        return cls(
            s.id,
            s.code,
            s.name,
            s.reorder_point,
            s.hs_code,
            s.country_of_origin,
            s.customs_value_minor,
            s.customs_currency,
            s.weight_grams,
        )


class WarehouseIn(msgspec.Struct, forbid_unknown_fields=True):
    code: WarehouseCode
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class WarehouseOut(msgspec.Struct):
    id: uuid.UUID
    code: str
    name: str


class LevelOut(msgspec.Struct):
    sku: str
    warehouse_code: str
    on_hand: int
    reserved: int
    available: int
    reorder_point: int
    low_stock: bool
    updated_at: datetime


class LevelPage(msgspec.Struct):
    """Keyset paging by (SKU code, warehouse code) by default: pass `next_cursor` back as `cursor`.
    `total` is counted only for offset paging (`offset=`)."""

    items: list[LevelOut]
    total: int | None
    limit: int
    offset: int | None
    next_cursor: str | None = None


class AdjustIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: SkuCode
    warehouse_code: WarehouseCode
    quantity: Annotated[int, msgspec.Meta(ge=-1_000_000_000, le=1_000_000_000)]
    mode: Literal["delta", "set"] = "delta"
    reason: Literal["receive", "adjust"] = "adjust"
    note: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class AdjustOut(msgspec.Struct):
    sku: str
    warehouse_code: str
    on_hand_before: int
    on_hand: int
    reserved: int
    available: int
    changed: bool


class LedgerOut(msgspec.Struct):
    id: int
    warehouse_code: str
    reason: str
    on_hand_before: int
    on_hand_after: int
    on_hand_delta: int
    reserved_before: int
    reserved_after: int
    reserved_delta: int
    actor: str
    reference_type: str | None
    reference_id: str | None
    request_id: str | None
    note: str | None
    created_at: datetime


class LedgerPage(msgspec.Struct):
    sku: str
    items: list[LedgerOut]
    next_before_id: int | None


class ReservationLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: SkuCode
    warehouse_code: WarehouseCode
    quantity: Quantity


class ReservationIn(msgspec.Struct, forbid_unknown_fields=True):
    lines: Annotated[list[ReservationLineIn], msgspec.Meta(min_length=1, max_length=500)]
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    expires_in_seconds: Annotated[int, msgspec.Meta(ge=1, le=90 * 86400)] | None = None


class ReservationOut(msgspec.Struct):
    id: uuid.UUID
    sku: str
    warehouse_code: str
    quantity: int
    status: str
    reference_type: str
    reference_id: str | None
    expires_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    close_reason: str | None


class ReservationsOut(msgspec.Struct):
    reservations: list[ReservationOut]


class BulkError(msgspec.Struct):
    line: int
    sku: str
    code: str
    message: str


class BulkSummary(msgspec.Struct):
    import_id: str
    received: int
    applied: int
    unchanged: int
    failed: int
    errors: list[BulkError]
