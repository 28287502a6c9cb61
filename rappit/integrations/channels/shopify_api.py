"""Calls to the Shopify Admin REST API through the ShopifyAPI package.

ShopifyAPI is synchronous, so calls run in a thread. Its site and headers are thread-local but every
setter also overwrites the class-wide default other threads fall back to, so each call sets both
right before it runs, in its own thread, and never relies on what another call left behind.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

API_VERSION = "2024-10"


def site(admin_url_template: str, shop: str) -> str:
    return admin_url_template.format(shop=shop).rstrip("/") + f"/admin/api/{API_VERSION}"


def _use(site_url: str, token: str) -> Any:
    import shopify

    shopify.ShopifyResource.set_site(site_url)
    shopify.ShopifyResource.set_headers({"X-Shopify-Access-Token": token})
    return shopify


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
