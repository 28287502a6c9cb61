"""Calls to the Shopify Admin REST API through the ShopifyAPI package.

ShopifyAPI is synchronous, so calls run in a thread. Its site and headers are thread-local but every
setter also overwrites the class-wide default other threads fall back to, so each call sets both
right before it runs, in its own thread, and never relies on what another call left behind.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from rappit.integrations.channels.base import ChannelRejected, ChannelUnavailable

API_VERSION = "2024-10"
TIMEOUT_SECONDS = 15.0
"""Socket timeout of every Admin API call: a hung shop never holds a worker thread longer."""
T = TypeVar("T")


def site(admin_url_template: str, shop: str) -> str:
    return admin_url_template.format(shop=shop).rstrip("/") + f"/admin/api/{API_VERSION}"


def _use(site_url: str, token: str) -> Any:
    import shopify

    shopify.ShopifyResource.set_site(site_url)
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": token})
    shopify.ShopifyResource.set_timeout(TIMEOUT_SECONDS)
    return shopify


def translated(call: Callable[[], T]) -> T:
    """Run a ShopifyAPI call, its failures as the channel errors the caller acts on: 429, 5xx and
    transport failures may pass (ChannelUnavailable); any other 4xx will not (ChannelRejected)."""
    from pyactiveresource import connection

    try:
        return call()
    except connection.ClientError as exc:
        if exc.code == 429:
            raise ChannelUnavailable(f"Shopify throttled the call (429): {exc}") from exc
        raise ChannelRejected(exc.code, f"Shopify refused the call: {exc}") from exc
    except connection.Error as exc:  # 5xx, or urllib's URLError (connection refused, DNS)
        raise ChannelUnavailable(f"Shopify did not answer usably: {exc.code or ''} {exc}".strip()) from exc
    except (OSError, http.client.HTTPException) as exc:  # a timeout, a dropped connection
        raise ChannelUnavailable(f"Shopify did not answer: {type(exc).__name__}: {exc}") from exc


def _order(site_url: str, token: str, order_id: str) -> dict[str, Any]:
    found: dict[str, Any] = _use(site_url, token).Order.find(order_id).to_dict()
    return found


def _orders_page(
    site_url: str, token: str, since: datetime, until: datetime, page_url: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    shopify = _use(site_url, token)
    if page_url:  # Shopify refuses filters next to page_info: the Link header's URL is followed as is
        found = shopify.Order.find(from_=page_url)
    else:
        found = shopify.Order.find(
            updated_at_min=since.isoformat(),
            updated_at_max=until.isoformat(),
            status="any",
            limit=250,
            order="updated_at asc",
        )
    return [o.to_dict() for o in found], getattr(found, "next_page_url", None)


async def fetch_order(site_url: str, token: str, order_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(_order, site_url, token, order_id)


async def orders_page(
    site_url: str, token: str, since: datetime, until: datetime, page_url: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of up to 250 orders updated in [since, until], oldest update first, and the URL of the
    next page (the Link header's rel="next", cursor-based pagination) or None on the last one."""
    return await asyncio.to_thread(_orders_page, site_url, token, since, until, page_url)


def _fulfillments(site_url: str, token: str, order_id: str) -> list[dict[str, Any]]:
    found = _use(site_url, token).Fulfillment.find(order_id=order_id)
    return [f.to_dict() for f in found]


def _fulfillment_orders(site_url: str, token: str, order_id: str) -> list[dict[str, Any]]:
    found = _use(site_url, token).FulfillmentOrders.find(order_id=order_id)
    return [f.to_dict() for f in found]


def _create_fulfillment(site_url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /fulfillments.json (the fulfillment-orders flow; the order-scoped endpoint is gone)."""
    made = _use(site_url, token).FulfillmentV2(body)
    if not made.save():  # ShopifyAPI answers a 422 with False and the errors
        raise ChannelRejected(
            422, "Shopify refused the fulfillment: " + "; ".join(made.errors.full_messages())
        )
    created: dict[str, Any] = made.to_dict()
    return created


def push_fulfillment(
    site_url: str,
    token: str,
    order_id: str,
    tracking_number: str,
    build: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> tuple[str, bool]:
    """(fulfillment id, already there). One thread does every call, setting site and token itself:
    first the order's fulfillments (an earlier attempt that reached Shopify left one with this tracking
    number: nothing is created twice), then its fulfillment orders, then the fulfillment `build` makes
    from them."""
    for existing in translated(lambda: _fulfillments(site_url, token, order_id)):
        numbers = existing.get("tracking_numbers") or [existing.get("tracking_number")]
        if tracking_number in numbers and existing.get("status") not in ("cancelled", "error", "failure"):
            return str(existing["id"]), True
    orders = translated(lambda: _fulfillment_orders(site_url, token, order_id))
    body = build(orders)
    created = translated(lambda: _create_fulfillment(site_url, token, body))
    return str(created["id"]), False


async def push_fulfillment_async(
    site_url: str,
    token: str,
    order_id: str,
    tracking_number: str,
    build: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> tuple[str, bool]:
    return await asyncio.to_thread(push_fulfillment, site_url, token, order_id, tracking_number, build)
