"""Shopify: webhook headers, payload mapping (REST Admin API order shape) and the Admin API client."""

from __future__ import annotations

from typing import Any

from rappit.integrations.channels.canonical import (
    CanonicalLine,
    CanonicalOrder,
    PayloadError,
    parse_time,
    quantity,
    sku_of,
    to_minor,
)

SIGNATURE_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
SHOP_HEADER = "x-shopify-shop-domain"
EVENT_ID_HEADER = "x-shopify-event-id"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
TRIGGERED_AT_HEADER = "x-shopify-triggered-at"

ORDER_TOPICS = {"orders/create", "orders/updated", "orders/cancelled"}
EDIT_TOPIC = "orders/edited"


def map_order(payload: dict[str, Any]) -> CanonicalOrder:
    """A full Shopify order (orders/create, orders/updated, orders/cancelled, or the Admin API)."""
    if not isinstance(payload, dict) or "id" not in payload:
        raise PayloadError("not a Shopify order: no id")
    currency = str(payload.get("currency") or payload.get("presentment_currency") or "").upper()
    if len(currency) != 3:
        raise PayloadError("order has no currency")
    lines = []
    for item in payload.get("line_items") or []:
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
        external_id=str(payload["id"]),
        name=str(payload.get("name") or payload.get("order_number") or payload["id"]),
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
