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
        await client.post("/api/v1/users", content=b"{not json", headers=headers), 400, "MALFORMED_JSON"
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


JSON_ROUTES = [
    "/api/v1/users",
    "/api/v1/tokens",
    "/api/v1/skus",
    "/api/v1/warehouses",
    "/api/v1/inventory/adjust",
    "/api/v1/inventory/bulk",
    "/api/v1/reservations",
    "/api/v1/channels",
    "/api/v1/orders",
]
MALFORMED = {"invalid utf-8": b'{"email":"\xff"}', "deep nesting": b"[" * 100_000, "truncated": b"{not json"}


async def test_malformed_json_is_a_400_on_login_and_every_json_route(client, make_org) -> None:
    org = await make_org()
    channel = (
        await client.post(
            "/api/v1/channels",
            json={"type": "shopify", "name": "S", "address": "s.myshopify.com"},
            headers=org.headers,
        )
    ).json()["channel"]
    routes = [("/auth/login", {}), *((path, org.headers) for path in JSON_ROUTES)]
    routes.append((f"/api/v1/channels/{channel['id']}/settings", org.headers))
    for path, auth in routes:
        for name, body in MALFORMED.items():
            headers = {**auth, "content-type": "application/json"}
            resp = await client.post(path, content=body, headers=headers)
            error = assert_envelope(resp, 400, "MALFORMED_JSON")
            assert "request body is not valid JSON" in error["message"], (path, name)


async def test_a_json_route_refuses_other_content_types_with_415(client, make_org) -> None:
    org = await make_org()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        resp = await client.post(
            "/api/v1/skus",
            content=b'{"code": "A", "name": "a"}',
            headers={**org.headers, "content-type": content_type},
        )
        assert_envelope(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    bulk = await client.post(
        "/api/v1/inventory/bulk", content=b"<a/>", headers={**org.headers, "content-type": "application/xml"}
    )
    assert_envelope(bulk, 415, "UNSUPPORTED_MEDIA_TYPE")
    resp = await client.post(
        "/auth/login",
        content=b'{"org_code": "X", "email": "a@b.c", "password": "x"}',
        headers={"content-type": "text/plain"},
    )
    assert_envelope(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    ok = await client.post(
        "/api/v1/skus",
        content=b'{"code": "A", "name": "a"}',
        headers={**org.headers, "content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201, ok.text


async def test_an_unknown_field_names_the_fields_the_body_takes(client, make_org) -> None:
    """The first guess at SKU create is often `sku`: the 400 says the body takes `code` (and what else)."""
    org = await make_org()
    error = assert_envelope(
        await client.post("/api/v1/skus", json={"sku": "TEE-M"}, headers=org.headers), 400, "VALIDATION_ERROR"
    )
    [problem] = error["details"]["errors"]
    assert problem["expected"] == [
        "code",
        "name",
        "reorder_point",
        "hs_code",
        "country_of_origin",
        "customs_value_minor",
        "customs_currency",
        "weight_grams",
    ]
    assert "unknown field `sku`" in problem["message"]
    assert "expected fields: code, name, reorder_point, hs_code," in problem["message"]
    assert "(required: code)" in problem["message"]
    assert "expected fields: code, name, reorder_point, hs_code" in error["message"]

    # Nested objects too: a reservation line names a line's fields, not the reservation's.
    body = {"lines": [{"sku": "TEE-M", "warehouse": "W1", "quantity": 1}]}
    error = assert_envelope(
        await client.post("/api/v1/reservations", json=body, headers=org.headers), 400, "VALIDATION_ERROR"
    )
    [problem] = error["details"]["errors"]
    assert problem["expected"] == ["sku", "warehouse_code", "quantity"], problem
