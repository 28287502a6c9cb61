"""WooCommerce: webhook headers and payload mapping (REST API v3 order shape)."""

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

SIGNATURE_HEADER = "x-wc-webhook-signature"
TOPIC_HEADER = "x-wc-webhook-topic"
DELIVERY_HEADER = "x-wc-webhook-delivery-id"
SOURCE_HEADER = "x-wc-webhook-source"

ORDER_TOPICS = {"order.created", "order.updated"}
DELETE_TOPIC = "order.deleted"
CANCELLED_STATUSES = {"cancelled", "refunded", "trash", "failed"}


def map_order(payload: dict[str, Any], *, deleted: bool = False) -> CanonicalOrder:
    if not isinstance(payload, dict) or "id" not in payload:
        raise PayloadError("not a WooCommerce order: no id")
    if deleted:  # order.deleted sends only {"id": ...}: it can only cancel (currency and lines unused)
        return CanonicalOrder(external_id=str(payload["id"]), name=str(payload["id"]), currency="XXX",
                              updated_at=None, cancelled=True)
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
        for item in payload.get("line_items") or []
    ]
    return CanonicalOrder(
        external_id=str(payload["id"]),
        name=str(payload.get("number") or payload["id"]),
        currency=currency,
        updated_at=parse_time(payload.get("date_modified_gmt")),  # GMT without an offset
        cancelled=str(payload.get("status") or "") in CANCELLED_STATUSES,
        lines=lines,
    )
