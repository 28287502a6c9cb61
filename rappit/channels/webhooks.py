"""Webhook ingress: verify the signature on the raw body, store the delivery, answer.

One route serves every channel type through its adapter. The 200 goes out only after the event row
is committed: `InboxWriter` stores concurrent deliveries with one statement in its own transaction
and answers each request only when that statement has returned (see `rappit.channels.ingest`).
Nothing is handed off: the workers claim pending inbox rows themselves (`rappit.workers.inbox`),
woken by the insert trigger's NOTIFY.

This route is the hot path of a flash sale, so it does only what it must per delivery: no ORM, no
per-request session or transaction, the channel from a per-process cache (checked again by the
storing statement), both rate limits decided for a batch of requests in one Redis call.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.params import PathParameter
from prometheus_client import Counter

from rappit.channels.ingest import Ingress, Item, Target
from rappit.integrations.channels.base import ChannelAdapter, DeliveryRefused
from rappit.platform.errors import (
    BadRequest,
    DomainError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from rappit.platform.http import Id
from rappit.platform.logging import current_request_id
from rappit.platform.ratelimit import WebhookLimits

log = structlog.get_logger("rappit.webhooks")
ACCEPTED = Counter(
    "rappit_webhooks_accepted_total", "Verified webhook deliveries", ["channel_type", "duplicate"]
)
REJECTED = Counter("rappit_webhooks_rejected_total", "Refused webhook deliveries", ["channel_type", "reason"])
STALE_RETRIES = 3
"""A delivery whose channel changed under it (secret rotated, disabled) is checked again against the
reloaded channel; this many changes in a row answer 503 (the sender retries later)."""


def _refuse_unknown(channel_id: uuid.UUID, adapter: ChannelAdapter) -> NotFound:
    REJECTED.labels(adapter.type, "unknown_channel").inc()
    log.info("webhook.rejected", reason="unknown_or_disabled_channel", channel_id=str(channel_id))
    return NotFound("no active channel here", code="CHANNEL_NOT_FOUND")


def _check(adapter: ChannelAdapter, target: Target, headers: Any, body: bytes) -> None:
    if target.secret is None:  # undecryptable (logged when loaded)
        raise Unauthorized("signature cannot be checked", code="INVALID_SIGNATURE")
    if not adapter.verify(headers, body, target.secret):
        reason = "bad_signature" if adapter.signature_present(headers) else "missing_signature"
        REJECTED.labels(adapter.type, reason).inc()
        log.warning("webhook.rejected", reason=reason)
        raise Unauthorized("webhook signature missing or invalid", code="INVALID_SIGNATURE")


async def _receive(
    ingress: Ingress,
    adapter: ChannelAdapter,
    request: Request[Any, Any, Any],
    channel_id: uuid.UUID,
    max_bytes: int,
) -> Response[Any]:
    body = await request.body()
    if len(body) > max_bytes:
        REJECTED.labels(adapter.type, "too_large").inc()
        raise PayloadTooLarge(
            f"webhook bodies are limited to {max_bytes} bytes", details={"limit": max_bytes}
        )
    headers = request.headers
    for _ in range(STALE_RETRIES):
        target = await ingress.channels.get(channel_id)
        if target is None or target.type != adapter.type or target.status != "active":
            raise _refuse_unknown(channel_id, adapter)
        if adapter.is_ping(headers, body):
            return Response({"status": "pong"}, status_code=200)  # a liveness check: nothing stored
        structlog.contextvars.bind_contextvars(org_id=str(target.org_id), channel_id=str(channel_id))
        _check(adapter, target, headers, body)
        try:
            delivery = adapter.delivery(headers, body, target.address)
        except DeliveryRefused as refused:
            REJECTED.labels(adapter.type, refused.code.lower()).inc()
            error = Unauthorized if refused.status == 401 else BadRequest
            raise error(refused.message, code=refused.code) from None
        event_id = uuid.uuid4()
        outcome = await ingress.writer.store(Item(target, event_id, delivery, body, current_request_id()))
        if outcome == "stale":  # the channel changed since it was cached: reload, check again
            ingress.channels.forget(channel_id)
            continue
        duplicate = outcome == "duplicate"
        ACCEPTED.labels(adapter.type, "true" if duplicate else "false").inc()
        if duplicate:
            log.info("webhook.duplicate", delivery_id=delivery.delivery_id)
            return Response({"status": "duplicate"}, status_code=200)
        log.info("webhook.accepted", event_id=str(event_id), topic=delivery.topic)
        return Response({"status": "accepted", "event_id": str(event_id)}, status_code=200)
    raise ServiceUnavailable("the channel changed while this delivery was checked; retry")


@post(
    "/webhooks/{channel_type:str}/{channel_id:uuid}",
    exclude_from_auth=True,
    status_code=200,
    tags=["webhooks"],
)
async def receive_webhook(
    request: Request[Any, Any, Any],
    channel_type: Annotated[str, PathParameter(description="shopify | woocommerce")],
    channel_id: Id,
) -> Response[Any]:
    state = request.app.state
    limits: WebhookLimits = state.webhook_limits
    ip = request.client.host if request.client else "unknown"
    limited = await limits.check(ip, str(channel_id))
    if limited is not None:
        policy = limited.policy
        raise TooManyRequests(
            f"too many requests; retry in {limited.retry_after} s",
            retry_after=limited.retry_after,
            details={"limit": policy.limit, "window_seconds": policy.window_seconds, "policy": policy.name},
        )
    try:
        adapter: ChannelAdapter | None = state.channels.get(channel_type)
        if adapter is None:
            raise NotFound("no active channel here", code="CHANNEL_NOT_FOUND")
        return await _receive(state.ingress, adapter, request, channel_id, state.settings.max_webhook_bytes)
    except (DomainError, HTTPException) as exc:
        if exc.status_code in limits.refused.counts_only:
            await limits.count_refusal(ip)
        raise


ROUTES = [receive_webhook]
