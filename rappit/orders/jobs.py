"""Turning inbox rows into orders (arq jobs), the sweeper that re-enqueues what Redis lost, and
dead letters.

arq is only the trigger; the inbox row is the truth. The job locks its row, skips it if it is
already done, and marks it processed in the same transaction as the order it wrote, so a job that
runs twice (retry, a killed worker's job re-run, the sweeper) applies the event once.
"""

from __future__ import annotations

import traceback
import uuid
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from arq import Retry
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from rappit.channels import inbox
from rappit.channels.models import Channel, WebhookEvent
from rappit.integrations.channels import shopify, woocommerce
from rappit.integrations.channels.canonical import CanonicalOrder, PayloadError
from rappit.orders import service
from rappit.platform.db import provide_session, utcnow
from rappit.platform.logging import bind_request_id
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped
from rappit.workers.models import DeadLetter

log = structlog.get_logger("rappit.orders.jobs")
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = (2, 10, 30)


class ChannelActionNeeded(Exception):
    """The event cannot be applied until someone fixes the channel (e.g. adds API credentials)."""


async def _channel_ref(session: Any, channel: Channel) -> service.ChannelRef:
    """What order creation needs to know about the channel (the org code prefixes order numbers)."""
    org_code = (
        await session.execute(text("SELECT code FROM organizations WHERE id = :o"), {"o": channel.org_id})
    ).scalar_one()
    return service.ChannelRef(id=channel.id, source=channel.type, org_code=org_code, warehouse_id=channel.warehouse_id)


async def _canonical(ctx: dict[str, Any], channel: Channel, event: WebhookEvent) -> CanonicalOrder | None:
    """Map the stored payload to a canonical order; None for topics Rappit does not act on."""
    try:
        data = msgspec.json.decode(event.payload)
    except msgspec.DecodeError as exc:
        raise PayloadError(f"body is not JSON: {exc}") from exc
    if channel.type == "shopify":
        if event.topic in shopify.ORDER_TOPICS:
            return shopify.map_order(data)
        if event.topic == shopify.EDIT_TOPIC:
            fetch = ctx.get("shopify_fetch_order")
            if fetch is None or channel.api_credentials is None:
                raise ChannelActionNeeded("orders/edited needs the channel's Admin API credentials to fetch the order")
            return shopify.map_order(await fetch(ctx, channel, shopify.edited_order_id(data)))
        return None
    if event.topic in woocommerce.ORDER_TOPICS:
        return woocommerce.map_order(data)
    if event.topic == woocommerce.DELETE_TOPIC:
        return woocommerce.map_order(data, deleted=True)
    return None


async def process_webhook_event(ctx: dict[str, Any], org_id: str, event_id: str, request_id: str | None = None) -> str:
    bind_request_id(request_id)
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), event_id=event_id, org_id=org_id)
    retry_in: float | None = None
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="webhook-processor")):
        async with provide_session(ctx["sessionmaker"]) as session:
            event = (
                await session.execute(select(WebhookEvent).where(WebhookEvent.id == uuid.UUID(event_id)).with_for_update())
            ).scalar_one_or_none()
            if event is None:
                log.warning("webhook.event_missing")
                return "missing"
            if event.status in ("processed", "ignored", "dead"):
                return event.status  # a re-run: already applied, nothing to do
            channel = (await session.execute(select(Channel).where(Channel.id == event.channel_id))).scalar_one()
            ref = await _channel_ref(session, channel)
            event.attempts += 1
            try:
                async with session.begin_nested():
                    payload = await _canonical(ctx, channel, event)
                    if payload is None:
                        event.status, outcome = "ignored", "ignored"
                    else:
                        order, outcome = await service.apply_channel_order(session, ref, payload, webhook_event_id=event.id)
                        event.order_id = order.id if order else None
                        event.status = "processed" if order else "ignored"
                    event.processed_at = utcnow()
                    event.last_error = None
            except Exception as exc:  # this event failed: record it; others are unaffected
                error = f"{type(exc).__name__}: {exc}"
                event.last_error = error[:4000]
                log.warning("webhook.processing_failed", attempt=event.attempts, error=error,
                            trace=traceback.format_exc(limit=5) if not isinstance(exc, (PayloadError, ChannelActionNeeded)) else None)
                if event.attempts >= MAX_ATTEMPTS:
                    event.status = "dead"
                    await _dead_letter(session, event, error)
                    outcome = "dead"
                else:
                    event.status = "failed"
                    backoff = ctx.get("webhook_backoff", BACKOFF_SECONDS)
                    retry_in = backoff[min(event.attempts - 1, len(backoff) - 1)]
                    outcome = "retry"
    if retry_in is not None:  # committed first: the attempt count survives whatever happens next
        raise Retry(defer=timedelta(seconds=retry_in))
    log.info("webhook.processed", outcome=outcome)
    return outcome


async def _dead_letter(session: Any, event: WebhookEvent, error: str) -> None:
    now = utcnow()
    stmt = insert(DeadLetter).values(
        id=uuid.uuid4(), org_id=event.org_id, kind="webhook_event", ref_id=event.id, job_name=inbox.JOB,
        payload={"channel_id": str(event.channel_id), "topic": event.topic, "delivery_id": event.delivery_id,
                 "body": event.payload.decode("utf-8", "replace")[:100_000]},
        error=error[:4000], attempts=event.attempts, status="dead", first_failed_at=now, last_failed_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "kind", "ref_id"],
        set_={"error": stmt.excluded.error, "attempts": DeadLetter.attempts + stmt.excluded.attempts,
              "status": "dead", "last_failed_at": now},
    )
    await session.execute(stmt)
    log.error("webhook.dead_lettered", attempts=event.attempts, error=error)


async def sweep_pending_webhooks(ctx: dict[str, Any]) -> int:
    """Cron: enqueue inbox rows still pending or failed after a grace period (Redis was down, a
    worker died). The job id is the event id, so a row already queued is not queued twice."""
    sessionmaker = ctx["sessionmaker"]
    grace = ctx.get("sweep_grace_seconds", 20)
    async with provide_session(sessionmaker) as session:
        async with unscoped(session, reason="webhook sweeper: pending events of every org"):
            rows = (
                await session.execute(
                    select(WebhookEvent.org_id, WebhookEvent.id, WebhookEvent.request_id)
                    .where(WebhookEvent.status.in_(("pending", "failed")),
                           WebhookEvent.received_at < utcnow() - timedelta(seconds=grace))
                    .order_by(WebhookEvent.received_at)
                    .limit(1000)
                )
            ).all()
    queued = 0
    for org_id, event_id, request_id in rows:
        if await inbox.enqueue(ctx["redis"], org_id, event_id, request_id):
            queued += 1
    if rows:
        log.info("webhook.sweep", pending=len(rows), enqueued=queued)
    return queued


async def retry_dead_letter(session: Any, dead_letter_id: uuid.UUID, actor: str) -> DeadLetter:
    """Operator action: put the event back in the inbox with a fresh attempt budget."""
    from rappit.platform.errors import BusinessRuleViolation, NotFound

    letter = (
        await session.execute(select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update())
    ).scalar_one_or_none()
    if letter is None:
        raise NotFound("no such dead letter", details={"dead_letter_id": str(dead_letter_id)})
    if letter.status != "dead":
        raise BusinessRuleViolation("this dead letter was already retried", code="ALREADY_RETRIED")
    event = (await session.execute(select(WebhookEvent).where(WebhookEvent.id == letter.ref_id).with_for_update())).scalar_one()
    event.status, event.attempts, event.last_error = "pending", 0, None
    letter.status, letter.retried_at, letter.retried_by = "retried", utcnow(), actor
    return letter


async def shopify_fetch_order(ctx: dict[str, Any], channel: Channel, order_id: str) -> dict[str, Any]:
    """orders/edited: the full order, from the shop's Admin API."""
    from rappit.integrations.channels import shopify_api

    assert channel.api_credentials is not None
    token = ctx["secret_box"].decrypt(channel.api_credentials)
    return await shopify_api.fetch_order(shopify_api.site(ctx["settings"].shopify_admin_url, channel.address), token, order_id)


async def reconcile_shopify(ctx: dict[str, Any]) -> int:
    """Cron: for each Shopify channel with API credentials, ingest orders updated since its watermark
    through the same idempotent path as webhooks, so a paid order whose webhook never came still
    becomes an order. Returns how many orders it created."""
    from rappit.integrations.channels import shopify_api

    sessionmaker = ctx["sessionmaker"]
    async with provide_session(sessionmaker) as session:
        async with unscoped(session, reason="reconciliation: Shopify channels with API credentials"):
            targets = (
                await session.execute(
                    select(Channel.org_id, Channel.id).where(
                        Channel.type == "shopify", Channel.status == "active", Channel.api_credentials.is_not(None)
                    )
                )
            ).all()
    created = 0
    for org_id, channel_id in targets:
        with org_context(org_id, Actor(kind="system", id="reconciliation")):
            try:
                async with provide_session(sessionmaker) as session:
                    channel = (
                        await session.execute(
                            select(Channel).where(Channel.id == channel_id).with_for_update(skip_locked=True)
                        )
                    ).scalar_one_or_none()
                    if channel is None:
                        continue  # another worker is reconciling it
                    since = channel.reconciled_until or (utcnow() - timedelta(days=1))
                    token = ctx["secret_box"].decrypt(channel.api_credentials)
                    found = await shopify_api.orders_updated_since(
                        shopify_api.site(ctx["settings"].shopify_admin_url, channel.address), token, since
                    )
                    ref = await _channel_ref(session, channel)
                    watermark = since
                    for data in found:
                        payload = shopify.map_order(data)
                        _, outcome = await service.apply_channel_order(session, ref, payload)
                        if outcome == "created":
                            created += 1
                            log.warning("reconcile.order_recovered", channel_id=str(channel_id), external_id=payload.external_id)
                        if payload.updated_at and payload.updated_at > watermark:
                            watermark = payload.updated_at
                    channel.reconciled_until = watermark
            except Exception as exc:  # one channel's failure must not stop the others
                log.error("reconcile.channel_failed", channel_id=str(channel_id), error=f"{type(exc).__name__}: {exc}")
    return created
