"""Background work of the orders domain, with its dependencies passed in (the arq jobs in
`rappit.workers` are thin wrappers): applying an inbox event, and reconciling channels.

Both go through the same idempotent `service.apply_channel_order`, so an order arriving by webhook,
by a re-run, or by reconciliation is applied once.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.channels import service as channels
from rappit.channels.models import Channel, WebhookEvent
from rappit.integrations.channels.base import OperationNotSupported, TopicKind
from rappit.integrations.channels.canonical import CanonicalOrder, decode_json
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.orders import service
from rappit.orders.models import Order
from rappit.platform.crypto import SecretBox
from rappit.platform.db import provide_session, utcnow
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.orders.jobs")


async def _canonical(
    registry: ChannelRegistry, box: SecretBox, channel: Channel, event: WebhookEvent
) -> CanonicalOrder | None:
    """Map the stored payload to a canonical order; None for topics Rappit does not act on."""
    adapter = registry[channel.type]
    kind = adapter.classify(event.topic)
    if kind is TopicKind.IGNORED:
        return None
    data = decode_json(event.payload)
    if kind is TopicKind.EDIT:  # a delta: apply the whole order as the channel has it now
        data = await adapter.fetch_order(channels.access(box, channel), adapter.edited_order_id(data))
        kind = TopicKind.ORDER
    return adapter.map_order(data, kind)


async def apply_event(
    session: AsyncSession, registry: ChannelRegistry, box: SecretBox, event: WebhookEvent
) -> tuple[Order | None, str]:
    """Apply one (locked, current-org) inbox event: (the order, or None, and the outcome). Raises
    if the event cannot be applied; the caller counts the attempt."""
    channel = await channels.get_channel(session, event.channel_id)
    ref = await service.channel_ref(session, channel)
    payload = await _canonical(registry, box, channel, event)
    if payload is None:
        return None, "ignored"
    structlog.contextvars.bind_contextvars(external_id=payload.external_id)
    event.external_id = payload.external_id
    return await service.apply_channel_order(session, ref, payload, webhook_event_id=event.id)


async def reconcile_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    system_sessionmaker: async_sessionmaker[AsyncSession],
    registry: ChannelRegistry,
    box: SecretBox,
    *,
    budget_seconds: float = 20.0,
) -> int:
    """For each active channel with API credentials, ingest orders updated since its watermark through
    the same idempotent path as webhooks, so a paid order whose webhook never came still becomes an
    order. Channels whose adapter cannot list orders are skipped. Returns how many orders it created.
    Each channel follows the channel's pages to the end within `budget_seconds` (a run that runs out
    resumes from the watermark of the last page it applied). Only the list of channels is read as the
    system role; each channel is reconciled as its org."""
    async with unscoped(system_sessionmaker, reason="reconciliation: channels with API credentials") as s:
        targets = (
            await s.execute(
                select(Channel.org_id, Channel.id, Channel.type).where(
                    Channel.status == "active", Channel.api_credentials.is_not(None)
                )
            )
        ).all()
    created = 0
    for org_id, channel_id, channel_type in targets:
        with org_context(org_id, Actor(kind="system", id="reconciliation")):
            try:
                created += await reconcile_channel(
                    sessionmaker, registry, box, channel_id, budget_seconds=budget_seconds
                )
            except Exception as exc:  # one channel's failure must not stop the others
                log.error(
                    "reconcile.channel_failed",
                    channel_id=str(channel_id),
                    channel_type=channel_type,
                    error=f"{type(exc).__name__}: {exc}",
                )
    return created


async def reconcile_channel(
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: ChannelRegistry,
    box: SecretBox,
    channel_id: uuid.UUID,
    *,
    budget_seconds: float = 20.0,
) -> int:
    """Orders updated in [watermark, the run's start] page by page (oldest update first), each page in
    its own transaction with the watermark it reached, until the last page or the time budget. A run
    that reached the last page moves the watermark to its start time, so the lag it shows is honest."""
    started = time.monotonic()
    until = utcnow()
    cursor: str | None = None
    created = pages = 0
    while True:
        async with provide_session(sessionmaker) as session:
            channel = (
                await session.execute(
                    select(Channel).where(Channel.id == channel_id).with_for_update(skip_locked=True)
                )
            ).scalar_one_or_none()
            if channel is None:
                return created  # another worker is reconciling it
            adapter = registry[channel.type]
            since = channel.reconciled_until or (until - timedelta(days=1))
            try:
                found, cursor = await adapter.orders_page(channels.access(box, channel), since, until, cursor)
            except OperationNotSupported:
                return created
            ref = await service.channel_ref(session, channel)
            watermark = since
            for data in found:
                payload = adapter.map_order(data, TopicKind.ORDER)
                _, outcome = await service.apply_channel_order(session, ref, payload)
                if outcome == "created":
                    created += 1
                    log.warning(
                        "reconcile.order_recovered",
                        channel_id=str(channel_id),
                        external_id=payload.external_id,
                    )
                if payload.updated_at and payload.updated_at > watermark:
                    watermark = min(payload.updated_at, until)
            # Pages come oldest update first, so everything before this page's newest update is done;
            # after the last page, everything up to the run's start is.
            channel.reconciled_until = reached = max(since, until if cursor is None else watermark)
            pages += 1
        if cursor is None:
            return created
        if time.monotonic() - started >= budget_seconds:
            log.warning(
                "reconcile.budget_exhausted",
                channel_id=str(channel_id),
                pages=pages,
                budget_seconds=budget_seconds,
                resumes_from=reached.isoformat(),
            )
            return created
