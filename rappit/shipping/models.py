"""Carrier accounts (encrypted credentials), shipments with their state machine, and their timeline.

The state machine is the database's: a CHECK on the status set, and every transition is a conditional
UPDATE (`service.transition`) that names the states it may leave, so two racing callers move a row once.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
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
from sqlalchemy.orm import Mapped, mapped_column

from rappit.integrations.carriers.registry import CARRIER_NAMES
from rappit.platform.db import Base, IdMixin, TimestampMixin, utcnow
from rappit.tenancy.models import TenantMixin, org_fk

SHIPMENT_STATUSES = (
    "pending",
    "label_purchased",
    "in_transit",
    "delivered",
    "voided",
    "void_requested",
    "failed",
)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "label_purchased": ("pending",),
    "failed": ("pending",),
    "in_transit": ("label_purchased",),
    "delivered": ("in_transit",),
    "voided": ("label_purchased",),
    "void_requested": ("label_purchased",),
}
"""Target state -> the states it may be entered from."""

_CARRIERS = ",".join(repr(c) for c in CARRIER_NAMES)


class CarrierAccount(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "carrier_accounts"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "name"),
        CheckConstraint(f"carrier in ({_CARRIERS})", name="carrier_known"),
        CheckConstraint("status in ('active','disabled')", name="status_known"),
        CheckConstraint("(status = 'disabled') = (disabled_at is not null)", name="disabled_at_iff_disabled"),
        # Callback ingress knows only the account id from the URL (rappit_carrier_callback_account).
        Index("ix_carrier_accounts_id", "id"),
    )

    carrier: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(200))
    account_number: Mapped[str] = mapped_column(String(50))
    base_url: Mapped[str | None] = mapped_column(String(500))
    """None: the carrier's production host."""
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    """Fernet ciphertext of the credentials as JSON; never returned by the API."""
    callback_secret: Mapped[bytes] = mapped_column(LargeBinary)
    """Fernet ciphertext of the callback HMAC secret; shown once, at creation."""
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Shipment(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "shipments"
    __org_fk__ = False  # implied by the FKs to orders and carrier_accounts
    __extra_table_args__ = (
        org_fk("order_id", "orders"),
        org_fk("carrier_account_id", "carrier_accounts"),
        CheckConstraint(f"status in ({','.join(repr(s) for s in SHIPMENT_STATUSES)})", name="status_known"),
        # A label exists exactly in the states after a purchase.
        CheckConstraint(
            "(status in ('pending','failed')) = (carrier_shipment_id is null)", name="label_iff_purchased"
        ),
        CheckConstraint("cost_minor is null or cost_minor >= 0", name="cost_nonnegative"),
        UniqueConstraint("org_id", "idempotency_key"),
        Index("ix_shipments_order", "org_id", "order_id", "created_at"),
        Index("ix_shipments_pending", "created_at", postgresql_where=text("status = 'pending'")),
        # A carrier callback names its shipment by tracking number or carrier shipment id.
        Index("ix_shipments_carrier_ref", "carrier_shipment_id"),
        Index(
            "ix_shipments_tracking",
            "tracking_numbers",
            postgresql_using="gin",
            postgresql_ops={"tracking_numbers": "jsonb_path_ops"},
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column()
    carrier_account_id: Mapped[uuid.UUID] = mapped_column()
    carrier: Mapped[str] = mapped_column(String(30))
    service: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    ship_date: Mapped[date] = mapped_column(Date)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)
    """The label request as sent (addresses, parcels, customs): what recovery needs to ask again."""
    lines: Mapped[list[Any]] = mapped_column(JSONB)
    """[{sku, quantity}] this shipment carries: what ship commits."""
    carrier_shipment_id: Mapped[str | None] = mapped_column(String(100))
    tracking_numbers: Mapped[list[Any] | None] = mapped_column(JSONB(none_as_null=True))
    label_document: Mapped[bytes | None] = mapped_column(LargeBinary)
    label_format: Mapped[str | None] = mapped_column(String(10))
    cost_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    """The buyer's Idempotency-Key: a retry finds this row (whatever its state) instead of buying again."""
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class ShipmentEvent(TenantMixin, Base):
    """A shipment's timeline: every transition and carrier answer, in order."""

    __tablename__ = "shipment_events"
    __org_fk__ = False
    __extra_table_args__ = (
        org_fk("shipment_id", "shipments"),
        Index("ix_shipment_events_shipment", "org_id", "shipment_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    shipment_id: Mapped[uuid.UUID] = mapped_column()
    kind: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


PUSH_STATUSES = ("pending", "pushed", "failed")


class FulfillmentPush(IdMixin, TimestampMixin, TenantMixin, Base):
    """The outbox row that tells the order's sales channel a shipment left: written in the transaction
    that moves the shipment to in_transit, so a hand-over is never without its push; one per shipment."""

    __tablename__ = "fulfillment_pushes"
    __org_fk__ = False  # implied by the FKs to shipments, orders and channels
    __extra_table_args__ = (
        org_fk("shipment_id", "shipments"),
        org_fk("order_id", "orders"),
        org_fk("channel_id", "channels"),
        UniqueConstraint("org_id", "shipment_id"),
        CheckConstraint(f"status in ({','.join(repr(s) for s in PUSH_STATUSES)})", name="status_known"),
        CheckConstraint("(status = 'pushed') = (pushed_at is not null)", name="pushed_at_iff_pushed"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        Index("ix_fulfillment_pushes_order", "org_id", "order_id"),
        Index("ix_fulfillment_pushes_pending", "created_at", postgresql_where=text("status = 'pending'")),
    )

    shipment_id: Mapped[uuid.UUID] = mapped_column()
    order_id: Mapped[uuid.UUID] = mapped_column()
    channel_id: Mapped[uuid.UUID] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    tracking_number: Mapped[str] = mapped_column(String(100))
    carrier: Mapped[str] = mapped_column(String(30))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    external_ref: Mapped[str | None] = mapped_column(String(100))
    """The channel's id of what the push created (Shopify fulfillment id, WooCommerce note id)."""
    pushed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


CALLBACK_STATUSES = ("pending", "processed", "ignored", "failed", "dead")


class CarrierCallbackEvent(IdMixin, TenantMixin, Base):
    """The carrier callbacks' durable inbox: a verified callback, stored before it is acknowledged and
    applied to its shipment exactly once (`rappit.shipping.callbacks`)."""

    __tablename__ = "carrier_callback_events"
    __org_fk__ = False  # implied by the FK to carrier_accounts
    __extra_table_args__ = (
        org_fk("account_id", "carrier_accounts"),
        org_fk("shipment_id", "shipments"),
        # The carrier's event id, once per account: a redelivery stores nothing new.
        UniqueConstraint("org_id", "account_id", "carrier_event_id"),
        CheckConstraint(f"status in ({','.join(repr(s) for s in CALLBACK_STATUSES)})", name="status_known"),
        CheckConstraint(
            "(status in ('processed','ignored')) = (processed_at is not null)", name="processed_at_iff_done"
        ),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        Index(
            "ix_carrier_callback_events_pending",
            "received_at",
            postgresql_where=text("status in ('pending','failed')"),
        ),
        Index("ix_carrier_callback_events_shipment", "org_id", "shipment_id"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column()
    """The carrier account the callback was addressed to (its URL)."""
    carrier: Mapped[str] = mapped_column(String(30))
    carrier_event_id: Mapped[str] = mapped_column(String(200))
    tracking_number: Mapped[str] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(100))
    """Our shipment id as the carrier echoes it (customer reference), if it does."""
    tracking_status: Mapped[str] = mapped_column(String(30))
    """The carrier's code folded into TrackingStatus (in_transit, delivered, ...)."""
    code: Mapped[str] = mapped_column(String(30))
    description: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The raw body exactly as signed."""
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    request_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    shipment_id: Mapped[uuid.UUID | None] = mapped_column()
    """The shipment it was applied to; None while pending, or when it named no shipment of ours."""
    outcome: Mapped[str | None] = mapped_column(String(40))
    """What applying it did: shipped, delivered, shipped_and_delivered, voided, recorded, unknown_shipment."""
