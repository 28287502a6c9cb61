"""A loopback WooCommerce REST API v3 for the fulfillment push (CARRIERS.md §4):
PUT /wp-json/wc/v3/orders/{id} (a known status only), GET and POST /wp-json/wc/v3/orders/{id}/notes,
HTTP Basic consumer key:secret, errors `{code, message, data: {status}}`. Switches: `faults.server_error`
(the next N calls answer 500), `drop_after_note` (add the note, then drop the connection)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from rappit.integrations.sandboxes._loopback import Drop, LoopbackServer, Reply

_ORDER = re.compile(r"^/wp-json/wc/v3/orders/(\d+)$")
_NOTES = re.compile(r"^/wp-json/wc/v3/orders/(\d+)/notes$")
STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed", "trash")


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"code": code, "message": message, "data": {"status": status}})


class FakeWooCommerce(LoopbackServer):
    def __init__(self, consumer_key: str = "ck_test", consumer_secret: str = "cs_test") -> None:
        super().__init__()
        self.expected_auth = (
            "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        )
        self.orders: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self.drop_after_note = 0
        """Add the next N notes, then drop the connection without answering."""

    def put_order(self, order_id: int | str, status: str = "processing") -> None:
        self.orders[str(order_id)] = {"id": int(order_id), "status": status}

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("authorization") != self.expected_auth:
            return _error(
                401,
                "woocommerce_rest_authentication_error",
                "Invalid signature - provided signature does not match.",
            )
        if self.take_server_error():
            return _error(500, "internal_server_error", "There has been a critical error on this website.")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "rest_invalid_json", "Invalid JSON body passed.")
        path = path.split("?", 1)[0]
        if method == "PUT" and (m := _ORDER.match(path)):
            order = self.orders.get(m.group(1))
            if order is None:
                return _error(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
            if "status" in data:
                if data["status"] not in STATUSES:
                    return _error(400, "rest_invalid_param", "Invalid parameter(s): status")
                order["status"] = data["status"]
            return Reply(200, order)
        if method == "GET" and (m := _NOTES.match(path)):
            if m.group(1) not in self.orders:
                return _error(404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
            return Reply(200, list(reversed(self.notes.get(m.group(1), []))))
        if method == "POST" and (m := _NOTES.match(path)):
            if m.group(1) not in self.orders:
                return _error(404, "woocommerce_rest_order_invalid_id", "Invalid order ID.")
            if not data.get("note"):
                return _error(400, "rest_missing_callback_param", "Missing parameter(s): note")
            note = {
                "id": sum(map(len, self.notes.values())) + 1,
                "note": data["note"],
                "customer_note": bool(data.get("customer_note")),
            }
            self.notes.setdefault(m.group(1), []).append(note)
            if self.drop_after_note > 0:
                self.drop_after_note -= 1
                raise Drop
            return Reply(201, note)
        return _error(404, "rest_no_route", "No route was found matching the URL and request method.")
