from __future__ import annotations

import io
import json

from rappit.platform.logging import configure_logging


async def capture(client, **kwargs) -> tuple[object, list[dict]]:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        resp = await client.get("/api/v1/me", **kwargs)
    finally:
        configure_logging("INFO", json=True)
    return resp, [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_incoming_request_id_is_echoed_and_on_every_log_line(client, make_org) -> None:
    org = await make_org()
    resp, lines = await capture(client, headers={**org.headers, "X-Request-ID": "trace-abc-123"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "trace-abc-123"
    access = [line for line in lines if line["event"] == "http.request"]
    assert access and access[0]["request_id"] == "trace-abc-123"
    assert access[0]["org_id"] == str(org.id) and access[0]["status"] == 200
    assert all(
        line.get("request_id") == "trace-abc-123" for line in lines if line["logger"].startswith("rappit")
    )


async def test_request_id_is_generated_when_absent_or_unsafe(client, make_org) -> None:
    org = await make_org()
    generated, _ = await capture(client, headers=org.headers)
    assert len(generated.headers["x-request-id"]) == 32
    unsafe, lines = await capture(client, headers={**org.headers, "X-Request-ID": 'evil"value with spaces'})
    rid = unsafe.headers["x-request-id"]
    assert rid != 'evil"value with spaces' and len(rid) == 32
    assert any(line.get("request_id") == rid for line in lines)


async def test_tokens_never_reach_the_logs(client, make_org) -> None:
    org = await make_org()
    _, lines = await capture(client, headers=org.headers)
    assert org.token not in json.dumps(lines)
