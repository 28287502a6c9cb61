"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from sqlalchemy import text

from rappit.platform.errors import envelope


@get("/health/live", tags=["health"], exclude_from_auth=True)
async def live() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/health/ready", tags=["health"], exclude_from_auth=True)
async def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    """PostgreSQL and Redis both answer within 2 s; otherwise 503 naming what is down."""
    state = request.app.state
    checks: dict[str, str] = {}

    async def check_db() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("select 1"))

    async def check_redis() -> None:
        await state.redis.ping()

    for name, probe in (("postgres", check_db), ("redis", check_redis)):
        try:
            await asyncio.wait_for(probe(), timeout=2)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks[name] = f"down: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return Response({"status": "ok", "checks": checks})
    return envelope(
        request, status=503, code="NOT_READY", message="a dependency is down", details={"checks": checks}
    )


ROUTES = [live, ready]
