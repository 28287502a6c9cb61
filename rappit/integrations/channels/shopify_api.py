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


def _orders_since(site_url: str, token: str, since: datetime) -> list[dict[str, Any]]:
    found = _use(site_url, token).Order.find(updated_at_min=since.isoformat(), status="any", limit=250)
    return [o.to_dict() for o in found]


async def fetch_order(site_url: str, token: str, order_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(_order, site_url, token, order_id)


async def orders_updated_since(site_url: str, token: str, since: datetime) -> list[dict[str, Any]]:
    """One page of up to 250 orders, oldest update first; the caller advances its watermark."""
    return await asyncio.to_thread(_orders_since, site_url, token, since)
