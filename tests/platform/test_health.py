from __future__ import annotations

from dataclasses import replace

from rappit.app.factory import create_app
from tests.conftest import client_for


async def test_live_and_ready_report_ok(client) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_ready_is_503_naming_redis_when_redis_is_unreachable(settings) -> None:
    broken = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"))
    async with broken.lifespan(), client_for(broken) as c:
        resp = await c.get("/health/ready")
    assert resp.status_code == 503
    body = resp.json()["error"]
    assert body["code"] == "NOT_READY"
    assert body["details"]["checks"]["postgres"] == "ok"
    assert body["details"]["checks"]["redis"].startswith("down")


async def test_metrics_count_requests(client) -> None:
    await client.get("/health/live")
    metrics = (await client.get("/metrics")).text
    assert "rappit_requests_total" in metrics
    assert 'path="/health/live"' in metrics
    assert "rappit_request_duration_seconds_bucket" in metrics
