"""Sending signed webhooks and running a real arq worker in-process, for the order tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.worker import Worker

from rappit.integrations.channels.signatures import sign
from rappit.workers.settings import WorkerSettings, redis_settings

SECRET = "shpss_test_secret_0123456789abcdef"


async def shopify_channel(client, org, *, warehouse: str | None = None, api_token: str | None = None) -> dict:
    body: dict[str, Any] = {
        "type": "shopify",
        "name": "Shop",
        "address": f"s{uuid.uuid4().hex[:10]}.myshopify.com",
        "webhook_secret": SECRET,
    }
    if api_token:
        body["api_access_token"] = api_token
    resp = await client.post("/api/v1/channels", json=body, headers=org.headers)
    assert resp.status_code == 201, resp.text
    channel = resp.json()["channel"]
    if warehouse:
        r = await client.post(
            f"/api/v1/channels/{channel['id']}/settings",
            json={"warehouse_code": warehouse},
            headers=org.headers,
        )
        assert r.status_code == 200, r.text
    return channel


def shopify_order(
    order_id: int, lines: list[tuple[str | None, int]], *, minutes: int = 0, cancelled: bool = False
) -> dict:
    stamp = (datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat()
    return {
        "id": order_id,
        "name": f"#{order_id}",
        "currency": "USD",
        "updated_at": stamp,
        "cancelled_at": stamp if cancelled else None,
        "line_items": [
            {
                "id": order_id * 100 + i,
                "sku": sku,
                "title": sku or "Gift card",
                "quantity": qty,
                "price": "12.50",
            }
            for i, (sku, qty) in enumerate(lines)
        ],
    }


async def send_shopify(
    client,
    channel: dict,
    payload: Any,
    *,
    topic: str = "orders/create",
    event_id: str | None = None,
    secret: str = SECRET,
    body: bytes | None = None,
    headers: dict | None = None,
):
    raw = body if body is not None else json.dumps(payload).encode()
    h = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": sign(secret, raw),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": channel["address"],
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    h.update(headers or {})
    return await client.post(
        f"/webhooks/shopify/{channel['id']}",
        content=raw,
        headers={k: v for k, v in h.items() if v is not None},
    )


async def run_worker(settings, *, max_seconds: float = 60, **knobs: Any) -> None:
    """A real arq worker (burst mode: drains the queue, including deferred retries, then stops);
    `knobs` are tuning values the worker reads from its ctx (backoffs, grace periods)."""
    worker = Worker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        redis_settings=redis_settings(settings),
        burst=True,
        ctx={"settings": settings, "webhook_backoff": (0.2, 0.2, 0.2), **knobs},
        poll_delay=0.05,
        max_jobs=10,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=max_seconds)
    finally:
        await worker.close()
