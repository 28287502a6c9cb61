"""A loopback fake of the Shopify Admin REST API (the endpoints Rappit calls), for tests, benchmarks
and the demo: Shopify itself cannot be reached from here.

GET /admin/api/{version}/orders/{id}.json and GET /admin/api/{version}/orders.json?updated_at_min=...,
answering only with the right X-Shopify-Access-Token.

The list paginates like Shopify's REST Admin API (cursor-based pagination): `limit` (default 50, at
most 250), filters (updated_at_min/max, status) and `order` ("updated_at asc") on the first request
only; when more results remain, a `Link: <...orders.json?limit=N&page_info=X>; rel="next"` header (and
rel="previous" after the first page) whose opaque page_info is the only way on; a page_info request
that also carries a filter is a 400, as Shopify answers it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ORDER = re.compile(r"^/admin/api/[^/]+/orders/(\d+)\.json$")
_ORDERS = re.compile(r"^/admin/api/[^/]+/orders\.json$")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FakeShopify:
    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.delay = 0.0  # seconds each list request takes (a slow shop, for time-budget tests)
        self._cursors: dict[str, tuple[list[str], int, int]] = {}  # page_info -> (order ids, start, limit)
        self._server: ThreadingHTTPServer | None = None

    def put_order(self, order: dict[str, Any]) -> None:
        self.orders[str(order["id"])] = order

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeShopify:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any], link: str | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                if link:
                    self.send_header("Link", link)
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
                    fake._list(self, parts.path, parse_qs(parts.query))
                    return
                self._send(404, {"errors": "Not Found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _list(self, handler: Any, path: str, query: dict[str, list[str]]) -> None:
        import time

        time.sleep(self.delay)
        limit = int(query.get("limit", ["50"])[0])
        if not 1 <= limit <= 250:
            handler._send(400, {"errors": {"limit": "must be between 1 and 250"}})
            return
        page_info = query.get("page_info", [None])[0]
        if page_info is not None:
            others = sorted(set(query) - {"page_info", "limit", "fields"})
            if others:
                handler._send(
                    400, {"errors": {others[0]: f"{others[0]} cannot be passed when page_info is present"}}
                )
                return
            if page_info not in self._cursors:
                handler._send(400, {"errors": {"page_info": "Invalid value."}})
                return
            ids, start, _ = self._cursors[page_info]
        else:
            found = list(self.orders.values())
            if since := query.get("updated_at_min", [None])[0]:
                floor = _time(since)
                found = [o for o in found if _time(o["updated_at"]) >= floor]
            if until := query.get("updated_at_max", [None])[0]:
                ceiling = _time(until)
                found = [o for o in found if _time(o["updated_at"]) <= ceiling]
            if query.get("order", [""])[0] == "updated_at asc":
                found.sort(key=lambda o: (_time(o["updated_at"]), int(o["id"])))
            else:  # Shopify's default: newest first by id
                found.sort(key=lambda o: -int(o["id"]))
            ids, start = [str(o["id"]) for o in found], 0
        page = [self.orders[i] for i in ids[start : start + limit] if i in self.orders]
        links = []
        base = f"{self.url}{path}"
        if start > 0:
            previous = self._cursor(ids, max(start - limit, 0), limit)
            links.append(f'<{base}?limit={limit}&page_info={previous}>; rel="previous"')
        if start + limit < len(ids):
            following = self._cursor(ids, start + limit, limit)
            links.append(f'<{base}?limit={limit}&page_info={following}>; rel="next"')
        handler._send(200, {"orders": page}, ", ".join(links) or None)

    def _cursor(self, ids: list[str], start: int, limit: int) -> str:
        token = base64.urlsafe_b64encode(f"{len(self._cursors)}:{start}".encode()).decode().rstrip("=")
        self._cursors[token] = (ids, start, limit)
        return token

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
