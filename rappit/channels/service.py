"""Channels: create, list, rotate the webhook secret, disable. Secrets are encrypted at rest."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels.models import Channel
from rappit.integrations.channels.base import ChannelAccess, ChannelAdapter
from rappit.inventory.catalogue import warehouse_ids
from rappit.inventory.models import Warehouse
from rappit.platform.crypto import SecretBox
from rappit.platform.db import add_unique, get_or_404, utcnow
from rappit.platform.errors import BadRequest, Conflict


@dataclass(frozen=True, slots=True)
class WithSecret:
    channel: Channel
    webhook_secret: str
    """Plaintext, returned once (creation, rotation) and never stored unencrypted."""


async def create_channel(
    session: AsyncSession,
    box: SecretBox,
    adapter: ChannelAdapter,
    *,
    name: str,
    address: str,
    webhook_secret: str | None = None,
    api_access_token: str | None = None,
    warehouse_code: str | None = None,
) -> WithSecret:
    """`webhook_secret` may be given (Shopify signs with the app's secret); otherwise one is made."""
    try:
        address = adapter.normalize_address(address)
    except ValueError as exc:
        raise BadRequest(str(exc), code="INVALID_ADDRESS") from None
    secret = webhook_secret or secrets.token_urlsafe(32)
    channel = Channel(
        warehouse_id=await _pin_warehouse(session, warehouse_code),
        type=adapter.type,
        name=name.strip(),
        address=address,
        webhook_secret=box.encrypt(secret),
        api_credentials=box.encrypt(api_access_token) if api_access_token else None,
    )
    await add_unique(
        session,
        channel,
        Conflict(f"a {adapter.type} channel for {channel.address} already exists", code="CHANNEL_EXISTS"),
    )
    return WithSecret(channel, secret)


async def _pin_warehouse(session: AsyncSession, code: str | None) -> uuid.UUID | None:
    """The warehouse a new channel's orders reserve from: the one named, else the org's first by code
    now (pinned: a warehouse added later never takes over), else none until the first order."""
    if code is not None:
        found = await warehouse_ids(session, [code])
        if code not in found:
            raise BadRequest(f"no warehouse {code!r}", code="UNKNOWN_WAREHOUSE")
        return found[code]
    return (await session.execute(select(Warehouse.id).order_by(Warehouse.code).limit(1))).scalar()


async def get_channel(session: AsyncSession, channel_id: uuid.UUID) -> Channel:
    return await get_or_404(session, Channel, channel_id, "channel")


async def list_channels(session: AsyncSession, *, limit: int, offset: int) -> list[Channel]:
    rows = await session.execute(
        select(Channel).order_by(Channel.created_at, Channel.id).limit(limit).offset(offset)
    )
    return list(rows.scalars())


async def rotate_secret(session: AsyncSession, box: SecretBox, channel_id: uuid.UUID) -> WithSecret:
    channel = await get_channel(session, channel_id)
    secret = secrets.token_urlsafe(32)
    channel.webhook_secret = box.encrypt(secret)
    channel.secret_rotated_at = utcnow()
    return WithSecret(channel, secret)


async def update_settings(
    session: AsyncSession,
    box: SecretBox,
    channel_id: uuid.UUID,
    *,
    api_access_token: str | None,
    warehouse_code: str | None,
) -> Channel:
    channel = await get_channel(session, channel_id)
    if api_access_token is not None:
        channel.api_credentials = box.encrypt(api_access_token)
    if warehouse_code is not None:
        found = await warehouse_ids(session, [warehouse_code])
        if warehouse_code not in found:
            raise BadRequest(f"no warehouse {warehouse_code!r}", code="UNKNOWN_WAREHOUSE")
        channel.warehouse_id = found[warehouse_code]
    return channel


async def disable(session: AsyncSession, channel_id: uuid.UUID) -> Channel:
    channel = await get_channel(session, channel_id)
    if channel.status != "disabled":
        channel.status = "disabled"
        channel.disabled_at = utcnow()
    return channel


async def reencrypt_all(session: AsyncSession, box: SecretBox) -> int:
    """After putting a new key first in ENCRYPTION_KEY: re-encrypt this org's secrets with it."""
    count = 0
    for channel in (await session.execute(select(Channel))).scalars():
        channel.webhook_secret = box.rotate(channel.webhook_secret)
        if channel.api_credentials:
            channel.api_credentials = box.rotate(channel.api_credentials)
        count += 1
    return count


def access(box: SecretBox, channel: Channel) -> ChannelAccess:
    """What an adapter needs to call the channel's API (its token decrypted for this call)."""
    token = box.decrypt(channel.api_credentials) if channel.api_credentials else None
    return ChannelAccess(address=channel.address, token=token)
