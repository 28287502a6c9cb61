"""The README's first-order walk: scripts/send_test_webhook.py signs and shapes a Shopify order that
the real ingress accepts and the worker turns into a reserved order."""

from __future__ import annotations

import importlib.util
import uuid

from tests.orders.helpers import run_worker


def load_script(repo_root):
    spec = importlib.util.spec_from_file_location(
        "send_test_webhook", repo_root / "scripts/send_test_webhook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_readme_walk_ends_with_an_order(client, make_org, settings, repo_root) -> None:
    org = await make_org()
    h = org.headers
    assert (
        await client.post("/api/v1/skus", json={"code": "TEE-M", "name": "T-shirt M"}, headers=h)
    ).status_code == 201
    assert (await client.post("/api/v1/warehouses", json={"code": "MAIN"}, headers=h)).status_code == 201
    stock = {"sku": "TEE-M", "warehouse_code": "MAIN", "quantity": 10, "reason": "receive"}
    assert (await client.post("/api/v1/inventory/adjust", json=stock, headers=h)).status_code == 200
    shop = f"demo-{uuid.uuid4().hex[:8]}.myshopify.com"
    created = await client.post(
        "/api/v1/channels", json={"type": "shopify", "name": "Demo shop", "address": shop}, headers=h
    )
    assert created.status_code == 201, created.text
    channel, secret = created.json()["channel"], created.json()["webhook_secret"]

    script = load_script(repo_root)
    body, headers = script.signed_request(
        secret=secret, shop=shop, order=script.shopify_order(1001, [("TEE-M", 2)])
    )
    path = channel["webhook_url"].split("/webhooks/", 1)[1]
    sent = await client.post(f"/webhooks/{path}", content=body, headers=headers)
    assert sent.status_code == 200, sent.text
    await run_worker(settings)

    [order] = (await client.get("/api/v1/orders", headers=h)).json()["items"]
    assert order["status"] == "open", order
    level = (await client.get("/api/v1/inventory?sku=TEE-M", headers=h)).json()["items"][0]
    assert level["reserved"] == 2 and level["available"] == 8

    # A wrong secret is what a misconfigured channel looks like: refused, nothing stored.
    body, headers = script.signed_request(
        secret="not-the-secret-0000", shop=shop, order=script.shopify_order(1002, [("TEE-M", 1)])
    )
    assert (await client.post(f"/webhooks/{path}", content=body, headers=headers)).status_code == 401


def test_the_script_has_usage(repo_root) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(repo_root / "scripts/send_test_webhook.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "--secret" in proc.stdout
