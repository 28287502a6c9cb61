"""Webhook ingress: verify the signature on the raw body, store the delivery, answer, then enqueue.

The 200 goes out only after the event row is committed (the request's transaction commits before
the response is sent); the job is enqueued after that, as a background task. If Redis is down the
webhook is still accepted: the sweeper enqueues inbox rows left pending when it is back.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from rappit.channels import inbox
from rappit.channels.models import WebhookEvent
from rappit.integrations.channels import shopify, woocommerce
from rappit.integrations.channels.canonical import PayloadError, parse_time
from rappit.integrations.channels.signatures import verify
from rappit.platform.crypto import InvalidToken, SecretBox
from rappit.platform.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from rappit.platform.http import DbSession, Id
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import Actor, require_org_id, set_org_context

log = structlog.get_logger("rappit.webhooks")
ACCEPTED = Counter("rappit_webhooks_accepted_total", "Verified webhook deliveries", ["channel_type", "duplicate"])
REJECTED = Counter("rappit_webhooks_rejected_total", "Refused webhook deliveries", ["channel_type", "reason"])
_WOO_PING = re.compile(rb"^webhook_id=\d+$")
_LOOKUP = text("SELECT org_id, org_code, type, status, address, webhook_secret FROM rappit_webhook_channel(:c)")


async def _channel(engine: AsyncEngine, channel_id: uuid.UUID, channel_type: str) -> Any:
    """A narrow SECURITY DEFINER look-up: the org is not known until the channel is."""
    async with engine.connect() as conn:
        row = (await conn.execute(_LOOKUP, {"c": channel_id})).first()
    if row is None or row.type != channel_type or row.status != "active":
        REJECTED.labels(channel_type, "unknown_channel").inc()
        log.info("webhook.rejected", reason="unknown_or_disabled_channel", channel_id=str(channel_id))
        raise NotFound("no active channel here", code="CHANNEL_NOT_FOUND")
    return row


def _check(box: SecretBox, row: Any, body: bytes, signature: str | None, channel_type: str, channel_id: uuid.UUID) -> None:
    try:
        secret = box.decrypt(row.webhook_secret)
    except InvalidToken:  # a key was dropped from ENCRYPTION_KEY too early
        log.error("webhook.secret_undecryptable", channel_id=str(channel_id))
        raise Unauthorized("signature cannot be checked", code="INVALID_SIGNATURE") from None
    if not verify(secret, body, signature):
        reason = "missing_signature" if not signature else "bad_signature"
        REJECTED.labels(channel_type, reason).inc()
        log.warning("webhook.rejected", reason=reason, channel_id=str(channel_id))
        raise Unauthorized("webhook signature missing or invalid", code="INVALID_SIGNATURE")


def _limit(state: State, body: bytes, channel_type: str) -> None:
    limit = state.settings.max_webhook_bytes
    if len(body) > limit:
        REJECTED.labels(channel_type, "too_large").inc()
        raise PayloadTooLarge(f"webhook bodies are limited to {limit} bytes", details={"limit": limit})


async def record(
    session: AsyncSession, *, channel_id: uuid.UUID, topic: str, delivery_id: str, dedup_key: str | None,
    payload: bytes, triggered_at: datetime | None,
) -> uuid.UUID | None:
    """Insert the delivery; None when it is a duplicate (same delivery id, or same dedup key)."""
    stmt = (
        insert(WebhookEvent)
        .values(
            id=uuid.uuid4(), org_id=require_org_id(), channel_id=channel_id, topic=topic[:100], delivery_id=delivery_id[:200],
            dedup_key=dedup_key[:300] if dedup_key else None, payload=payload, triggered_at=triggered_at,
            request_id=current_request_id(), status="pending", attempts=0,
        )
        .on_conflict_do_nothing()
        .returning(WebhookEvent.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def enqueue(state: State, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None) -> None:
    """Best effort: if Redis is down the sweeper enqueues the pending row later."""
    try:
        await inbox.enqueue(state.arq, org_id, event_id, request_id)
    except Exception as exc:  # Redis down, or anything else: the inbox row is the source of truth
        log.warning("webhook.enqueue_failed", event_id=str(event_id), error=type(exc).__name__)


async def _accept(
    state: State, session: AsyncSession, row: Any, channel_id: uuid.UUID, channel_type: str, **event: Any
) -> Response[Any]:
    set_org_context(row.org_id, Actor(kind="channel", id=str(channel_id)))
    structlog.contextvars.bind_contextvars(org_id=str(row.org_id), channel_id=str(channel_id))
    event_id = await record(session, channel_id=channel_id, **event)
    ACCEPTED.labels(channel_type, str(event_id is None).lower()).inc()
    if event_id is None:
        log.info("webhook.duplicate", delivery_id=event["delivery_id"])
        return Response({"status": "duplicate"}, status_code=200)
    log.info("webhook.accepted", event_id=str(event_id), topic=event["topic"])
    return Response(
        {"status": "accepted", "event_id": str(event_id)},
        status_code=200,
        background=BackgroundTask(enqueue, state, row.org_id, event_id, current_request_id()),
    )


@post("/webhooks/shopify/{channel_id:uuid}", exclude_from_auth=True, status_code=200, tags=["webhooks"])
async def shopify_webhook(request: Request[Any, Any, Any], state: State, db_session: DbSession, channel_id: Id) -> Response[Any]:
    body = await request.body()
    _limit(state, body, "shopify")
    row = await _channel(state.engine, channel_id, "shopify")
    _check(state.secret_box, row, body, request.headers.get(shopify.SIGNATURE_HEADER), "shopify", channel_id)
    shop = (request.headers.get(shopify.SHOP_HEADER) or "").strip().lower()
    if shop != row.address:
        REJECTED.labels("shopify", "shop_mismatch").inc()
        raise Unauthorized("X-Shopify-Shop-Domain does not match this channel", code="SHOP_MISMATCH")
    topic = request.headers.get(shopify.TOPIC_HEADER)
    delivery = request.headers.get(shopify.EVENT_ID_HEADER) or request.headers.get(shopify.WEBHOOK_ID_HEADER)
    if not topic or not delivery:
        raise BadRequest("X-Shopify-Topic and X-Shopify-Event-Id (or X-Shopify-Webhook-Id) are required", code="MISSING_HEADER")
    try:
        triggered = parse_time(request.headers.get(shopify.TRIGGERED_AT_HEADER))
    except PayloadError:
        triggered = None
    return await _accept(
        state, db_session, row, channel_id, "shopify", topic=topic, delivery_id=delivery, dedup_key=None,
        payload=body, triggered_at=triggered,
    )


@post("/webhooks/woocommerce/{channel_id:uuid}", exclude_from_auth=True, status_code=200, tags=["webhooks"])
async def woocommerce_webhook(request: Request[Any, Any, Any], state: State, db_session: DbSession, channel_id: Id) -> Response[Any]:
    body = await request.body()
    _limit(state, body, "woocommerce")
    signature = request.headers.get(woocommerce.SIGNATURE_HEADER)
    if signature is None and _WOO_PING.match(body.strip()):
        # WooCommerce's unsigned ping when a webhook is created: answer, store nothing.
        await _channel(state.engine, channel_id, "woocommerce")
        return Response({"status": "pong"}, status_code=200)
    row = await _channel(state.engine, channel_id, "woocommerce")
    _check(state.secret_box, row, body, signature, "woocommerce", channel_id)
    topic = request.headers.get(woocommerce.TOPIC_HEADER)
    delivery = request.headers.get(woocommerce.DELIVERY_HEADER)
    if not topic or not delivery:
        raise BadRequest("X-WC-Webhook-Topic and X-WC-Webhook-Delivery-ID are required", code="MISSING_HEADER")
    # Delivery ids can repeat for two events in one second: also dedup on resource id + modification time.
    dedup_key = None
    try:
        data = msgspec.json.decode(body)
        if isinstance(data, dict) and data.get("id") is not None:
            dedup_key = f"{topic}:{data['id']}:{data.get('date_modified_gmt') or 'deleted'}"
    except msgspec.DecodeError:
        pass  # stored as is; processing will fail it into a dead letter with the reason
    return await _accept(
        state, db_session, row, channel_id, "woocommerce", topic=topic, delivery_id=delivery, dedup_key=dedup_key,
        payload=body, triggered_at=None,
    )


ROUTES = [shopify_webhook, woocommerce_webhook]
