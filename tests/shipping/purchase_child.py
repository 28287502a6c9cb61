"""A label purchase through the real API, in a process of its own (`python -m tests.shipping.purchase_child`),
for the saga test that SIGKILLs it while the carrier is answering. Reads DATABASE_URL, REDIS_URL and
PURCHASE_TOKEN / PURCHASE_BODY from the environment; exits 3 if it was not killed."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

from rappit.app.factory import create_app
from rappit.platform.settings import Settings


async def main() -> int:
    app = create_app(Settings.from_env(system_db="forbidden"))
    for hook in app.on_startup:
        await app._call_lifespan_hook(hook)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
        resp = await client.post(
            "/api/v1/shipments",
            json=json.loads(os.environ["PURCHASE_BODY"]),
            headers={"Authorization": f"Bearer {os.environ['PURCHASE_TOKEN']}"},
        )
    print(f"survived: {resp.status_code} {resp.text}", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
