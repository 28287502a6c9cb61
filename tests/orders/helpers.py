"""Sending signed webhooks and running a real worker in-process (its inbox claim loop, drained, and an
arq worker in burst mode), for the order tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.worker import Worker

from rappit.integrations.channels.signatures import sign
from rappit.workers.context import Deps
from rappit.workers.inbox import drain
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
    """A real worker until there is nothing left to do: the inbox drained by its claim loop (every
    org's pending events, retries included), then a real arq worker in burst mode (its queue drained,
    deferred retries included), then the inbox again; `knobs` are tuning values the worker reads from
    its ctx (backoffs, grace periods)."""
    knobs = {"webhook_backoff": (0.2, 0.2, 0.2), **knobs}
    names = {f.name for f in dataclasses.fields(Deps)}
    deps = Deps.build(settings, pool_size=4, max_overflow=4, **{k: v for k, v in knobs.items() if k in names})
    try:
        await drain(deps, max_seconds=max_seconds)
        await _run_arq(settings, max_seconds=max_seconds, **knobs)
        await drain(deps, max_seconds=max_seconds)
    finally:
        await deps.close()


async def _run_arq(settings, *, max_seconds: float, **knobs: Any) -> None:
    worker = Worker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        redis_settings=redis_settings(settings),
        burst=True,
        ctx={"settings": settings, **knobs},
        poll_delay=0.05,
        max_jobs=10,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=max_seconds)
    finally:
        await worker.close()
