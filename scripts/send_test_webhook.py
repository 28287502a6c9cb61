"""Send a signed, Shopify-shaped `orders/create` webhook to a Rappit channel, as Shopify would.

    .venv/bin/python scripts/send_test_webhook.py --url WEBHOOK_URL --secret SECRET \\
        --shop demo-shop.myshopify.com --sku TEE-M --quantity 2

WEBHOOK_URL and SECRET are what `POST /api/v1/channels` answered (`channel.webhook_url`,
`webhook_secret`); --shop is the channel's `address`. The body is signed like Shopify signs it
(base64 HMAC-SHA256 of the raw body with the channel's secret). Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime


def shopify_order(order_id: int, lines: list[tuple[str, int]], *, price: str = "12.50") -> dict:
    """The parts of a Shopify order Rappit reads."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "id": order_id,
        "name": f"#{order_id}",
        "currency": "USD",
        "created_at": now,
        "updated_at": now,
        "cancelled_at": None,
        "line_items": [
            {"id": order_id * 100 + i, "sku": sku, "title": sku, "quantity": qty, "price": price}
            for i, (sku, qty) in enumerate(lines)
        ],
    }


def signed_request(
    *, secret: str, shop: str, order: dict, topic: str = "orders/create"
) -> tuple[bytes, dict[str, str]]:
    """The raw body and the headers Shopify sends with it."""
    body = json.dumps(order).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    return body, headers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the channel's webhook_url")
    parser.add_argument("--secret", required=True, help="the channel's webhook_secret (shown once)")
    parser.add_argument("--shop", required=True, help="the channel's address, e.g. demo-shop.myshopify.com")
    parser.add_argument("--sku", action="append", required=True, help="a line's SKU (repeat for more lines)")
    parser.add_argument("--quantity", type=int, action="append", help="its quantity (default 1)")
    parser.add_argument("--order-id", type=int, default=None, help="Shopify's order id (default: new)")
    args = parser.parse_args(argv)
    quantities = args.quantity or []
    lines = [(sku, quantities[i] if i < len(quantities) else 1) for i, sku in enumerate(args.sku)]
    order_id = args.order_id or int(time.time() * 1000)
    body, headers = signed_request(secret=args.secret, shop=args.shop, order=shopify_order(order_id, lines))
    request = urllib.request.Request(args.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(f"{response.status} {response.read().decode()}  (Shopify order id {order_id})")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{exc.code} {exc.read().decode()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
