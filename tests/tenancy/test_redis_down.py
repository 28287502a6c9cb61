"""With Redis down, what needs Redis (login, cookie sessions) says 503 in the envelope; bearer tokens,
which never touch Redis, keep working."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from rappit.app.factory import create_app
from rappit.platform.localstack import EmbeddedRedis
from tests.conftest import client_for, start_app, stop_app
from tests.platform.test_errors import assert_envelope


async def test_login_and_cookie_sessions_are_503_while_bearer_tokens_work_with_redis_down(
    make_org, settings
) -> None:
    org = await make_org()
    own = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="rappit-redis-")))  # this test's Redis, to stop
    own.start()
    app = create_app(dataclasses.replace(settings, redis_url=own.url))
    await start_app(app)
    login = {"org_code": org.code, "email": org.owner_email, "password": org.password}
    try:
        async with client_for(app) as c:
            assert (await c.post("/auth/login", json=login)).status_code == 200
            assert (await c.get("/api/v1/me")).status_code == 200  # the cookie works while Redis is up
            own.stop()
            error = assert_envelope(await c.post("/auth/login", json=login), 503, "DEPENDENCY_UNAVAILABLE")
            assert error["details"]["dependency"] == "redis"
            assert_envelope(await c.get("/api/v1/me"), 503, "DEPENDENCY_UNAVAILABLE")
            assert_envelope(await c.post("/auth/logout"), 503, "DEPENDENCY_UNAVAILABLE")
            c.cookies.clear()
            fresh = await c.post("/auth/login", json=login)  # no cookie: only the session write fails
            assert_envelope(fresh, 503, "DEPENDENCY_UNAVAILABLE")
            assert "set-cookie" not in fresh.headers and fresh.headers["retry-after"]
            bearer = await c.get("/api/v1/me", headers=org.headers)
            assert bearer.status_code == 200 and bearer.json()["org_id"] == str(org.id)
            own.start()
            assert (await c.post("/auth/login", json=login)).status_code == 200  # back without a restart
            assert (await c.get("/api/v1/me")).status_code == 200
    finally:
        await stop_app(app)
        own.stop()
