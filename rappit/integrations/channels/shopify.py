"""Shopify: webhook headers, payload mapping (REST Admin API order shape) and the Admin API calls."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from rappit.integrations.channels import shopify_api
from rappit.integrations.channels.base import (
    ChannelAccess,
    ChannelActionNeeded,
    ChannelRejected,
    Delivery,
    DeliveryRefused,
    Fulfillment,
    PushResult,
    TopicKind,
)
from rappit.integrations.channels.canonical import (
    CanonicalLine,
    CanonicalOrder,
    PayloadError,
    line_items,
    order_id,
    parse_time,
    quantity,
    sku_of,
    to_minor,
)
from rappit.integrations.channels.signatures import verify
from rappit.platform.settings import Settings

SIGNATURE_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
SHOP_HEADER = "x-shopify-shop-domain"
EVENT_ID_HEADER = "x-shopify-event-id"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
TRIGGERED_AT_HEADER = "x-shopify-triggered-at"

ORDER_TOPICS = {"orders/create", "orders/updated", "orders/cancelled"}
EDIT_TOPIC = "orders/edited"
_SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


def map_order(payload: dict[str, Any]) -> CanonicalOrder:
    """A full Shopify order (orders/create, orders/updated, orders/cancelled, or the Admin API)."""
    external_id = order_id(payload, "Shopify")
    currency = str(payload.get("currency") or payload.get("presentment_currency") or "").upper()
    if len(currency) != 3:
        raise PayloadError("order has no currency")
    lines = []
    for item in line_items(payload):
        # After an edit, `current_quantity` is the quantity left once removals are subtracted.
        qty = item.get("current_quantity", item.get("quantity"))
        lines.append(
            CanonicalLine(
                external_line_id=str(item.get("id")) if item.get("id") is not None else None,
                sku=sku_of(item.get("sku")),
                title=str(item.get("title") or item.get("name") or "")[:500],
                quantity=quantity(qty),
                unit_price_minor=to_minor(item.get("price"), currency),
            )
        )
    return CanonicalOrder(
        external_id=external_id,
        name=str(payload.get("name") or payload.get("order_number") or external_id),
        currency=currency,
        updated_at=parse_time(payload.get("updated_at"), naive_is_utc=False),
        cancelled=bool(payload.get("cancelled_at")),
        lines=lines,
    )


def edited_order_id(payload: dict[str, Any]) -> str:
    """orders/edited carries a delta (`order_edit` with line_items.additions/removals), not the order:
    Rappit fetches the full order from the Admin API and applies that."""
    edit = payload.get("order_edit") if isinstance(payload, dict) else None
    if not isinstance(edit, dict) or edit.get("order_id") is None:
        raise PayloadError("orders/edited payload has no order_edit.order_id")
    return str(edit["order_id"])


FULFILLABLE_STATUSES = ("open", "in_progress")


def fulfillment_body(fulfillment: Fulfillment, fulfillment_orders: list[dict[str, Any]]) -> dict[str, Any]:
    """The POST /fulfillments.json attributes for exactly the shipment's lines: each order line's units
    are taken from the fulfillment order line items that still hold them (an order split across
    locations has one fulfillment order per location), grouped per fulfillment order. ChannelRejected
    if a line has nothing left to fulfil on Shopify."""
    open_items = [
        item
        for fo in fulfillment_orders
        if fo.get("status") in FULFILLABLE_STATUSES
        for item in fo.get("line_items") or []
        if int(item.get("fulfillable_quantity") or 0) > 0
    ]
    groups: dict[int, list[dict[str, int]]] = {}
    for line in fulfillment.lines:
        left = line.quantity
        for item in open_items:
            if left == 0:
                break
            if line.external_line_id is None or str(item.get("line_item_id")) != line.external_line_id:
                continue
            take = min(left, int(item["fulfillable_quantity"]))
            item["fulfillable_quantity"] = int(item["fulfillable_quantity"]) - take
            groups.setdefault(int(item["fulfillment_order_id"]), []).append(
                {"id": int(item["id"]), "quantity": take}
            )
            left -= take
        if left:
            raise ChannelRejected(
                None,
                f"Shopify has no {line.quantity} unfulfilled x {line.sku} (line item "
                f"{line.external_line_id}) on order {fulfillment.order_external_id} to fulfil",
            )
    return {
        "line_items_by_fulfillment_order": [
            {"fulfillment_order_id": fo_id, "fulfillment_order_line_items": items}
            for fo_id, items in groups.items()
        ],
        "tracking_info": {
            "number": fulfillment.tracking_number,
            "company": fulfillment.tracking_company,
            "url": fulfillment.tracking_url,
        },
        "notify_customer": True,
    }


class ShopifyAdapter:
    type = "shopify"
    number_letter = "S"

    def __init__(self, admin_url_template: str) -> None:
        self.admin_url_template = admin_url_template
        """Where a shop's Admin API lives; "https://{shop}" in production, a sandbox in tests."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopifyAdapter:
        return cls(settings.shopify_admin_url)

    def normalize_address(self, address: str) -> str:
        address = address.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if not _SHOP_DOMAIN.match(address):
            raise ValueError("a Shopify channel needs its shop domain, like acme.myshopify.com")
        return address

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        return False

    def signature_present(self, headers: Mapping[str, str]) -> bool:
        return bool(headers.get(SIGNATURE_HEADER))

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify(secret, body, headers.get(SIGNATURE_HEADER))

    def delivery(self, headers: Mapping[str, str], body: bytes, address: str) -> Delivery:
        if (headers.get(SHOP_HEADER) or "").strip().lower() != address:
            raise DeliveryRefused(401, "SHOP_MISMATCH", "X-Shopify-Shop-Domain does not match this channel")
        topic = headers.get(TOPIC_HEADER)
        event_id, webhook_id = headers.get(EVENT_ID_HEADER), headers.get(WEBHOOK_ID_HEADER)
        if not topic or not (event_id or webhook_id):
            raise DeliveryRefused(
                400,
                "MISSING_HEADER",
                "X-Shopify-Topic and X-Shopify-Event-Id (or X-Shopify-Webhook-Id) are required",
            )
        try:
            triggered = parse_time(headers.get(TRIGGERED_AT_HEADER))
        except PayloadError:
            triggered = None
        # X-Shopify-Event-Id names the event (the same for every delivery of it); X-Shopify-Webhook-Id
        # names one delivery and is the fallback for payloads sent without an event id.
        dedup_key = f"event:{event_id}" if event_id else f"webhook:{webhook_id}"
        return Delivery(
            topic=topic, delivery_id=webhook_id or event_id or "", dedup_key=dedup_key, triggered_at=triggered
        )

    def classify(self, topic: str) -> TopicKind:
        if topic in ORDER_TOPICS:
            return TopicKind.ORDER
        return TopicKind.EDIT if topic == EDIT_TOPIC else TopicKind.IGNORED

    def map_order(self, data: Any, kind: TopicKind) -> CanonicalOrder:
        return map_order(data)

    def edited_order_id(self, data: Any) -> str:
        return edited_order_id(data)

    def _site(self, access: ChannelAccess) -> tuple[str, str]:
        if not access.token:
            raise ChannelActionNeeded("this needs the channel's Admin API credentials (an access token)")
        return shopify_api.site(self.admin_url_template, access.address), access.token

    async def fetch_order(self, access: ChannelAccess, order_id: str) -> dict[str, Any]:
        return await shopify_api.fetch_order(*self._site(access), order_id)

    async def orders_page(
        self, access: ChannelAccess, since: datetime, until: datetime, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await shopify_api.orders_page(*self._site(access), since, until, cursor)

    async def push_fulfillment(
        self, access: ChannelAccess, fulfillment: Fulfillment, *, http: httpx.AsyncClient
    ) -> PushResult:
        """Through ShopifyAPI (its own HTTP client, in a thread): the fulfillment-orders flow."""
        site, token = self._site(access)
        ref, already = await shopify_api.push_fulfillment_async(
            site,
            token,
            fulfillment.order_external_id,
            fulfillment.tracking_number,
            lambda orders: fulfillment_body(fulfillment, orders),
        )
        return PushResult(external_ref=ref, already_there=already)
