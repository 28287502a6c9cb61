"""Sales channels of an org (Shopify stores, WooCommerce sites) and their encrypted secrets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from rappit.platform.db import Base, IdMixin, TimestampMixin
from rappit.tenancy.models import TenantMixin

CHANNEL_TYPES = ("shopify", "woocommerce")


class Channel(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "channels"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "type", "address"),
        CheckConstraint("type in ('shopify','woocommerce')", name="type_known"),
        CheckConstraint("status in ('active','disabled')", name="status_known"),
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
