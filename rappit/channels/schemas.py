"""Shapes at the HTTP edge for channels. No response ever carries a stored secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from rappit.channels.models import Channel, WebhookEvent
from rappit.integrations.channels.registry import CHANNEL_TYPES
from rappit.inventory.schemas import WarehouseCode
from rappit.platform.db import utcnow


class ChannelIn(msgspec.Struct, forbid_unknown_fields=True):
    type: Annotated[
        str, msgspec.Meta(pattern=f"^({'|'.join(CHANNEL_TYPES)})$", description=" | ".join(CHANNEL_TYPES))
    ]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=255)]
    """Shopify shop domain or WooCommerce store URL."""
    webhook_secret: Annotated[str, msgspec.Meta(min_length=16, max_length=500)] | None = None
    api_access_token: Annotated[str, msgspec.Meta(min_length=8, max_length=500)] | None = None
    warehouse_code: WarehouseCode | None = None
    """Where this channel's orders reserve stock (default: the org's first warehouse by code, pinned)."""


class ChannelOut(msgspec.Struct):
    id: uuid.UUID
    type: str
    name: str
    address: str
    status: str
    has_api_credentials: bool
    webhook_url: str
    created_at: datetime
    secret_rotated_at: datetime | None
    disabled_at: datetime | None
    reconciled_until: datetime | None = None
    """Reconciliation watermark: orders updated before it have been checked against the channel."""
    reconcile_lag_seconds: float | None = None
    """How far reconciliation is behind now (null for a channel it does not read: no API token)."""

    @classmethod
    def of(cls, channel: Channel, base_url: str) -> ChannelOut:
        return cls(
            id=channel.id,
            type=channel.type,
            name=channel.name,
            address=channel.address,
            status=channel.status,
            has_api_credentials=channel.api_credentials is not None,
            webhook_url=f"{base_url}/webhooks/{channel.type}/{channel.id}",
            created_at=channel.created_at,
            secret_rotated_at=channel.secret_rotated_at,
            disabled_at=channel.disabled_at,
            reconciled_until=channel.reconciled_until,
            reconcile_lag_seconds=(
                round((utcnow() - channel.reconciled_until).total_seconds(), 1)
                if channel.reconciled_until and channel.api_credentials is not None
                else None
            ),
        )


class ChannelSettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    api_access_token: Annotated[str, msgspec.Meta(min_length=8, max_length=500)] | None = None
    warehouse_code: WarehouseCode | None = None


class ChannelWithSecretOut(msgspec.Struct):
    channel: ChannelOut
    webhook_secret: str
    """Shown once: configure it in the channel's webhook settings now."""


class WebhookEventOut(msgspec.Struct):
    id: uuid.UUID
    topic: str
    delivery_id: str
    status: str
    attempts: int
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None
    order_id: uuid.UUID | None

    @classmethod
    def of(cls, e: WebhookEvent) -> WebhookEventOut:
        return cls(
            id=e.id,
            topic=e.topic,
            delivery_id=e.delivery_id,
            status=e.status,
            attempts=e.attempts,
            last_error=e.last_error,
            received_at=e.received_at,
            processed_at=e.processed_at,
            order_id=e.order_id,
        )
