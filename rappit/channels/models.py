"""Sales channels of an org (Shopify stores, WooCommerce sites) and their encrypted secrets."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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
from sqlalchemy.orm import Mapped, mapped_column

from rappit.integrations.channels.registry import CHANNEL_TYPES
from rappit.platform.db import Base, IdMixin, TimestampMixin, utcnow
from rappit.tenancy.models import TenantMixin, org_fk


class Channel(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "channels"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "type", "address"),
        CheckConstraint(f"type in ({','.join(repr(t) for t in CHANNEL_TYPES)})", name="type_known"),
        CheckConstraint("status in ('active','disabled')", name="status_known"),
        CheckConstraint("(status = 'disabled') = (disabled_at is not null)", name="disabled_at_iff_disabled"),
        org_fk("warehouse_id", "warehouses"),
        # Webhook ingress knows only the channel id from the URL (rappit_webhook_channel).
        Index("ix_channels_id", "id"),
    )

    type: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(255))
    """Shopify: the shop domain (acme.myshopify.com). WooCommerce: the store URL."""
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    webhook_secret: Mapped[bytes] = mapped_column(LargeBinary)
    """Fernet ciphertext (ENCRYPTION_KEY); never returned by the API after creation or rotation."""
    api_credentials: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Fernet ciphertext of the channel's API access token (Shopify Admin API), if given."""
    secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    warehouse_id: Mapped[uuid.UUID | None] = mapped_column()
    """Where this channel's orders reserve stock (default: the org's first warehouse by code)."""
    reconciled_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Reconciliation watermark: orders updated up to here have been checked against the channel."""
    ingress_version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    """Raised by a trigger (migration 0013) whenever the secret, status, address or type changes:
    webhook ingress stores a delivery only if it was verified against the channel at this version."""


class WebhookEvent(IdMixin, TenantMixin, Base):
    """The durable inbox: a verified delivery, stored before it is acknowledged, processed exactly once."""

    __tablename__ = "webhook_events"
    __org_fk__ = False  # implied by the FK to channels
    __extra_table_args__ = (
        org_fk("channel_id", "channels"),
        UniqueConstraint("org_id", "channel_id", "dedup_key"),
        CheckConstraint("status in ('pending','processed','ignored','failed','dead')", name="status_known"),
        CheckConstraint(
            "(status in ('processed','ignored')) = (processed_at is not null)", name="processed_at_iff_done"
        ),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        CheckConstraint("failures >= 0 and failures <= attempts", name="failures_within_attempts"),
        Index(  # the workers' claims: per org, oldest first (rappit.workers.inbox)
            "ix_webhook_events_claim",
            "org_id",
            "received_at",
            postgresql_where=text("status in ('pending','failed')"),
        ),
        Index("ix_webhook_events_channel", "org_id", "channel_id", "received_at"),
        Index(
            "ix_webhook_events_external_id",
            "org_id",
            "channel_id",
            "external_id",
            postgresql_where=text("external_id is not null"),
        ),
        Index(  # the retention job's batches: done events, oldest first
            "ix_webhook_events_done",
            "processed_at",
            postgresql_where=text("status in ('processed','ignored')"),
        ),
    )

    channel_id: Mapped[uuid.UUID] = mapped_column()
    topic: Mapped[str] = mapped_column(String(100))
    delivery_id: Mapped[str] = mapped_column(String(200))
    dedup_key: Mapped[str] = mapped_column(String(300))
    """What identifies the change (the adapter decides): Shopify's event id, WooCommerce's topic +
    order id + date_modified_gmt. Never a delivery id alone: WooCommerce's repeat within a second."""
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    """The raw body exactly as signed."""
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    triggered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Runs started (counted when claimed, before any work)."""
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Runs that recorded a failure; attempts - failures - 1 runs died without an outcome."""
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    order_id: Mapped[uuid.UUID | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Not claimed before this: a claim's lease (a worker is on it) or a failed attempt's backoff.
    NULL: claimable now."""
    external_id: Mapped[str | None] = mapped_column(String(100))
    """The channel's order id the payload carried, set when the event is applied: a deletion of an order
    not seen yet is remembered by it, so the order's late create is made cancelled."""
