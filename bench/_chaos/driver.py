"""The traffic: signed webhooks (retried like a channel retries until it gets a 2xx), bulk imports,
manual holds, label purchases, voids, hand-overs and (once the route exists) carrier callbacks. Every
request is recorded with its status and latency, so the checks can count statuses and hangs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from _chaos.plan import WAREHOUSE, Delivery, OrderPlan, Plan, StockAction
from rappit.integrations.carriers.callbacks import signed_headers
from rappit.integrations.channels.signatures import sign

HANG_SECONDS = 20.0
"""A request answered later than this hung: pool wait (5 s) + connect (2 s) + two statements at their
timeout (5 s + the 1 s client backstop each) is 19 s at worst (DB_* settings at their defaults)."""
CARRIER_HANG_SECONDS = 45.0
"""Label purchases and voids also wait for the carrier once (connect 5 s + read 20 s), in between two
short transactions."""
LIMITS = {"label_buy": CARRIER_HANG_SECONDS, "label_void": CARRIER_HANG_SECONDS, "bulk_import": 125.0}
"""Per kind where it differs: a bulk import has its own statement budget (120 s, inventory/bulk.py)."""
CLIENT_TIMEOUT = 90.0


@dataclass
class Record:
    kind: str
    started: float
    seconds: float
    status: int | None
    """None: no answer (connection refused or reset: the API process was down)."""
    error: str = ""
    code: str = ""


@dataclass
class Org:
    n: int
    id: str
    code: str
    token: str
    channels: dict[str, str] = field(default_factory=dict)
    """kind -> channel id"""
    accounts: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """carrier -> (account id, account number, callback secret)"""


@dataclass
class Shipment:
    id: str
    org: int
    order_id: str
    external_id: int
    carrier: str
    account_id: str
    status: str
    tracking: str | None
    lines: list[dict[str, Any]]
    actions: list[str] = field(default_factory=list)


@dataclass
class Driver:
    plan: Plan
    bases: list[str]
    orgs: list[Org]
    t0: float = 0.0
    records: list[Record] = field(default_factory=list)
    acked: dict[tuple[int, str, str], int] = field(default_factory=dict)
    """(org, kind, dedup key) -> 2xx answers received"""
    unacked: list[Delivery] = field(default_factory=list)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    labelled: set[tuple[int, int]] = field(default_factory=set)
    callbacks_enabled: bool = False
    callbacks_sent: int = 0
    deadline: float = 0.0
    open_orders: dict[int, int] = field(default_factory=dict)
    _rr: int = 0
    _client: httpx.AsyncClient | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def base(self) -> str:
        self._rr += 1
        return self.bases[self._rr % len(self.bases)]

    async def __aenter__(self) -> Driver:
        limits = httpx.Limits(max_connections=96, max_keepalive_connections=48)
        self._client = httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._client is not None
        await self._client.aclose()

    async def request(
        self, kind: str, method: str, path: str, *, base: str | None = None, **kwargs: Any
    ) -> httpx.Response | None:
        assert self._client is not None
        started = time.monotonic()
        try:
            resp = await self._client.request(method, (base or self.base()) + path, **kwargs)
        except httpx.TimeoutException as exc:
            self.records.append(
                Record(kind, started - self.t0, time.monotonic() - started, None, type(exc).__name__)
            )
            return None
        except httpx.TransportError as exc:
            self.records.append(
                Record(kind, started - self.t0, time.monotonic() - started, None, type(exc).__name__)
            )
            return None
        code = ""
        if resp.status_code >= 400:
            try:
                code = str(resp.json().get("error", {}).get("code", ""))
            except (ValueError, AttributeError):
                code = "?"
        self.records.append(
            Record(kind, started - self.t0, time.monotonic() - started, resp.status_code, code=code)
        )
        return resp

    # ---- webhooks ------------------------------------------------------------------------------

    def _webhook_headers(self, d: Delivery, attempt: int) -> dict[str, str]:
        org = self.orgs[d.org]
        from _chaos.plan import secret, shop_address

        key = secret(self.plan.seed, d.org, d.kind)
        # A new delivery id per (duplicate kind, attempt): a retry is a new delivery of the same change.
        delivery = hashlib.sha256(f"{d.delivery_id}:{d.note}:{attempt}".encode()).hexdigest()[:32]
        if d.kind == "shopify":
            return {
                "Content-Type": "application/json",
                "X-Shopify-Hmac-Sha256": sign(key, d.body),
                "X-Shopify-Topic": d.topic,
                "X-Shopify-Shop-Domain": shop_address(self.plan.seed, d.org, d.kind),
                "X-Shopify-Event-Id": d.delivery_id,
                "X-Shopify-Webhook-Id": delivery,
            }
        del org
        return {
            "Content-Type": "application/json",
            "X-WC-Webhook-Signature": sign(key, d.body),
            "X-WC-Webhook-Topic": d.topic,
            "X-WC-Webhook-Delivery-ID": delivery,
            "X-WC-Webhook-Source": shop_address(self.plan.seed, d.org, d.kind) + "/",
        }

    def dedup_key(self, d: Delivery, attempt: int) -> str:
        """What the inbox stores the delivery under: the plan's key, except for a WooCommerce deletion,
        which is keyed on the delivery id sent (each attempt sends a new one, as WooCommerce does)."""
        if d.kind == "woocommerce" and d.topic == "order.deleted":
            sent = self._webhook_headers(d, attempt)["X-WC-Webhook-Delivery-ID"]
            return f"order.deleted:{d.external_id}:d:{sent}"
        return d.dedup_key

    async def deliver(self, d: Delivery) -> None:
        """Until a 2xx (as Shopify and WooCommerce retry), backing off 1 s doubling to 8 s."""
        path = f"/webhooks/{d.kind}/{self.orgs[d.org].channels[d.kind]}"
        delay, attempt = 1.0, 0
        while True:
            resp = await self.request(
                "webhook", "POST", path, content=d.body, headers=self._webhook_headers(d, attempt)
            )
            if resp is not None and 200 <= resp.status_code < 300:
                key = (d.org, d.kind, self.dedup_key(d, attempt))
                self.acked[key] = self.acked.get(key, 0) + 1
                return
            if resp is not None and resp.status_code < 500 and resp.status_code != 429:
                self.unacked.append(d)  # refused for good (4xx): a violation the checks report
                return
            if self.now() > self.deadline:
                self.unacked.append(d)
                return
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)

    async def run_deliveries(self, limit: int = 64) -> None:
        gate = asyncio.Semaphore(limit)
        tasks = []

        async def one(d: Delivery) -> None:
            async with gate:
                await self.deliver(d)

        for d in self.plan.deliveries:
            wait = d.at - self.now()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(d)))
        await asyncio.gather(*tasks)

    # ---- stock ---------------------------------------------------------------------------------

    def auth(self, org: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.orgs[org].token}"}

    async def stock_action(self, a: StockAction, rng: random.Random) -> None:
        headers = {**self.auth(a.org), "Idempotency-Key": f"stock-{id(a)}"}
        for _ in range(6):
            if a.kind.startswith("bulk"):
                body = [{"sku": s, "quantity": q, "warehouse_code": WAREHOUSE} for s, q in a.rows]
                resp = await self.request(
                    "bulk_import", "POST", "/api/v1/inventory/bulk?mode=add", json=body, headers=headers
                )
            else:
                body = {
                    "lines": [{"sku": s, "warehouse_code": WAREHOUSE, "quantity": q} for s, q in a.rows],
                    "reference": f"chaos-hold-{id(a)}",
                    "expires_in_seconds": a.expires_in,
                }
                resp = await self.request("hold", "POST", "/api/v1/reservations", json=body, headers=headers)
            if resp is None or resp.status_code in (429, 503) or resp.status_code >= 500:
                await asyncio.sleep(2)
                continue
            if a.kind == "hold_release" and resp.status_code in (200, 201):
                data = resp.json()
                items = data.get("reservations", data) if isinstance(data, dict) else data
                await asyncio.sleep(rng.uniform(1, 10))
                for item in items if isinstance(items, list) else []:
                    for _ in range(4):
                        r = await self.request(
                            "hold_release",
                            "POST",
                            f"/api/v1/reservations/{item['id']}/release",
                            headers=self.auth(a.org),
                        )
                        if r is not None and r.status_code < 500:
                            break
                        await asyncio.sleep(2)
            return

    async def run_stock(self) -> None:
        rng = random.Random(self.plan.label_rng_seed ^ 0x5A5A)
        tasks = []
        for a in self.plan.stock:
            wait = a.at - self.now()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(self.stock_action(a, rng)))
        await asyncio.gather(*tasks)

    # ---- labels, voids, hand-overs, callbacks --------------------------------------------------

    async def run_labels(self, until: float, plans: dict[tuple[int, str, str], OrderPlan]) -> None:
        """While traffic runs: pick open orders that reached their final version, buy a label, then
        void it, hand it over (twice at once, sometimes), or let carrier callbacks ship it."""
        rng = random.Random(self.plan.label_rng_seed)
        tasks: list[asyncio.Task[None]] = []
        while self.now() < until:
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            org = rng.randrange(len(self.orgs))
            offset = rng.randrange(0, max(1, self.open_orders.get(org, 400) - 20))
            resp = await self.request(
                "orders_list",
                "GET",
                f"/api/v1/orders?status=open&limit=20&offset={offset}",
                headers=self.auth(org),
            )
            if resp is None or resp.status_code != 200:
                continue
            self.open_orders[org] = int(resp.json().get("total", 400))
            picked = 0
            for item in resp.json().get("items", []):
                if picked >= 3:
                    break
                kind = "shopify" if item.get("source") == "shopify" else "woocommerce"
                plan = plans.get((org, kind, str(item.get("external_id"))))
                if plan is None or plan.cancelled or (org, plan.external_id) in self.labelled:
                    continue
                self.labelled.add((org, plan.external_id))
                tasks.append(
                    asyncio.create_task(self.label_flow(org, item["id"], plan, rng.random(), rng.random()))
                )
                picked += 1
        await asyncio.gather(*tasks)

    async def label_flow(self, org: int, order_id: str, plan: OrderPlan, pick: float, action: float) -> None:
        detail = await self.request(
            "order_detail", "GET", f"/api/v1/orders/{order_id}", headers=self.auth(org)
        )
        if detail is None or detail.status_code != 200:
            return
        data = detail.json()
        held: dict[str, int] = {}
        for line in data.get("lines", []):
            if line.get("sku") and line["quantity"] > 0:
                held[line["sku"]] = held.get(line["sku"], 0) + line["quantity"]
        if data["order"]["status"] != "open" or held != plan.expected_lines() or not held:
            self.labelled.discard((org, plan.external_id))  # not settled yet: maybe later
            return
        carrier = "fedex" if pick < 0.6 else "dhl_express"
        account_id, _, _ = self.orgs[org].accounts[carrier]
        address = {
            "name": "Chaos",
            "street_lines": ["1 Main St"],
            "city": "Memphis",
            "postal_code": "38116",
            "country_code": "US",
            "phone": "+19015551234",
        }
        body = {
            "order_id": order_id,
            "carrier_account_id": account_id,
            "service": "FEDEX_GROUND" if carrier == "fedex" else "P",
            "ship_from": address,
            "ship_to": {**address, "name": "Buyer", "city": "Austin", "postal_code": "73301"},
            "parcels": [{"weight_grams": 900}],
        }
        key = f"label-{self.plan.seed}-{org}-{plan.external_id}"
        resp = None
        for _ in range(8):  # the same Idempotency-Key: a retry finds the first attempt's shipment
            resp = await self.request(
                "label_buy",
                "POST",
                "/api/v1/shipments",
                json=body,
                headers={**self.auth(org), "Idempotency-Key": key},
            )
            if resp is not None and resp.status_code in (200, 201):
                break
            if resp is not None and resp.status_code not in (429, 503) and resp.status_code < 500:
                break  # refused (422: the carrier refused, or the order changed)
            await asyncio.sleep(3)
        if resp is None or resp.status_code not in (200, 201):
            return
        s = resp.json()
        ship = Shipment(
            s["id"],
            org,
            order_id,
            plan.external_id,
            carrier,
            account_id,
            s["status"],
            (s.get("tracking_numbers") or [None])[0],
            [],
        )
        self.shipments[ship.id] = ship
        if ship.status != "label_purchased":
            return
        await asyncio.sleep(1 + action * 4)
        if action < 0.2:
            ship.actions.append("void")
            for _ in range(4):
                r = await self.request(
                    "label_void", "POST", f"/api/v1/shipments/{ship.id}/void", headers=self.auth(org)
                )
                if r is not None and r.status_code < 500:
                    break
                await asyncio.sleep(3)
        elif action < 0.55 or not self.callbacks_enabled:
            ship.actions.append("ship")
            twice = action < 0.35
            calls = [self._hand_over(org, ship.id) for _ in range(2 if twice else 1)]
            await asyncio.gather(*calls)
        else:
            await self.callbacks(org, ship)

    async def _hand_over(self, org: int, shipment_id: str) -> None:
        for _ in range(5):
            r = await self.request(
                "hand_over", "POST", f"/api/v1/shipments/{shipment_id}/ship", headers=self.auth(org)
            )
            if r is not None and r.status_code < 500 and r.status_code != 429:
                return
            await asyncio.sleep(3)

    async def callbacks(self, org: int, ship: Shipment) -> None:
        """Carrier callbacks for a label: the pick-up event twice at once, a duplicate later, then
        delivery. Sent only when the callback route exists (feature probe)."""
        if ship.tracking is None:
            return
        ship.actions.append("callbacks")
        account_id, _, secret_ = self.orgs[org].accounts[ship.carrier]
        path = f"/callbacks/carriers/{ship.carrier}/{account_id}"

        def body(code: str, event_id: str) -> bytes:
            if ship.carrier == "fedex":
                data: dict[str, Any] = {
                    "eventId": event_id,
                    "trackingNumber": ship.tracking,
                    "customerReference": ship.id,
                    "scanEvent": {
                        "date": datetime.now(UTC).isoformat(),
                        "eventType": code,
                        "eventDescription": code,
                    },
                }
            else:
                now = datetime.now(UTC)
                data = {
                    "eventId": event_id,
                    "shipmentTrackingNumber": ship.tracking,
                    "customerReference": ship.id,
                    "event": {
                        "date": now.date().isoformat(),
                        "time": now.strftime("%H:%M:%S"),
                        "typeCode": code,
                        "description": code,
                    },
                }
            return json.dumps(data).encode()

        async def send(raw: bytes) -> None:
            for _ in range(6):
                headers = {
                    "Content-Type": "application/json",
                    **signed_headers(secret_, raw, now=datetime.now(UTC)),
                }
                r = await self.request("callback", "POST", path, content=raw, headers=headers)
                self.callbacks_sent += 1
                if r is not None and r.status_code < 500 and r.status_code != 429:
                    return
                await asyncio.sleep(2)

        pickup = body("PU", f"{ship.id}-pu")
        await asyncio.gather(send(pickup), send(pickup))  # the ship event twice at once
        await asyncio.sleep(1)
        await send(pickup)  # and once more, later
        await send(body("PU", f"{ship.id}-pu-redelivered"))  # the same event under a new id
        await send(body("DL" if ship.carrier == "fedex" else "OK", f"{ship.id}-dl"))


async def probe_callbacks(base: str) -> bool:
    """Whether the API serves carrier callbacks (being built on another branch)."""
    async with httpx.AsyncClient(timeout=10) as c:
        schema = (await c.get(base + "/schema/openapi.json")).json()
    return any(p.startswith("/callbacks/carriers/") for p in schema.get("paths", {}))


def uuid_of(value: str) -> uuid.UUID:
    return uuid.UUID(value)
