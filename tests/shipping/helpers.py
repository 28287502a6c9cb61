"""Signed carrier callbacks and a real arq worker with short retry delays, for the shipping tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from sqlalchemy import text

from rappit.integrations.carriers.callbacks import signed_headers
from rappit.workers.settings import redis_settings
from tests.orders import helpers as orders_helpers
from tests.shipping.conftest import add_account, order_with_stock, shipment_body


async def bought_label(client: Any, org: Any, fake: Any, **order: Any) -> tuple[dict, str, dict, dict]:
    """A FedEx account (with its callback secret), an order with reserved stock, and a label bought for it."""
    made = await add_account(client, org, "fedex", fake.url)
    placed = await order_with_stock(client, org, **order)
    resp = await client.post(
        "/api/v1/shipments", json=shipment_body(placed["id"], made["account"]["id"]), headers=org.headers
    )
    assert resp.status_code == 201, resp.text
    return made["account"], made["callback_secret"], placed, resp.json()


def fedex_event(
    tracking_number: str, code: str, *, event_id: str | None = None, reference: str | None = None
) -> dict:
    body: dict[str, Any] = {
        "eventId": event_id or f"ev-{uuid.uuid4().hex}",
        "trackingNumber": tracking_number,
        "scanEvent": {"date": datetime.now(UTC).isoformat(), "eventType": code, "eventDescription": code},
    }
    if reference:
        body["customerReference"] = reference
    return body


async def send_callback(
    client: Any,
    account_id: str,
    secret: str,
    payload: dict,
    *,
    carrier: str = "fedex",
    now: datetime | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Any:
    raw = json.dumps(payload).encode()
    signed = signed_headers(secret, raw, now=now or datetime.now(UTC))
    return await client.post(
        f"/callbacks/carriers/{carrier}/{account_id}",
        content=body if body is not None else raw,
        headers={"Content-Type": "application/json", **(signed if headers is None else headers)},
    )


async def run_worker(settings: Any, *, max_seconds: float = 90, **knobs: Any) -> None:
    """The orders tests' burst worker, with short callback and label-void delays."""
    short = {"webhook_backoff": (0.1,), "callback_backoff": (0.1,), "label_void_backoff": (0.1,)}
    await orders_helpers.run_worker(settings, max_seconds=max_seconds, **{**short, **knobs})


async def enqueue(settings: Any, job: str, *args: Any) -> None:
    pool = await create_pool(redis_settings(settings))
    try:
        assert await pool.enqueue_job(job, *args) is not None
    finally:
        await pool.aclose()


async def rows(admin_engine: Any, sql: str, **params: Any) -> list[Any]:
    async with admin_engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def callback_rows(admin_engine: Any, org_id: Any) -> list[Any]:
    return await rows(
        admin_engine,
        "select carrier_event_id, status, outcome, shipment_id, attempts from carrier_callback_events"
        " where org_id = :o order by received_at",
        o=org_id,
    )


async def commit_rows(admin_engine: Any, org_id: Any) -> list[Any]:
    return await rows(
        admin_engine,
        "select reference_id, on_hand_delta from inventory_ledger where org_id = :o and reason = 'commit'",
        o=org_id,
    )
