"""One envelope for every error, with the right status and no stack trace."""

from __future__ import annotations

import io
import json

from litestar import get

from rappit.app.factory import create_app
from rappit.platform.errors import BusinessRuleViolation
from rappit.platform.logging import configure_logging
from tests.conftest import client_for, start_app, stop_app


@get("/api/v1/_test/boom", exclude_from_auth=True)
async def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/api/v1/_test/rule", exclude_from_auth=True)
async def rule() -> None:
    raise BusinessRuleViolation("cannot do that", code="INSUFFICIENT_STOCK", details={"skus": ["A"]})


def assert_envelope(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["request_id"] == resp.headers["x-request-id"]
    return error


async def test_unknown_route_is_a_404_envelope(client) -> None:
    assert_envelope(await client.get("/no/such/thing"), 404, "NOT_FOUND")


async def test_wrong_method_is_a_405_envelope(client, make_org) -> None:
    org = await make_org()
    assert_envelope(await client.delete("/api/v1/me", headers=org.headers), 405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_and_invalid_fields_are_400_envelopes(client, make_org) -> None:
    org = await make_org()
    headers = {**org.headers, "content-type": "application/json"}
    assert_envelope(
        await client.post("/api/v1/users", content=b"{not json", headers=headers), 400, "BAD_REQUEST"
    )
    error = assert_envelope(
        await client.post(
            "/api/v1/users", json={"email": "x@y.test", "role": "emperor"}, headers=org.headers
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert error["details"]["errors"]


async def test_business_rule_is_422_and_crash_is_500_without_internals(settings) -> None:
    stream = io.StringIO()
    app = create_app(settings)
    configure_logging("INFO", json=True, stream=stream)
    app.register(boom)
    app.register(rule)
    await start_app(app)
    try:
        async with client_for(app) as c:
            error = assert_envelope(await c.get("/api/v1/_test/rule"), 422, "INSUFFICIENT_STOCK")
            assert error["details"] == {"skus": ["A"]}
            crash = await c.get("/api/v1/_test/boom")
            error = assert_envelope(crash, 500, "INTERNAL_ERROR")
            assert "hunter2" not in crash.text and "Traceback" not in crash.text
    finally:
        await stop_app(app)
        configure_logging("INFO", json=True)
    # The stack trace goes to the log, tagged with the request id, not to the client.
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    crash_logs = [line for line in lines if line.get("event") == "http.unhandled_exception"]
    assert crash_logs and crash_logs[0]["request_id"] == error["request_id"]
    assert "RuntimeError" in crash_logs[0]["exception"]


async def test_oversized_body_is_a_413_envelope(client, make_org, settings) -> None:
    org = await make_org()
    big = b"x" * (settings.max_body_bytes + 1)
    resp = await client.post(
        "/api/v1/users", content=big, headers={**org.headers, "content-type": "application/json"}
    )
    assert_envelope(resp, 413, "PAYLOAD_TOO_LARGE")
