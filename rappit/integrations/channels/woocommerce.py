"""WooCommerce: webhook headers and payload mapping (REST API v3 order shape)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from rappit.integrations.channels.base import (
    ChannelAccess,
    ChannelActionNeeded,
    ChannelRejected,
    ChannelUnavailable,
    Delivery,
    DeliveryRefused,
    Fulfillment,
    OperationNotSupported,
    PushResult,
    TopicKind,
)
from rappit.integrations.channels.canonical import (
    CanonicalLine,
    CanonicalOrder,
    PayloadError,
    decode_json,
    line_items,
    order_id,
    parse_time,
    quantity,
    sku_of,
    to_minor,
)
from rappit.integrations.channels.signatures import verify
from rappit.platform.settings import Settings

SIGNATURE_HEADER = "x-wc-webhook-signature"
TOPIC_HEADER = "x-wc-webhook-topic"
DELIVERY_HEADER = "x-wc-webhook-delivery-id"
SOURCE_HEADER = "x-wc-webhook-source"

ORDER_TOPICS = {"order.created", "order.updated"}
DELETE_TOPIC = "order.deleted"
CANCELLED_STATUSES = {"cancelled", "refunded", "trash", "failed"}
_PING = re.compile(rb"^webhook_id=\d+$")
API = "/wp-json/wc/v3"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def tracking_note(fulfillment: Fulfillment) -> str:
    """The order note the customer gets: carrier, tracking number and where to follow it."""
    return (
        f"Shipped with {fulfillment.tracking_company}, tracking number {fulfillment.tracking_number}: "
        f"{fulfillment.tracking_url}"
    )


def consumer_credentials(access: ChannelAccess) -> tuple[str, str]:
    """The channel's API credential is the REST API key pair as `consumer_key:consumer_secret`."""
    key, sep, secret = (access.token or "").partition(":")
    if not sep or not key or not secret:
        raise ChannelActionNeeded(
            "this needs the store's REST API key pair as consumer_key:consumer_secret in the "
            "channel's api_access_token"
        )
    return key, secret


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict) and body.get("code"):
        return f"{body.get('code')}: {body.get('message')}"
    return resp.text[:200]


async def _call(http: httpx.AsyncClient, method: str, url: str, auth: tuple[str, str], **kwargs: Any) -> Any:
    """One REST call; 5xx, 429 and transport failures are ChannelUnavailable, other 4xx ChannelRejected."""
    try:
        resp = await http.request(method, url, auth=auth, timeout=TIMEOUT, **kwargs)
    except httpx.TransportError as exc:
        raise ChannelUnavailable(f"WooCommerce did not answer: {type(exc).__name__}: {exc}") from exc
    if resp.status_code >= 500 or resp.status_code == 429:
        raise ChannelUnavailable(f"WooCommerce answered {resp.status_code}: {_error_text(resp)}")
    if resp.status_code >= 400:
        raise ChannelRejected(resp.status_code, f"WooCommerce refused the call: {_error_text(resp)}")
    try:
        return resp.json()
    except ValueError as exc:
        raise ChannelUnavailable(f"WooCommerce answered {resp.status_code} without JSON") from exc


def map_order(payload: dict[str, Any], *, deleted: bool = False) -> CanonicalOrder:
    external_id = order_id(payload, "WooCommerce")
    if deleted:  # order.deleted sends only {"id": ...}: it can only cancel (currency and lines unused)
        return CanonicalOrder(
            external_id=external_id,
            name=external_id,
            currency="XXX",
            updated_at=None,
            cancelled=True,
        )
    currency = str(payload.get("currency") or "").upper()
    if len(currency) != 3:
        raise PayloadError("order has no currency")
    lines = [
        CanonicalLine(
            external_line_id=str(item.get("id")) if item.get("id") is not None else None,
            sku=sku_of(item.get("sku")),
            title=str(item.get("name") or "")[:500],
            quantity=quantity(item.get("quantity")),
            unit_price_minor=to_minor(item.get("price"), currency),
        )
        for item in line_items(payload)
    ]
    return CanonicalOrder(
        external_id=external_id,
        name=str(payload.get("number") or external_id),
        currency=currency,
        updated_at=parse_time(payload.get("date_modified_gmt")),  # GMT without an offset
        cancelled=str(payload.get("status") or "") in CANCELLED_STATUSES,
        lines=lines,
    )


def dedup_key(topic: str, delivery_id: str, body: bytes) -> str:
    """What identifies a WooCommerce change. X-WC-Webhook-Delivery-ID is a hash of the webhook id and
    the current second, so two orders sent by one webhook in one second share it: the key is the
    topic, the order id and its date_modified_gmt (a deletion carries only the id, so its delivery
    id joins it). A body without an id (garbled, stored to be dead-lettered) keys on its own hash."""
    try:
        data = decode_json(body)
    except PayloadError:
        data = None
    if isinstance(data, dict) and data.get("id") is not None:
        modified = data.get("date_modified_gmt")
        return f"{topic}:{data['id']}:{modified}" if modified else f"{topic}:{data['id']}:d:{delivery_id}"
    return f"body:{hashlib.sha256(body).hexdigest()}"


class WooCommerceAdapter:
    type = "woocommerce"
    number_letter = "W"

    @classmethod
    def from_settings(cls, settings: Settings) -> WooCommerceAdapter:
        return cls()

    def normalize_address(self, address: str) -> str:
        parts = urlsplit(address.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("a WooCommerce channel needs its store URL, like https://shop.example.com")
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """WooCommerce's unsigned ping when a webhook is created (a form body `webhook_id=N`)."""
        return headers.get(SIGNATURE_HEADER) is None and bool(_PING.match(body.strip()))

    def signature_present(self, headers: Mapping[str, str]) -> bool:
        return bool(headers.get(SIGNATURE_HEADER))

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify(secret, body, headers.get(SIGNATURE_HEADER))

    def delivery(self, headers: Mapping[str, str], body: bytes, address: str) -> Delivery:
        topic = headers.get(TOPIC_HEADER)
        delivery = headers.get(DELIVERY_HEADER)
        if not topic or not delivery:
            raise DeliveryRefused(
                400, "MISSING_HEADER", "X-WC-Webhook-Topic and X-WC-Webhook-Delivery-ID are required"
            )
        return Delivery(
            topic=topic, delivery_id=delivery, dedup_key=dedup_key(topic, delivery, body), triggered_at=None
        )

    def classify(self, topic: str) -> TopicKind:
        if topic in ORDER_TOPICS:
            return TopicKind.ORDER
        return TopicKind.CANCEL if topic == DELETE_TOPIC else TopicKind.IGNORED

    def map_order(self, data: Any, kind: TopicKind) -> CanonicalOrder:
        return map_order(data, deleted=kind is TopicKind.CANCEL)

    def edited_order_id(self, data: Any) -> str:
        raise OperationNotSupported("WooCommerce sends whole orders; it has no edit topic")

    async def fetch_order(self, access: ChannelAccess, order_id: str) -> dict[str, Any]:
        raise OperationNotSupported("fetching WooCommerce orders is not implemented")

    async def orders_page(
        self, access: ChannelAccess, since: datetime, until: datetime, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        raise OperationNotSupported("WooCommerce reconciliation is not implemented")

    async def push_fulfillment(
        self, access: ChannelAccess, fulfillment: Fulfillment, *, http: httpx.AsyncClient
    ) -> PushResult:
        """Mark the order completed (idempotent), then add the tracking note unless an earlier attempt
        already did (a note carrying the tracking number): a retry never adds a second one."""
        auth = consumer_credentials(access)
        order = f"{access.address}{API}/orders/{fulfillment.order_external_id}"
        await _call(http, "PUT", order, auth, json={"status": "completed"})
        notes = await _call(http, "GET", f"{order}/notes", auth)
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, dict) and fulfillment.tracking_number in str(note.get("note") or ""):
                return PushResult(external_ref=str(note.get("id")), already_there=True)
        made = await _call(
            http,
            "POST",
            f"{order}/notes",
            auth,
            json={"note": tracking_note(fulfillment), "customer_note": True},
        )
        return PushResult(external_ref=str(made.get("id") if isinstance(made, dict) else ""))
