"""Webhook ingress: verify the signature on the raw body, store the delivery, answer.

One route serves every channel type through its adapter. The 200 goes out only after the event row
is committed (the request's transaction commits before the response is sent). Nothing is enqueued:
the workers claim pending inbox rows themselves (rappit.workers.inbox), woken by the NOTIFY of the
insert trigger on webhook_events, so neither Redis nor a background task is on this path.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.params import PathParameter
from prometheus_client import Counter
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from rappit.channels import inbox
from rappit.integrations.channels.base import ChannelAdapter, DeliveryRefused
from rappit.platform.crypto import InvalidToken, SecretBox
from rappit.platform.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from rappit.platform.http import DbSession, Id
from rappit.tenancy.context import Actor, set_org_context

log = structlog.get_logger("rappit.webhooks")
ACCEPTED = Counter(
    "rappit_webhooks_accepted_total", "Verified webhook deliveries", ["channel_type", "duplicate"]
)
REJECTED = Counter("rappit_webhooks_rejected_total", "Refused webhook deliveries", ["channel_type", "reason"])


async def _channel(engine: AsyncEngine, channel_id: uuid.UUID, channel_type: str) -> Row[Any]:
    row = await inbox.webhook_target(engine, channel_id)
    if row is None or row.type != channel_type or row.status != "active":
        REJECTED.labels(channel_type, "unknown_channel").inc()
        log.info("webhook.rejected", reason="unknown_or_disabled_channel", channel_id=str(channel_id))
        raise NotFound("no active channel here", code="CHANNEL_NOT_FOUND")
    return row


def _check(
    box: SecretBox, adapter: ChannelAdapter, row: Row[Any], request: Request[Any, Any, Any], body: bytes
) -> None:
    try:
        secret = box.decrypt(row.webhook_secret)
    except InvalidToken:  # a key was dropped from ENCRYPTION_KEY too early
        log.error("webhook.secret_undecryptable")
        raise Unauthorized("signature cannot be checked", code="INVALID_SIGNATURE") from None
    if not adapter.verify(request.headers, body, secret):
        reason = "bad_signature" if adapter.signature_present(request.headers) else "missing_signature"
        REJECTED.labels(adapter.type, reason).inc()
        log.warning("webhook.rejected", reason=reason)
        raise Unauthorized("webhook signature missing or invalid", code="INVALID_SIGNATURE")


@post(
    "/webhooks/{channel_type:str}/{channel_id:uuid}",
    exclude_from_auth=True,
    status_code=200,
    tags=["webhooks"],
)
async def receive_webhook(
    request: Request[Any, Any, Any],
    state: State,
    db_session: DbSession,
    channel_type: Annotated[str, PathParameter(description="shopify | woocommerce")],
    channel_id: Id,
) -> Response[Any]:
    adapter: ChannelAdapter | None = state.channels.get(channel_type)
    if adapter is None:
        raise NotFound("no active channel here", code="CHANNEL_NOT_FOUND")
    body = await request.body()
    limit = state.settings.max_webhook_bytes
    if len(body) > limit:
        REJECTED.labels(adapter.type, "too_large").inc()
        raise PayloadTooLarge(f"webhook bodies are limited to {limit} bytes", details={"limit": limit})
    row = await _channel(state.engine, channel_id, adapter.type)
    if adapter.is_ping(request.headers, body):
        return Response({"status": "pong"}, status_code=200)  # a liveness check: answered, nothing stored
    structlog.contextvars.bind_contextvars(org_id=str(row.org_id), channel_id=str(channel_id))
    _check(state.secret_box, adapter, row, request, body)
    try:
        delivery = adapter.delivery(request.headers, body, row.address)
    except DeliveryRefused as refused:
        REJECTED.labels(adapter.type, refused.code.lower()).inc()
        error = Unauthorized if refused.status == 401 else BadRequest
        raise error(refused.message, code=refused.code) from None
    set_org_context(row.org_id, Actor(kind="channel", id=str(channel_id)))
    event_id = await inbox.record(db_session, channel_id, delivery, body)
    ACCEPTED.labels(adapter.type, str(event_id is None).lower()).inc()
    if event_id is None:
        log.info("webhook.duplicate", delivery_id=delivery.delivery_id)
        return Response({"status": "duplicate"}, status_code=200)
    log.info("webhook.accepted", event_id=str(event_id), topic=delivery.topic)
    return Response({"status": "accepted", "event_id": str(event_id)}, status_code=200)


ROUTES = [receive_webhook]
