"""Background work of the orders domain, with its dependencies passed in (the arq jobs in
`rappit.workers` are thin wrappers): applying an inbox event, and reconciling channels.

Both go through the same idempotent `service.apply_channel_order`, so an order arriving by webhook,
by a re-run, or by reconciliation is applied once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.channels import service as channels
from rappit.channels.models import Channel, WebhookEvent
from rappit.integrations.channels.base import OperationNotSupported, TopicKind
from rappit.integrations.channels.canonical import CanonicalOrder, decode_json
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.orders import batch, service
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


class EventRow(NamedTuple):
    """What the batch path reads of a (locked, open) inbox event."""

    id: uuid.UUID
    channel_id: uuid.UUID
    topic: str
    payload: bytes
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Done:
    event_id: uuid.UUID
    channel_id: uuid.UUID
    topic: str
    outcome: str  # created | ignored
    external_id: str | None = None
    order_id: uuid.UUID | None = None
    order_number: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class BatchResult:
    done: list[Done] = field(default_factory=list)
    """Applied and marked (in the batch's transaction)."""
    left: list[tuple[uuid.UUID, Any]] = field(default_factory=list)
    """(event id, ordering key) for the one-event path, in received order; events with the same key
    (the same channel order) must be applied in this order."""


_MARK = text(
    """UPDATE webhook_events w
          SET status = t.status, order_id = t.order_id, external_id = t.external_id,
              processed_at = now(), last_error = NULL, next_attempt_at = NULL
         FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:orders AS uuid[]),
                     CAST(:exts AS text[])) AS t(id, status, order_id, external_id)
        WHERE w.id = t.id"""
)


async def apply_batch(
    session: AsyncSession, registry: ChannelRegistry, events: list[EventRow]
) -> BatchResult:
    """Apply what the set-based path can of these (locked, open, current-org, received-order) events
    in the caller's transaction: topics Rappit ignores, and orders the channel has just created
    (`batch.create_fresh`). The rest is left, with the key that orders it: an event whose channel
    order already has an earlier event left in this batch is left too, so per-order order holds."""
    out = BatchResult()
    if not events:
        return out
    channels_by_id = {
        c.id: c
        for c in (
            await session.execute(select(Channel).where(Channel.id.in_({e.channel_id for e in events})))
        ).scalars()
    }
    refs: dict[uuid.UUID, service.ChannelRef] = {}
    blocked: set[Any] = set()
    fresh: list[batch.FreshOrder] = []
    by_id = {e.id: e for e in events}
    ignored: list[EventRow] = []
    for e in events:
        channel = channels_by_id.get(e.channel_id)
        if channel is None:
            out.left.append((e.id, e.id))
            continue
        adapter = registry[channel.type]
        try:
            kind = adapter.classify(e.topic)
            if kind is TopicKind.IGNORED:
                ignored.append(e)
                continue
            data = decode_json(e.payload)
            if kind is TopicKind.EDIT:
                key: Any = (channel.id, str(adapter.edited_order_id(data)))
                payload = None
            else:
                payload = adapter.map_order(data, kind)
                key = (channel.id, payload.external_id)
        except Exception:  # poison, or not ours to judge here: the one-event path records it
            out.left.append((e.id, e.id))
            continue
        if key in blocked or payload is None or kind is not TopicKind.ORDER:
            blocked.add(key)
            out.left.append((e.id, key))
            continue
        blocked.add(key)  # later events of this order wait for this one (applied here, or left)
        if channel.id not in refs:
            refs[channel.id] = await service.channel_ref(session, channel)
        fresh.append(batch.FreshOrder(e.id, refs[channel.id], payload, e.request_id))
    made = await batch.create_fresh(session, fresh)
    left_fresh = set(made.left)
    keys = {f.event_id: (f.channel.id, f.payload.external_id) for f in fresh}
    # Left creates keep their place before later events of the same order: re-sort by arrival.
    position = {e.id: i for i, e in enumerate(events)}
    out.left = sorted(out.left + [(i, keys[i]) for i in left_fresh], key=lambda x: position[x[0]])
    created = {c.event_id: c for c in made.created}
    for f in fresh:
        c = created.get(f.event_id)
        if c is not None:
            out.done.append(
                Done(f.event_id, f.channel.id or by_id[f.event_id].channel_id, by_id[f.event_id].topic,
                     "created", f.payload.external_id, c.order_id, c.number, f.request_id)
            )  # fmt: skip
    for e in ignored:
        out.done.append(Done(e.id, e.channel_id, e.topic, "ignored", request_id=e.request_id))
    if out.done:
        await session.execute(
            _MARK,
            {
                "ids": [d.event_id for d in out.done],
                "statuses": ["processed" if d.order_id else "ignored" for d in out.done],
                "orders": [d.order_id for d in out.done],
                "exts": [d.external_id for d in out.done],
            },
        )
    return out


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
