"""Canonical orders, their immutable line snapshots, per-org numbering and the event timeline."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from rappit.integrations.channels.registry import ORDER_SOURCES
from rappit.platform.db import Base, IdMixin, utcnow
from rappit.tenancy.models import TenantMixin, org_fk

ORDER_STATUSES = ("open", "on_hold", "cancelled")


class OrderCounter(IdMixin, TenantMixin, Base):
    """The atomic per-org, per-source counter behind order numbers: one row, bumped by an upsert
    whose row lock serializes concurrent allocations inside their transactions."""

    __tablename__ = "order_counters"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "source"),
        CheckConstraint("last_value > 0", name="positive"),
    )

    source: Mapped[str] = mapped_column(String(1))
    last_value: Mapped[int] = mapped_column(BigInteger)


class Order(IdMixin, TenantMixin, Base):
    __tablename__ = "orders"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "number"),
        # One order per channel order: a second create (or a late create after an update) is a no-op.
        UniqueConstraint("org_id", "channel_id", "external_id"),
        org_fk("channel_id", "channels"),
        CheckConstraint("status in ('open','on_hold','cancelled')", name="status_known"),
        CheckConstraint(f"source in ({','.join(repr(s) for s in ORDER_SOURCES)})", name="source_known"),
        CheckConstraint("(source = 'manual') = (channel_id is null)", name="channel_iff_not_manual"),
        # State that code sets together, kept together by the database.
        CheckConstraint("(status = 'on_hold') = (hold_reason is not null)", name="hold_reason_iff_on_hold"),
        CheckConstraint(
            "(status = 'cancelled') = (cancelled_at is not null)", name="cancelled_at_iff_cancelled"
        ),
        # Keyset paging newest first by (created_at, id), with or without a status or channel filter.
        Index("ix_orders_org_created", "org_id", "created_at", "id"),
        Index("ix_orders_org_status_created", "org_id", "status", "created_at", "id"),
        Index("ix_orders_org_channel_created", "org_id", "channel_id", "created_at", "id"),
    )

    number: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(20))
    channel_id: Mapped[uuid.UUID | None] = mapped_column()
    external_id: Mapped[str | None] = mapped_column(String(100))
    external_name: Mapped[str | None] = mapped_column(String(100))
    """The channel's own order name or number (Shopify "#1001", WooCommerce "1001")."""
    status: Mapped[str] = mapped_column(String(20))
    hold_reason: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))  # None is SQL NULL
    currency: Mapped[str] = mapped_column(String(3))
    external_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """The platform's updated timestamp of the newest payload applied: older payloads are ignored."""
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrderLine(IdMixin, TenantMixin, Base):
    """An immutable snapshot of one line as the channel sent it; edits add new versions."""

    __tablename__ = "order_lines"
    __org_fk__ = False
    __extra_table_args__ = (
        org_fk("order_id", "orders"),
        UniqueConstraint("org_id", "order_id", "version", "position"),
        CheckConstraint("quantity >= 0", name="quantity_nonnegative"),
        CheckConstraint("version >= 1 and position >= 1", name="version_position_positive"),
        CheckConstraint("unit_price_minor >= 0", name="price_nonnegative"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column()
    version: Mapped[int] = mapped_column(Integer)
    """Lines of the order's current version are the order; older versions are its history."""
    position: Mapped[int] = mapped_column(Integer)
    external_line_id: Mapped[str | None] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(100))
    """None for lines that reserve nothing (custom items, gift cards)."""
    title: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class OrderEvent(TenantMixin, Base):
    """The order's timeline: created, updated, held, reserved, released, cancelled, ignored-stale..."""

    __tablename__ = "order_events"
    __org_fk__ = False
    __extra_table_args__ = (
        org_fk("order_id", "orders"),
        Index("ix_order_events_order", "org_id", "order_id", "id"),
        Index("ix_order_events_created", "created_at"),  # the retention job's batches
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column()
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    webhook_event_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    note: Mapped[str | None] = mapped_column(Text)
