"""A loopback fake of the Shopify Admin REST API (the endpoints Rappit calls), for tests, benchmarks
and the demo: Shopify itself cannot be reached from here.

GET /admin/api/{version}/orders/{id}.json and GET /admin/api/{version}/orders.json?updated_at_min=...,
answering only with the right X-Shopify-Access-Token.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rappit.integrations.sandboxes._loopback import Server

_ORDER = re.compile(r"^/admin/api/[^/]+/orders/(\d+)\.json$")
_ORDERS = re.compile(r"^/admin/api/[^/]+/orders\.json$")


class FakeShopify:
    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self._server: Server | None = None

    def put_order(self, order: dict[str, Any]) -> None:
        self.orders[str(order["id"])] = order

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, port: int = 0) -> FakeShopify:
        """Serve on 127.0.0.1:`port` (0: a free one). OSError if that port is taken."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if self.headers.get("X-Shopify-Access-Token") != fake.access_token:
                    self._send(401, {"errors": "[API] Invalid API key or access token"})
                    return
                parts = urlsplit(self.path)
                if m := _ORDER.match(parts.path):
                    order = fake.orders.get(m.group(1))
                    self._send(200, {"order": order}) if order else self._send(404, {"errors": "Not Found"})
                    return
                if _ORDERS.match(parts.path):
                    query = parse_qs(parts.query)
                    since = query.get("updated_at_min", [None])[0]
                    limit = int(query.get("limit", ["50"])[0])
                    found = sorted(fake.orders.values(), key=lambda o: o["updated_at"])
                    if since:
                        floor = datetime.fromisoformat(since.replace("Z", "+00:00"))
                        found = [o for o in found if datetime.fromisoformat(o["updated_at"]) >= floor]
                    self._send(200, {"orders": found[:limit]})
                    return
                self._send(404, {"errors": "Not Found"})

        self._server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
