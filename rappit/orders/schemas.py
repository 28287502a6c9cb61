"""Shapes at the HTTP edge for orders."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from rappit.inventory.schemas import SkuCode


class OrderLineOut(msgspec.Struct):
    position: int
    sku: str | None
    title: str
    quantity: int
    unit_price_minor: int
    currency: str
    external_line_id: str | None


class ReservationRef(msgspec.Struct):
    id: uuid.UUID
    sku: str
    warehouse_code: str
    quantity: int
    status: str


class OrderEventOut(msgspec.Struct):
    kind: str
    detail: dict[str, Any]
    created_at: datetime
    webhook_event_id: uuid.UUID | None


class OrderOut(msgspec.Struct):
    id: uuid.UUID
    number: str
    source: str
    channel_id: uuid.UUID | None
    external_id: str | None
    external_name: str | None
    status: str
    hold_reason: dict[str, Any] | None
    currency: str
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None


class OrderDetailOut(msgspec.Struct):
    order: OrderOut
    lines: list[OrderLineOut]
    reservations: list[ReservationRef]
    timeline: list[OrderEventOut]


class OrderPage(msgspec.Struct):
    """Keyset paging by default (newest first): pass `next_cursor` back as `cursor`, null on the last
    page. `total` is counted only for offset paging (`offset=`), whose cost grows with the history."""

    items: list[OrderOut]
    total: int | None
    limit: int
    offset: int | None
    next_cursor: str | None = None


class ManualLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: SkuCode
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    title: Annotated[str, msgspec.Meta(max_length=500)] = ""
    unit_price_minor: Annotated[int, msgspec.Meta(ge=0)] = 0


class ManualOrderIn(msgspec.Struct, forbid_unknown_fields=True):
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    lines: Annotated[list[ManualLineIn], msgspec.Meta(min_length=1, max_length=500)]
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
