"""Webhook ingress: verify the signature on the raw body, store the delivery, answer.

One route serves every channel type through its adapter. The 200 goes out only after the event row
is committed: `InboxWriter` stores concurrent deliveries with one statement in its own transaction
and answers each request only when that statement has returned (see `rappit.channels.ingest`).
Nothing is handed off: the workers claim pending inbox rows themselves (`rappit.workers.inbox`),
woken by ingress's NOTIFY (`rappit.channels.ingest.InboxWaker`).

This route is the hot path of a flash sale, so it does only what it must per delivery: no ORM, no
per-request session or transaction, the channel from a per-process cache (checked again by the
storing statement), both rate limits decided for a batch of requests in one Redis call. And it runs
in front of Litestar's middleware stack: `fast_path` serves `POST /webhooks/{type}/{uuid}` straight
from the ASGI call (the app's `__call__`), doing itself the little of that stack this route needs
(the request id, echoed; the access line; a latency histogram) and rendering errors through the same
exception handlers as every route. Litestar's `receive_webhook` is the same core behind the documented
route (OpenAPI, schemathesis), for a request the fast path does not take.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Litestar, Request, Response, post
from litestar.exceptions import HTTPException
from litestar.params import PathParameter
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send
from prometheus_client import Counter, Histogram

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
from rappit.platform.logging import (
    REQUEST_ID_HEADER,
    HotLogger,
    accept_request_id,
    bind_request_id,
    current_request_id,
)
from rappit.platform.ratelimit import WebhookLimits
from rappit.tenancy.context import clear_org_context

log = structlog.get_logger("rappit.webhooks")
access = HotLogger("rappit.access")
hot = HotLogger("rappit.webhooks")
"""The lines written for every delivery; `log` for the rarer ones (refusals, warnings)."""
ACCEPTED = Counter(
    "rappit_webhooks_accepted_total", "Verified webhook deliveries", ["channel_type", "duplicate"]
)
REJECTED = Counter("rappit_webhooks_rejected_total", "Refused webhook deliveries", ["channel_type", "reason"])
SECONDS = Histogram(
    "rappit_webhook_request_seconds",
    "Webhook requests served by the fast path (Litestar's request metrics do not see them), by status",
    ["status"],
)
_SECONDS_BY_STATUS: dict[int, Any] = {}
_ACCEPTED_BY_TYPE: dict[tuple[str, bool], Any] = {}
STALE_RETRIES = 3
"""A delivery whose channel changed under it (secret rotated, disabled) is checked again against the
reloaded channel; this many changes in a row answer 503 (the sender retries later)."""


def _observe(status: int, elapsed: float) -> None:
    """The latency histogram, its labelled child cached (`labels()` takes a lock and builds a key)."""
    child = _SECONDS_BY_STATUS.get(status)
    if child is None:
        child = _SECONDS_BY_STATUS[status] = SECONDS.labels(str(status))
    child.observe(elapsed)


def _count_accepted(channel_type: str, duplicate: bool) -> None:
    child = _ACCEPTED_BY_TYPE.get((channel_type, duplicate))
    if child is None:
        child = _ACCEPTED_BY_TYPE[(channel_type, duplicate)] = ACCEPTED.labels(
            channel_type, "true" if duplicate else "false"
        )
    child.inc()


def _new_event_id() -> str:
    """A random (version 4) UUID's text, made without `uuid.UUID` (its constructor and `str` cost more
    than the rest of this route's id handling); asyncpg takes the text for a uuid parameter."""
    h = bytearray(os.urandom(16))
    h[6] = (h[6] & 0x0F) | 0x40  # version 4
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _refuse_unknown(channel_id: uuid.UUID, adapter: ChannelAdapter) -> NotFound:
    REJECTED.labels(adapter.type, "unknown_channel").inc()
    log.info("webhook.rejected", reason="unknown_or_disabled_channel", channel_id=str(channel_id))
    return NotFound("no active channel here", code="CHANNEL_NOT_FOUND")


def _check(adapter: ChannelAdapter, target: Target, headers: Mapping[str, str], body: bytes) -> None:
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
    headers: Mapping[str, str],
    body: bytes,
    channel_id: uuid.UUID,
) -> dict[str, str]:
    verbose = hot.is_enabled_for(logging.INFO)
    for _ in range(STALE_RETRIES):
        target = await ingress.channels.get(channel_id)
        if target is None or target.type != adapter.type or target.status != "active":
            raise _refuse_unknown(channel_id, adapter)
        if adapter.is_ping(headers, body):
            return {"status": "pong"}  # a liveness check: nothing stored
        structlog.contextvars.bind_contextvars(org_id=target.org_text, channel_id=target.channel_text)
        _check(adapter, target, headers, body)
        try:
            delivery = adapter.delivery(headers, body, target.address)
        except DeliveryRefused as refused:
            REJECTED.labels(adapter.type, refused.code.lower()).inc()
            error = Unauthorized if refused.status == 401 else BadRequest
            raise error(refused.message, code=refused.code) from None
        event_id = _new_event_id()
        outcome = await ingress.writer.store(Item(target, event_id, delivery, body, current_request_id()))
        if outcome == "stale":  # the channel changed since it was cached: reload, check again
            ingress.channels.forget(channel_id)
            continue
        duplicate = outcome == "duplicate"
        _count_accepted(adapter.type, duplicate)
        if duplicate:
            if verbose:
                hot.info("webhook.duplicate", delivery_id=delivery.delivery_id)
            return {"status": "duplicate"}
        if verbose:
            hot.info("webhook.accepted", event_id=event_id, topic=delivery.topic)
        return {"status": "accepted", "event_id": event_id}
    raise ServiceUnavailable("the channel changed while this delivery was checked; retry")


async def ingest(
    state: Any,
    channel_type: str,
    channel_id: uuid.UUID,
    ip: str,
    headers: Mapping[str, str],
    read: Callable[[int], Awaitable[bytes | None]],
    channel_text: str | None = None,
) -> dict[str, str]:
    """The route's whole work: both limits (before the body is read), the channel, the signature, the
    committed row. `read(limit)` gives the body, or None past `limit` bytes. Returns the 200's body;
    raises a DomainError (or a dependency's error) otherwise. `channel_text`: the id's canonical text,
    if the caller has it."""
    limits: WebhookLimits = state.webhook_limits
    limited = await limits.check(ip, channel_text or str(channel_id))
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
        max_bytes: int = state.settings.max_webhook_bytes
        body = await read(max_bytes)
        if body is None or len(body) > max_bytes:
            REJECTED.labels(adapter.type, "too_large").inc()
            raise PayloadTooLarge(
                f"webhook bodies are limited to {max_bytes} bytes", details={"limit": max_bytes}
            )
        return await _receive(state.ingress, adapter, headers, body, channel_id)
    except (DomainError, HTTPException) as exc:
        if exc.status_code in limits.refused.counts_only:
            await limits.count_refusal(ip)
        raise


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
    """A delivery from a channel: signed with the channel's secret over the raw body; answered 200
    once stored (`accepted` with the event id, or `duplicate`), `pong` for a ping."""

    async def read(_limit: int) -> bytes:
        return await request.body()  # Litestar refuses a body past MAX_BODY_BYTES itself (413)

    ip = request.client.host if request.client else "unknown"
    content = await ingest(request.app.state, channel_type, channel_id, ip, request.headers, read)
    return Response(content, status_code=200)


class _Headers(dict[str, str]):
    """An ASGI request's headers by lower-case name (ASGI servers send the names lower-cased)."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


_ROUTES: dict[str, tuple[str, uuid.UUID, str]] = {}
_MAX_ROUTES = 10_000


def _route(path: str) -> tuple[str, uuid.UUID, str] | None:
    """(channel type, channel id, the id's canonical text) of a webhook path, cached per path (a
    channel's deliveries all use one): parsing a UUID costs more than the look-up."""
    route = _ROUTES.get(path)
    if route is not None:
        return route
    parts = path.split("/")  # "", "webhooks", type, id
    if len(parts) != 4 or not parts[2]:
        return None
    try:
        channel_id = uuid.UUID(parts[3])
    except ValueError:
        return None
    if len(_ROUTES) >= _MAX_ROUTES:  # many ids (a scan of made-up ones): start over, stay bounded
        _ROUTES.clear()
    route = _ROUTES[path] = (parts[2], channel_id, str(channel_id))
    return route


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (the rest is not read). A client that
    goes away first raises ConnectionResetError (nothing to answer)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away before its body was read")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def fast_path(app: Litestar, scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve a webhook delivery without Litestar's middleware stack; False (nothing read, nothing
    sent) for a path that is not `/webhooks/{type}/{uuid}`, which Litestar then routes as usual."""
    route = _route(scope["path"])
    if route is None:
        return False
    channel_type, channel_id, channel_text = route
    started = time.perf_counter()
    headers = _Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
    request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
    scope.setdefault("state", {})["request_id"] = request_id  # the error handlers quote it
    structlog.contextvars.clear_contextvars()
    bind_request_id(request_id)
    clear_org_context()
    state = app.state
    status = 500
    try:
        try:
            client = scope.get("client")
            ip = client[0] if client else "unknown"

            async def read(limit: int) -> bytes | None:
                return await _read(receive, limit)

            content = await ingest(state, channel_type, channel_id, ip, headers, read, channel_text)
        except ConnectionResetError:
            status = 499  # logged as the client's disconnect; nothing to answer
            return True
        except Exception as exc:
            status = await _error(app, scope, receive, send, exc)
            return True
        payload = msgspec.json.encode(content)
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (REQUEST_ID_HEADER.encode(), request_id.encode()),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        status = 200
        return True
    finally:
        elapsed = time.perf_counter() - started
        _observe(status, elapsed)
        if access.is_enabled_for(logging.INFO):
            access.info(
                "http.request", method="POST", path=scope["path"], status=status,
                duration_ms=round(elapsed * 1000, 2),
            )  # fmt: skip


async def _error(app: Litestar, scope: Scope, receive: Receive, send: Send, exc: Exception) -> int:
    """The error's response through the app's own exception handlers (the one envelope, Retry-After,
    503 for an unavailable dependency, a logged 500 otherwise). Returns its status."""
    request: Request[Any, Any, Any] = app.request_class(scope, receive, send)
    handler = next(
        h for cls in type(exc).__mro__ if (h := app.exception_handlers.get(cls))
    )  # Exception's at last
    response = handler(request, exc)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)
    return int(response.status_code or 500)


ROUTES = [receive_webhook]
