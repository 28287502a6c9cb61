"""A loopback fake of the Shopify Admin REST API 2024-10 (the endpoints Rappit calls), for tests,
benchmarks and the demo: Shopify itself cannot be reached from here. Shapes from CARRIERS.md §3 (the
Admin API reference and the official client libraries' fixtures).

- GET  /admin/api/{v}/orders/{id}.json (edits) and /orders.json (reconciliation), paginated like
  Shopify's REST Admin API (cursor-based): `limit` (default 50, at most 250), filters
  (updated_at_min/max, status) and `order` ("updated_at asc") on the first request only; when more
  remain, a `Link: <...orders.json?limit=N&page_info=X>; rel="next"` header (and rel="previous" after
  the first page) whose opaque page_info is the only way on; a page_info request that also carries a
  filter is a 400, as Shopify answers it;
- GET  /admin/api/{v}/orders/{id}/fulfillment_orders.json: one fulfillment order per location, its
  line items with `line_item_id`, `quantity` and `fulfillable_quantity`;
- GET  /admin/api/{v}/orders/{id}/fulfillments.json: the order's fulfillments with their tracking;
- POST /admin/api/{v}/fulfillments.json: `{"fulfillment": {"line_items_by_fulfillment_order": [...],
  "tracking_info": {...}, "notify_customer": bool}}`, validated as Shopify does (422 with `errors` for
  an unknown or closed fulfillment order, a line item not on it, a quantity above what is
  fulfillable); what it accepted is kept in `fulfillment_bodies` and `fulfillments`.

Every call needs the right X-Shopify-Access-Token (401 otherwise). Switches: `faults.server_error`
(the next N calls answer 500), `drop_after_fulfil` (create the fulfillment, then drop the connection:
the answer never arrives).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rappit.integrations.sandboxes._loopback import Drop, LoopbackServer, Reply

_ORDER = re.compile(r"^/admin/api/[^/]+/orders/(\d+)\.json$")
_ORDERS = re.compile(r"^/admin/api/[^/]+/orders\.json$")
_FULFILLMENT_ORDERS = re.compile(r"^/admin/api/[^/]+/orders/(\d+)/fulfillment_orders\.json$")
_ORDER_FULFILLMENTS = re.compile(r"^/admin/api/[^/]+/orders/(\d+)/fulfillments\.json$")
_FULFILLMENTS = re.compile(r"^/admin/api/[^/]+/fulfillments\.json$")
FULFILLABLE = ("open", "in_progress")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _invalid(*messages: str) -> Reply:
    return Reply(422, {"errors": list(messages)})


class FakeShopify(LoopbackServer):
    def __init__(self, access_token: str) -> None:
        super().__init__()
        self.access_token = access_token
        self.orders: dict[str, dict[str, Any]] = {}
        self.fulfillment_orders: dict[str, list[dict[str, Any]]] = {}
        """order id -> its fulfillment orders (Shopify's shape)."""
        self.fulfillments: dict[str, list[dict[str, Any]]] = {}
        """order id -> the fulfillments created on it."""
        self.fulfillment_bodies: list[dict[str, Any]] = []
        """Every accepted POST /fulfillments.json body, as received."""
        self.drop_after_fulfil = 0
        """Create the next N fulfillments, then drop the connection without answering."""
        self._ids = 1_000_000
        self.delay = 0.0
        """Seconds each order-list request takes (a slow shop, for time-budget tests)."""
        self._cursors: dict[str, tuple[list[str], int, int]] = {}
        """page_info -> (order ids, start, limit)."""
        self._state = threading.Lock()

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.requests]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def put_order(self, order: dict[str, Any]) -> None:
        """Store the order; the first time, one open fulfillment order holds all its line items."""
        oid = str(order["id"])
        self.orders[oid] = order
        if oid not in self.fulfillment_orders:
            items = [li for li in order.get("line_items", []) if int(li.get("quantity", 0)) > 0]
            self.fulfillment_orders[oid] = [self._fulfillment_order(oid, 1, items)]

    def split_fulfillment_order(self, order_id: int | str, line_item_ids: list[int], location_id: int) -> int:
        """Move these order lines to a fulfillment order of their own at another location (as when a
        merchant stocks them elsewhere); returns its id."""
        oid = str(order_id)
        first = self.fulfillment_orders[oid][0]
        moved = [li for li in first["line_items"] if li["line_item_id"] in line_item_ids]
        first["line_items"] = [li for li in first["line_items"] if li["line_item_id"] not in line_item_ids]
        fo = self._fulfillment_order(oid, location_id, [])
        for li in moved:
            li["fulfillment_order_id"] = fo["id"]
        fo["line_items"] = moved
        self.fulfillment_orders[oid].append(fo)
        return int(fo["id"])

    def _fulfillment_order(
        self, order_id: str, location_id: int, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        fo_id = self._next_id()
        return {
            "id": fo_id,
            "order_id": int(order_id),
            "assigned_location_id": location_id,
            "request_status": "unsubmitted",
            "status": "open",
            "supported_actions": ["create_fulfillment"],
            "line_items": [
                {
                    "id": self._next_id(),
                    "fulfillment_order_id": fo_id,
                    "line_item_id": int(li["id"]),
                    "quantity": int(li["quantity"]),
                    "fulfillable_quantity": int(li["quantity"]),
                    "variant_id": li.get("variant_id"),
                }
                for li in items
            ],
        }

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("x-shopify-access-token") != self.access_token:
            return Reply(
                401,
                {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"},
            )
        if self.take_server_error():
            return Reply(500, {"errors": "Internal Server Error"})
        parts = urlsplit(path)
        if method == "GET":
            return self._get(parts.path, parse_qs(parts.query))
        if method == "POST" and _FULFILLMENTS.match(parts.path):
            return self._create_fulfillment(body)
        return Reply(404, {"errors": "Not Found"})

    def _get(self, path: str, query: dict[str, list[str]]) -> Reply:
        if m := _ORDER.match(path):
            order = self.orders.get(m.group(1))
            return Reply(200, {"order": order}) if order else Reply(404, {"errors": "Not Found"})
        if _ORDERS.match(path):
            return self._list(path, query)
        if m := _FULFILLMENT_ORDERS.match(path):
            if m.group(1) not in self.orders:
                return Reply(404, {"errors": "Not Found"})
            with self._state:
                return Reply(200, {"fulfillment_orders": self.fulfillment_orders[m.group(1)]})
        if m := _ORDER_FULFILLMENTS.match(path):
            if m.group(1) not in self.orders:
                return Reply(404, {"errors": "Not Found"})
            with self._state:
                return Reply(200, {"fulfillments": self.fulfillments.get(m.group(1), [])})
        return Reply(404, {"errors": "Not Found"})

    def _list(self, path: str, query: dict[str, list[str]]) -> Reply:
        time.sleep(self.delay)
        limit = int(query.get("limit", ["50"])[0])
        if not 1 <= limit <= 250:
            return Reply(400, {"errors": {"limit": "must be between 1 and 250"}})
        page_info = query.get("page_info", [None])[0]
        if page_info is not None:
            others = sorted(set(query) - {"page_info", "limit", "fields"})
            if others:
                return Reply(
                    400, {"errors": {others[0]: f"{others[0]} cannot be passed when page_info is present"}}
                )
            if page_info not in self._cursors:
                return Reply(400, {"errors": {"page_info": "Invalid value."}})
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
        return Reply(200, {"orders": page}, headers={"Link": ", ".join(links)} if links else None)

    def _cursor(self, ids: list[str], start: int, limit: int) -> str:
        with self._state:
            token = base64.urlsafe_b64encode(f"{len(self._cursors)}:{start}".encode()).decode().rstrip("=")
            self._cursors[token] = (ids, start, limit)
        return token

    def _create_fulfillment(self, body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except ValueError:
            return Reply(400, {"errors": {"fulfillment": "Required parameter missing or invalid"}})
        fulfillment = data.get("fulfillment") if isinstance(data, dict) else None
        if not isinstance(fulfillment, dict):
            return Reply(400, {"errors": {"fulfillment": "Required parameter missing or invalid"}})
        groups = fulfillment.get("line_items_by_fulfillment_order")
        if not isinstance(groups, list) or not groups:
            return _invalid("Line items by fulfillment order must be present")
        tracking = fulfillment.get("tracking_info") or {}
        if not isinstance(tracking, dict) or not all(
            isinstance(tracking.get(k), str | None) for k in ("number", "company", "url")
        ):
            return _invalid("Tracking info is invalid")
        with self._state:
            return self._apply_fulfillment(data, fulfillment, groups, tracking)

    def _apply_fulfillment(
        self, data: dict[str, Any], fulfillment: dict[str, Any], groups: list[Any], tracking: dict[str, Any]
    ) -> Reply:
        by_id = {fo["id"]: fo for fos in self.fulfillment_orders.values() for fo in fos}
        plan: list[tuple[dict[str, Any], int]] = []
        order_ids = set()
        for group in groups:
            fo = by_id.get(group.get("fulfillment_order_id")) if isinstance(group, dict) else None
            if fo is None:
                return Reply(404, {"errors": "Not Found"})
            if fo["status"] not in FULFILLABLE:
                return _invalid(f"Fulfillment order {fo['id']} has an unfulfillable status= {fo['status']}.")
            order_ids.add(fo["order_id"])
            lines = {li["id"]: li for li in fo["line_items"]}
            wanted = group.get("fulfillment_order_line_items")
            if wanted is None:  # omitted: every remaining unit of the fulfillment order
                plan += [
                    (li, li["fulfillable_quantity"]) for li in fo["line_items"] if li["fulfillable_quantity"]
                ]
                continue
            for item in wanted:
                line = lines.get(item.get("id")) if isinstance(item, dict) else None
                qty = item.get("quantity") if isinstance(item, dict) else None
                if line is None:
                    return _invalid("Invalid fulfillment order line item id requested.")
                if not isinstance(qty, int) or qty < 1 or qty > line["fulfillable_quantity"]:
                    return _invalid("Invalid fulfillment order line item quantity requested.")
                plan.append((line, qty))
        if len(order_ids) != 1:
            return _invalid("All fulfillment orders must belong to the same order.")
        if not plan:
            return _invalid("Fulfillment order line items must have a fulfillable quantity.")
        for line, qty in plan:
            line["fulfillable_quantity"] -= qty
        for fo in by_id.values():
            if fo["order_id"] in order_ids and fo["status"] in FULFILLABLE:
                left = sum(li["fulfillable_quantity"] for li in fo["line_items"])
                fo["status"] = "closed" if left == 0 else "in_progress"
        order_id = str(order_ids.pop())
        made = self._record(order_id, plan, tracking, fulfillment)
        self.fulfillment_bodies.append(data)
        if self.drop_after_fulfil > 0:
            self.drop_after_fulfil -= 1
            raise Drop
        return Reply(201, {"fulfillment": made})

    def _record(
        self,
        order_id: str,
        plan: list[tuple[dict[str, Any], int]],
        tracking: dict[str, Any],
        body: dict[str, Any],
    ) -> dict[str, Any]:
        existing = self.fulfillments.setdefault(order_id, [])
        number, url = tracking.get("number"), tracking.get("url")
        made = {
            "id": self._next_id(),
            "order_id": int(order_id),
            "status": "success",
            "service": "manual",
            "name": f"#{order_id}.{len(existing) + 1}",
            "tracking_company": tracking.get("company"),
            "tracking_number": number,
            "tracking_numbers": [number] if number else [],
            "tracking_url": url,
            "tracking_urls": [url] if url else [],
            "notify_customer": bool(body.get("notify_customer")),
            "line_items": [{"id": line["line_item_id"], "quantity": qty} for line, qty in plan],
        }
        existing.append(made)
        return made
