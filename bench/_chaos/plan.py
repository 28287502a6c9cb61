"""The seeded workload: every order's versions, every webhook delivery (duplicates, out-of-order, poison)
and when it is sent, every stock import and manual hold, every label action, and the fault schedule.

Everything comes from one `random.Random(seed)`, drawn in a fixed order, and no wall-clock value goes
into a payload (timestamps count from a fixed base), so one seed gives one workload and one schedule.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ORGS = 3
KINDS = ("shopify", "woocommerce")
SKUS_PER_ORG = 24
WAREHOUSE = "W1"
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
"""Payload timestamps count from here (never from the clock): the same seed sends the same bytes."""


def org_code(seed: int, n: int) -> str:
    return f"C{seed % 100_000}O{n}"[:10]


def sku_code(n: int) -> str:
    return f"SKU-{n:03d}"


def secret(seed: int, org: int, kind: str) -> str:
    return f"chaos-{seed}-{org}-{kind}-webhook-secret"


def shop_address(seed: int, org: int, kind: str) -> str:
    if kind == "shopify":
        return f"chaos{seed % 100_000}-o{org}.myshopify.com"
    return f"https://chaos{seed % 100_000}-o{org}.example.com"


@dataclass
class Version:
    updated_at: datetime
    lines: list[tuple[int, str | None, int, str]]
    """(external line id, sku, quantity, price) as the channel sends them."""
    cancelled: bool = False


@dataclass
class OrderPlan:
    org: int
    kind: str
    external_id: int
    versions: list[Version]
    deleted: bool = False
    """WooCommerce: the order ends with order.deleted (a cancel) instead of a cancelled status."""
    edited: bool = False
    """Shopify: an orders/edited delivery fetches the final version from the fake Admin API."""

    @property
    def final(self) -> Version:
        return self.versions[-1]

    @property
    def cancelled(self) -> bool:
        return self.deleted or self.final.cancelled

    def expected_lines(self) -> dict[str, int]:
        """SKU -> units of the final version (what the stored order's current lines must add up to)."""
        out: dict[str, int] = {}
        for _, sku, qty, _ in self.final.lines:
            if sku is not None and qty > 0:
                out[sku] = out.get(sku, 0) + qty
        return out


@dataclass
class Delivery:
    at: float
    """Seconds after the workload starts."""
    org: int
    kind: str
    external_id: int
    topic: str
    body: bytes
    dedup_key: str
    delivery_id: str
    """Shopify: X-Shopify-Event-Id; WooCommerce: X-WC-Webhook-Delivery-ID."""
    poison: bool = False
    note: str = ""


@dataclass
class StockAction:
    at: float
    org: int
    kind: str
    """bulk_add | bulk_set | hold | hold_release"""
    rows: list[tuple[str, int]] = field(default_factory=list)
    expires_in: int = 0


@dataclass
class Fault:
    at: float
    kind: str
    """kill_worker | kill_api | redis_down | pg_restart | pg_stall | carrier_*"""
    seconds: float = 0.0
    target: int = 0


@dataclass
class Plan:
    seed: int
    duration: float
    orders: list[OrderPlan]
    deliveries: list[Delivery]
    stock: list[StockAction]
    faults: list[Fault]
    initial_stock: dict[tuple[int, str], int]
    label_rng_seed: int

    def order_by_key(self) -> dict[tuple[int, str, str], OrderPlan]:
        return {(o.org, o.kind, str(o.external_id)): o for o in self.orders}

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for f in self.faults:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        notes: dict[str, int] = {}
        for d in self.deliveries:
            notes[d.note or d.topic] = notes.get(d.note or d.topic, 0) + 1
        return {
            "orders": len(self.orders),
            "deliveries": len(self.deliveries),
            "poison": sum(1 for d in self.deliveries if d.poison),
            "delivery_kinds": notes,
            "stock_actions": len(self.stock),
            "faults": kinds,
        }


def _stamp(t: datetime, kind: str) -> str:
    if kind == "shopify":
        return t.isoformat()
    return t.replace(tzinfo=None).isoformat(timespec="seconds")  # WooCommerce: GMT without an offset


def shopify_body(o: OrderPlan, v: Version) -> dict[str, Any]:
    return {
        "id": o.external_id,
        "name": f"#{o.external_id}",
        "currency": "USD",
        "updated_at": _stamp(v.updated_at, "shopify"),
        "cancelled_at": _stamp(v.updated_at, "shopify") if v.cancelled else None,
        "line_items": [
            {"id": lid, "sku": sku, "title": sku or "gift card", "quantity": qty, "price": price}
            for lid, sku, qty, price in v.lines
        ],
    }


def woo_body(o: OrderPlan, v: Version) -> dict[str, Any]:
    return {
        "id": o.external_id,
        "number": str(o.external_id),
        "currency": "EUR",
        "status": "cancelled" if v.cancelled else "processing",
        "date_modified_gmt": _stamp(v.updated_at, "woocommerce"),
        "line_items": [
            {"id": lid, "sku": sku or "", "name": sku or "gift card", "quantity": qty, "price": price}
            for lid, sku, qty, price in v.lines
        ],
    }


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _version_delivery(rng: random.Random, o: OrderPlan, n: int, at: float) -> Delivery:
    v = o.versions[n]
    if o.kind == "shopify":
        topic = "orders/create" if n == 0 else ("orders/cancelled" if v.cancelled else "orders/updated")
        event = _uuid(rng)
        body = json.dumps(shopify_body(o, v)).encode()
        return Delivery(at, o.org, o.kind, o.external_id, topic, body, f"event:{event}", event)
    topic = "order.created" if n == 0 else "order.updated"
    body = json.dumps(woo_body(o, v)).encode()
    key = f"{topic}:{o.external_id}:{_stamp(v.updated_at, 'woocommerce')}"
    return Delivery(at, o.org, o.kind, o.external_id, topic, body, key, _uuid(rng))


def build(seed: int, minutes: float, *, smoke: bool = False) -> Plan:
    rng = random.Random(seed)
    duration = max(minutes * 60.0, 5.0)
    traffic_end = duration * 0.8
    spread = min(12.0, duration * 0.1)
    """An order's deliveries (and its duplicates) arrive within this many seconds."""
    n_orders = 30 if smoke else int(600 * minutes)
    skus = [sku_code(n) for n in range(SKUS_PER_ORG)]
    initial = {(org, sku): rng.randint(40, 400) for org in range(ORGS) for sku in skus}

    orders: list[OrderPlan] = []
    deliveries: list[Delivery] = []
    for i in range(n_orders):
        org, kind = rng.randrange(ORGS), rng.choice(KINDS)
        ext = 5_000_000 + i
        t = BASE_TIME + timedelta(seconds=i * 7)
        lines = [
            (
                ext * 10 + k,
                rng.choice(skus),
                rng.randint(1, 4),
                f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}",
            )
            for k in range(rng.randint(1, 3))
        ]
        if rng.random() < 0.05:  # a line without a SKU (a gift card): reserves nothing
            lines.append((ext * 10 + 9, None, 1, "25.00"))
        versions = [Version(t, lines)]
        for _ in range(rng.choices((0, 1, 2, 3), (45, 30, 15, 10))[0]):
            t += timedelta(seconds=rng.randint(1, 600))
            cur = list(versions[-1].lines)
            move = rng.random()
            if move < 0.35 and cur:  # quantity up
                k = rng.randrange(len(cur))
                lid, sku, qty, price = cur[k]
                cur[k] = (lid, sku, qty + rng.randint(1, 3), price)
            elif move < 0.65 and cur:  # quantity down (to zero: the line stays, holding nothing)
                k = rng.randrange(len(cur))
                lid, sku, qty, price = cur[k]
                cur[k] = (lid, sku, max(0, qty - rng.randint(1, 3)), price)
            elif move < 0.85 or len(cur) < 2:  # a line added
                cur.append((ext * 10 + 5 + len(cur), rng.choice(skus), rng.randint(1, 3), "9.99"))
            else:  # a line removed
                cur.pop(rng.randrange(len(cur)))
            versions.append(Version(t, cur))
        o = OrderPlan(org, kind, ext, versions)
        end = rng.random()
        if end < 0.12:
            if kind == "woocommerce" and rng.random() < 0.5:
                o.deleted = True
            else:
                t += timedelta(seconds=rng.randint(1, 600))
                versions.append(Version(t, list(versions[-1].lines), cancelled=True))
        if kind == "shopify" and len(versions) > 1 and not o.cancelled and rng.random() < 0.3:
            o.edited = True
        orders.append(o)

        start = rng.uniform(0, traffic_end * 0.9)
        mine = [_version_delivery(rng, o, n, 0.0) for n in range(len(versions))]
        times = sorted(start + rng.uniform(0, spread) for _ in mine)
        if rng.random() < 0.15 and len(mine) > 1:  # out of order: a later version arrives first
            rng.shuffle(times)
            for d in mine:
                d.note = "out_of_order"
        for d, at in zip(mine, times, strict=True):
            d.at = at
        if o.edited:
            event = _uuid(rng)
            body = json.dumps({"order_edit": {"id": rng.randint(1, 10**9), "order_id": ext}}).encode()
            mine.append(
                Delivery(
                    times[-1] + rng.uniform(0.5, 4),
                    org,
                    kind,
                    ext,
                    "orders/edited",
                    body,
                    f"event:{event}",
                    event,
                    note="edit",
                )
            )
        if o.deleted:
            body = json.dumps({"id": ext}).encode()
            delivery = _uuid(rng)
            mine.append(
                Delivery(
                    times[-1] + rng.uniform(0.5, 4),
                    org,
                    kind,
                    ext,
                    "order.deleted",
                    body,
                    f"order.deleted:{ext}:d:{delivery}",
                    delivery,
                    note="deleted",
                )
            )
        for d in list(mine):
            r = rng.random()
            if r < 0.10:  # the same delivery again (a retry of a delivery that was answered)
                mine.append(_copy(d, d.at + rng.uniform(0, spread), note="dup_same_id"))
            elif r < 0.15:  # the same delivery twice at once
                mine.append(_copy(d, d.at, note="dup_concurrent"))
            elif r < 0.20:  # the same change, a new delivery id
                mine.append(_new_id_duplicate(rng, d, spread))
        deliveries.extend(mine)

    n_poison = 2 if smoke else 6
    for p in range(n_poison):
        org, kind = rng.randrange(ORGS), KINDS[p % 2]
        ext = 9_000_000 + p
        if kind == "shopify":
            bad = {
                "id": ext,
                "currency": "USD",
                "line_items": [{"id": 1, "sku": skus[0], "quantity": "lots"}],
            }
            event = _uuid(rng)
            deliveries.append(
                Delivery(
                    rng.uniform(0, traffic_end),
                    org,
                    kind,
                    ext,
                    "orders/create",
                    json.dumps(bad).encode(),
                    f"event:{event}",
                    event,
                    poison=True,
                    note="poison",
                )
            )
        else:
            stamp = _stamp(BASE_TIME, kind)
            bad = {"id": ext, "currency": "EURO", "date_modified_gmt": stamp, "line_items": []}
            deliveries.append(
                Delivery(
                    rng.uniform(0, traffic_end),
                    org,
                    kind,
                    ext,
                    "order.created",
                    json.dumps(bad).encode(),
                    f"order.created:{ext}:{stamp}",
                    _uuid(rng),
                    poison=True,
                    note="poison",
                )
            )
    deliveries.sort(key=lambda d: d.at)

    stock: list[StockAction] = []
    for _ in range(4 if smoke else int(25 * minutes)):
        org, at = rng.randrange(ORGS), rng.uniform(0, traffic_end)
        rows = [(s, rng.randint(5, 60)) for s in rng.sample(skus, rng.randint(3, 12))]
        stock.append(StockAction(at, org, "bulk_add", rows))
        if rng.random() < 0.2:  # a concurrent import of the same org at the same moment
            rows2 = [(s, rng.randint(5, 60)) for s in rng.sample(skus, rng.randint(3, 12))]
            stock.append(StockAction(at, org, "bulk_add", rows2))
    for _ in range(4 if smoke else int(40 * minutes)):
        org, at = rng.randrange(ORGS), rng.uniform(0, traffic_end)
        rows = [(s, rng.randint(1, 5)) for s in rng.sample(skus, rng.randint(1, 3))]
        kind = "hold_release" if rng.random() < 0.5 else "hold"
        stock.append(StockAction(at, org, kind, rows, expires_in=rng.randint(20, 90)))
    stock.sort(key=lambda s: s.at)

    return Plan(
        seed=seed,
        duration=duration,
        orders=orders,
        deliveries=deliveries,
        stock=stock,
        faults=faults(rng, duration, smoke=smoke),
        initial_stock=initial,
        label_rng_seed=rng.getrandbits(64),
    )


def _copy(d: Delivery, at: float, *, note: str) -> Delivery:
    return Delivery(
        at, d.org, d.kind, d.external_id, d.topic, d.body, d.dedup_key, d.delivery_id, d.poison, note
    )


def _new_id_duplicate(rng: random.Random, d: Delivery, spread: float) -> Delivery:
    """The same change under a new delivery id. Shopify: a new X-Shopify-Webhook-Id but the same event
    id (Shopify repeats it on every delivery of one event). WooCommerce: a new delivery id, same body."""
    return Delivery(
        d.at + rng.uniform(0, spread),
        d.org,
        d.kind,
        d.external_id,
        d.topic,
        d.body,
        d.dedup_key,
        d.delivery_id,
        d.poison,
        note="dup_new_id",
    )


def faults(rng: random.Random, duration: float, *, smoke: bool) -> list[Fault]:
    if smoke:
        return [Fault(duration * 0.4, "kill_worker", target=rng.randrange(2))]
    out: list[Fault] = []
    t = rng.uniform(2, 6)
    while t < duration * 0.9:
        out.append(Fault(t, "kill_worker", target=rng.randrange(2)))
        t += rng.uniform(3, 8)
    for _ in range(max(2, int(duration / 90))):
        out.append(Fault(rng.uniform(0.1, 0.85) * duration, "kill_api", target=rng.randrange(2)))
    # One of each database/Redis outage per default run, spread so they do not overlap; more in long runs.
    rounds = max(1, int(duration / 600))
    for r in range(rounds):
        lo, span = r / rounds * duration, duration / rounds
        out.append(Fault(lo + rng.uniform(0.15, 0.25) * span, "redis_down", seconds=30))
        out.append(Fault(lo + rng.uniform(0.45, 0.5) * span, "pg_restart"))
        out.append(Fault(lo + rng.uniform(0.65, 0.72) * span, "pg_stall", seconds=10))
        # Carrier faults early in each round: the recovery job needs ~3 minutes to settle a lost answer.
        out.append(
            Fault(lo + rng.uniform(0.05, 0.3) * span, "carrier_fail", seconds=8, target=rng.randrange(2))
        )
        out.append(Fault(lo + rng.uniform(0.05, 0.3) * span, "carrier_hang", seconds=6, target=0))
        out.append(Fault(lo + rng.uniform(0.05, 0.3) * span, "carrier_sell_drop", seconds=5, target=0))
    out.sort(key=lambda f: f.at)
    return out
