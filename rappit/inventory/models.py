"""SKUs, warehouses, stock levels, reservations and the audit ledger.

The invariants are the database's: stock can never go negative or below what is reserved
(CHECKs on inventory_levels), a ledger row's before/after/delta always add up (CHECKs on
inventory_ledger), and every reference between these rows stays inside one org (org-qualified FKs).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, deferred, mapped_column

from rappit.platform.db import Base, IdMixin, TimestampMixin, utcnow
from rappit.tenancy.models import TenantMixin, org_fk

LEDGER_REASONS = ("receive", "adjust", "import", "reserve", "release", "commit", "expire")
RESERVATION_STATUSES = ("active", "released", "committed")


class Sku(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "skus"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "code"),
        # No slash or control characters: the code is a URL path segment (/inventory/{sku}/ledger).
        CheckConstraint(
            "length(code) between 1 and 100 and code = btrim(code) and code !~ '[/[:cntrl:]]'",
            name="code_format",
        ),
        CheckConstraint("reorder_point >= 0", name="reorder_point_nonnegative"),
        CheckConstraint("hs_code is null or hs_code ~ '^[0-9]{6,10}$'", name="hs_code_format"),
        CheckConstraint(
            "country_of_origin is null or country_of_origin ~ '^[A-Z]{2}$'", name="country_of_origin_format"
        ),
        CheckConstraint(
            "(customs_value_minor is null) = (customs_currency is null)", name="customs_value_has_currency"
        ),
        CheckConstraint(
            "customs_value_minor is null or customs_value_minor > 0", name="customs_value_positive"
        ),
        CheckConstraint("weight_grams is null or weight_grams > 0", name="weight_positive"),
    )

    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300), default="", server_default="")
    reorder_point: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """At or below this many available units the SKU counts as low stock."""
    # Customs facts for cross-border shipments (None: not known; a shipment needing one names it).
    hs_code: Mapped[str | None] = mapped_column(String(10))
    country_of_origin: Mapped[str | None] = mapped_column(String(2))
    """Where the goods were made (ISO alpha-2)."""
    customs_value_minor: Mapped[int | None] = mapped_column(BigInteger)
    """Per unit, in `customs_currency`; without it a shipment declares the order line's price."""
    customs_currency: Mapped[str | None] = mapped_column(String(3))
    weight_grams: Mapped[int | None] = mapped_column(Integer)
    """Net weight of one unit."""


class Warehouse(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "warehouses"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "code"),
        CheckConstraint("code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$'", name="code_format"),
    )

    code: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")


class InventoryLevel(IdMixin, TenantMixin, Base):
    """Stock of one SKU in one warehouse. available = on_hand - reserved, never negative."""

    __tablename__ = "inventory_levels"
    __org_fk__ = False  # implied by the FKs to skus and warehouses
    __extra_table_args__ = (
        UniqueConstraint("org_id", "sku_id", "warehouse_id"),
        org_fk("sku_id", "skus"),
        org_fk("warehouse_id", "warehouses"),
        CheckConstraint("on_hand >= 0", name="on_hand_nonnegative"),
        CheckConstraint("reserved >= 0", name="reserved_nonnegative"),
        CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
    )

    sku_id: Mapped[uuid.UUID] = mapped_column()
    warehouse_id: Mapped[uuid.UUID] = mapped_column()
    on_hand: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reserved: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class Reservation(IdMixin, TimestampMixin, TenantMixin, Base):
    """Reserved quantity of one level, tied to a reference (an order, or a manual hold)."""

    __tablename__ = "reservations"
    __org_fk__ = False  # implied by the FK to inventory_levels
    __extra_table_args__ = (
        org_fk("level_id", "inventory_levels"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("status in ('active','released','committed')", name="status_known"),
        CheckConstraint("(status = 'active') = (closed_at is null)", name="closed_iff_not_active"),
        Index(
            "ix_reservations_active_expiry",
            "expires_at",
            postgresql_where=text("status = 'active' and expires_at is not null"),
        ),
        Index("ix_reservations_org_reference", "org_id", "reference_type", "reference_id"),
        Index(
            "ix_reservations_org_level_active",
            "org_id",
            "level_id",
            postgresql_where=text("status = 'active'"),
        ),
    )

    level_id: Mapped[uuid.UUID] = mapped_column()
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    reference_type: Mapped[str] = mapped_column(String(30))
    """order | manual (later: order_line, shipment)."""
    reference_id: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    close_reason: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(100))


class LedgerEntry(TenantMixin, Base):
    """One row per change of on_hand or reserved, written in the same statement as the change."""

    __tablename__ = "inventory_ledger"
    __org_fk__ = False  # implied by the FK to inventory_levels
    __extra_table_args__ = (
        org_fk("level_id", "inventory_levels"),
        CheckConstraint(f"reason in ({', '.join(repr(r) for r in LEDGER_REASONS)})", name="reason_known"),
        CheckConstraint("on_hand_after = on_hand_before + on_hand_delta", name="on_hand_adds_up"),
        CheckConstraint("reserved_after = reserved_before + reserved_delta", name="reserved_adds_up"),
        CheckConstraint("on_hand_delta <> 0 or reserved_delta <> 0", name="changes_something"),
        Index("ix_inventory_ledger_org_sku", "org_id", "sku_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    level_id: Mapped[uuid.UUID] = mapped_column()
    sku_id: Mapped[uuid.UUID] = mapped_column()
    warehouse_id: Mapped[uuid.UUID] = mapped_column()
    reason: Mapped[str] = mapped_column(String(20))
    on_hand_before: Mapped[int] = mapped_column(Integer)
    on_hand_after: Mapped[int] = mapped_column(Integer)
    on_hand_delta: Mapped[int] = mapped_column(Integer)
    reserved_before: Mapped[int] = mapped_column(Integer)
    reserved_after: Mapped[int] = mapped_column(Integer)
    reserved_delta: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(100))
    """kind:id of who caused it (user, token, channel, system)."""
    reference_type: Mapped[str | None] = mapped_column(String(30))
    reference_id: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


IMPORT_KINDS = ("stock", "skus")
IMPORT_STATUSES = ("queued", "running", "done", "failed")


class Import(IdMixin, TimestampMixin, TenantMixin, Base):
    """One bulk import (stock levels or the catalogue), small ones run in their request and big ones
    as a job. The uploaded file is kept here, committed before the 202, so an API or worker that dies
    loses nothing: the job (or the sweeper) finds the row and runs it. An import is applied whole, in
    one transaction with its `done` row, or not at all."""

    __tablename__ = "imports"
    __extra_table_args__ = (
        CheckConstraint(f"kind in ({', '.join(repr(k) for k in IMPORT_KINDS)})", name="kind_known"),
        CheckConstraint(f"status in ({', '.join(repr(s) for s in IMPORT_STATUSES)})", name="status_known"),
        CheckConstraint("(status = 'done') = (summary is not null)", name="summary_iff_done"),
        CheckConstraint("processed_rows >= 0 and attempts >= 0", name="counts_nonnegative"),
        Index("ix_imports_unfinished", "created_at", postgresql_where=text("status in ('queued','running')")),
        Index("ix_imports_org_created", "org_id", "created_at"),
    )

    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    content_type: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str | None] = mapped_column(String(10))
    """Stock imports: the default mode (set | add) for rows without one."""
    body: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    """The uploaded file (job imports); None for an import applied in its request."""
    size_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_rows: Mapped[int | None] = mapped_column(Integer)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """When done: the same summary a small import answers with (every rejected line included)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
