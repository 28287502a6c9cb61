"""The fake WooCommerce REST endpoint the fulfillment push will talk to."""

from __future__ import annotations

import httpx

from rappit.integrations.sandboxes.woocommerce import FakeWooCommerce


async def test_complete_order_and_add_note_with_basic_auth(http: httpx.AsyncClient) -> None:
    fake = FakeWooCommerce().start()
    try:
        fake.put_order(77)
        auth = ("ck_test", "cs_test")
        base = f"{fake.url}/wp-json/wc/v3/orders"
        done = await http.put(f"{base}/77", json={"status": "completed"}, auth=auth)
        assert done.status_code == 200 and fake.orders["77"]["status"] == "completed"
        note = await http.post(f"{base}/77/notes", json={"note": "FedEx 794000000001"}, auth=auth)
        assert note.status_code == 201 and fake.notes["77"][0]["note"] == "FedEx 794000000001"
        missing = await http.post(f"{base}/78/notes", json={"note": "x"}, auth=auth)
        assert missing.json()["code"] == "woocommerce_rest_order_invalid_id"
        bad = await http.put(f"{base}/77", json={"status": "completed"}, auth=("ck_test", "nope"))
        assert (bad.status_code, bad.json()["data"]["status"]) == (401, 401)
    finally:
        fake.stop()
