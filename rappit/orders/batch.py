"""Creating many channel orders in one transaction with set-based SQL: the webhook inbox's fast path.

`create_fresh` takes orders the channel has just created (none of them known yet) and writes, for
all of them at once: the orders, their lines, their reservations with their ledger rows and the
levels' new `reserved`, and their timeline events, one statement each, with the order numbers of
the whole batch allocated by one counter update. It keeps the one-order path's semantics exactly,
by taking only what it can do the same way and handing the rest back (`Fresh.left`) for
`service.apply_channel_order`: an order that exists already (an update, a late create), one whose
deletion came first, unknown SKUs, a channel with no warehouse pinned yet, stock that is short for
it (it goes on hold there, with the reason), a quantity over the reservation cap.

Locks are taken in the one-order path's order, so the two paths never deadlock: the orders'
advisory locks (sorted), the per-org counter, then the stock levels in id order.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.integrations.channels.canonical import CanonicalOrder
from rappit.integrations.channels.registry import ORDER_SOURCES
from rappit.inventory.catalogue import sku_ids
from rappit.inventory.reservations import LOCK_LEVELS
from rappit.inventory.stock import LEDGER_COLUMNS, MAX_QUANTITY
from rappit.orders.service import RESERVATION_REF, ChannelRef, _desired, format_number
from rappit.tenancy.context import current_actor, require_org_id


@dataclass(frozen=True, slots=True)
class FreshOrder:
    """One inbox event that (as far as the payload says) creates an order."""

    event_id: uuid.UUID
    channel: ChannelRef
    payload: CanonicalOrder
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Created:
    event_id: uuid.UUID
    order_id: uuid.UUID
    number: str


@dataclass(slots=True)
class Fresh:
    created: list[Created] = field(default_factory=list)
    left: list[uuid.UUID] = field(default_factory=list)
    """Events the one-order path must apply (nothing was written for them here)."""


def _key(org_id: uuid.UUID, item: FreshOrder) -> str:
    # The one-order path's advisory lock key (service.apply_channel_order): the same lock.
    return f"order:{org_id}:{item.channel.id}:{item.payload.external_id}"


_LOCK_ORDERS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(CAST(:keys AS text[])) AS k"
)
_KNOWN = text(
    """SELECT o.channel_id, o.external_id FROM orders o
         JOIN unnest(CAST(:chs AS uuid[]), CAST(:exts AS text[])) AS k(c, e)
           ON o.org_id = :org AND o.channel_id = k.c AND o.external_id = k.e
       UNION ALL
       SELECT w.channel_id, w.external_id FROM webhook_events w
         JOIN unnest(CAST(:chs AS uuid[]), CAST(:exts AS text[])) AS k(c, e)
           ON w.org_id = :org AND w.channel_id = k.c AND w.external_id = k.e
        WHERE w.status = 'ignored'"""
)
_COUNTER = text(
    """INSERT INTO order_counters (id, org_id, source, last_value) VALUES (gen_random_uuid(), :org, :s, 1)
       ON CONFLICT (org_id, source) DO UPDATE SET last_value = order_counters.last_value
       RETURNING last_value, (xmax = 0) AS inserted"""
)
_INSERT_ORDERS = text(
    """INSERT INTO orders (id, org_id, number, source, channel_id, external_id, external_name, status,
                          currency, external_updated_at, created_at, updated_at)
       SELECT id, :org, number, source, channel_id, NULLIF(external_id, ''), NULLIF(name, ''), 'open',
              currency, updated_at, now(), now()
         FROM unnest(CAST(:ids AS uuid[]), CAST(:numbers AS text[]), CAST(:sources AS text[]),
                     CAST(:chs AS uuid[]), CAST(:exts AS text[]), CAST(:names AS text[]),
                     CAST(:currencies AS text[]), CAST(:updated AS timestamptz[]))
           AS t(id, number, source, channel_id, external_id, name, currency, updated_at)"""
)
_INSERT_LINES = text(
    """INSERT INTO order_lines (id, org_id, order_id, version, position, external_line_id, sku, title,
                               quantity, unit_price_minor, currency)
       SELECT gen_random_uuid(), :org, order_id, 1, position, external_line_id, sku, title, quantity,
              price, currency
         FROM unnest(CAST(:orders AS uuid[]), CAST(:positions AS int[]), CAST(:ext_ids AS text[]),
                     CAST(:skus AS text[]), CAST(:titles AS text[]), CAST(:qtys AS int[]),
                     CAST(:prices AS bigint[]), CAST(:currencies AS text[]))
           AS t(order_id, position, external_line_id, sku, title, quantity, price, currency)"""
)
# Each reservation with its ledger row (reserved before/after as the one-order path would have seen
# them, in the batch's order) and each level's `reserved` raised by its batch total: one statement.
_RESERVE = text(
    f"""WITH req AS (
          SELECT * FROM unnest(CAST(:levels AS uuid[]), CAST(:qtys AS int[]), CAST(:refs AS text[]),
                               CAST(:befores AS int[]), CAST(:request_ids AS text[]))
                   WITH ORDINALITY AS r(level_id, qty, ref_id, before, request_id, n)
        ), upd AS (
          UPDATE inventory_levels l SET reserved = l.reserved + s.total, updated_at = now()
            FROM (SELECT level_id, sum(qty) AS total FROM req GROUP BY level_id) s
           WHERE l.id = s.level_id AND l.org_id = :org
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand
        ), res AS (
          INSERT INTO reservations (id, org_id, level_id, quantity, status, reference_type, reference_id,
                                    expires_at, actor, created_at)
          SELECT gen_random_uuid(), :org, r.level_id, r.qty, 'active', :ref_type, r.ref_id, NULL, :actor,
                 now()
            FROM req r ORDER BY r.n
        )
        INSERT INTO inventory_ledger {LEDGER_COLUMNS}
        SELECT :org, u.id, u.sku_id, u.warehouse_id, 'reserve', u.on_hand, u.on_hand, 0, r.before,
               r.before + r.qty, r.qty, :actor, :ref_type, r.ref_id, r.request_id, NULL, now()
          FROM req r JOIN upd u ON u.id = r.level_id
         ORDER BY r.n"""
)
_INSERT_EVENTS = text(
    """INSERT INTO order_events (org_id, order_id, kind, detail, webhook_event_id, created_at)
       SELECT :org, order_id, kind, CAST(detail AS jsonb), event_id, now()
         FROM unnest(CAST(:orders AS uuid[]), CAST(:kinds AS text[]), CAST(:details AS text[]),
                     CAST(:events AS uuid[])) WITH ORDINALITY AS t(order_id, kind, detail, event_id, n)
        ORDER BY n"""
)


async def create_fresh(session: AsyncSession, items: list[FreshOrder]) -> Fresh:
    """Create every order of `items` (in the current org, in their order) that the set-based path can;
    the others are handed back untouched. Each (channel, external id) appears at most once."""
    out = Fresh()
    if not items:
        return out
    org_id = require_org_id()
    await session.execute(_LOCK_ORDERS, {"keys": sorted({_key(org_id, it) for it in items})})
    known = {
        (c, e)
        for c, e in (
            await session.execute(
                _KNOWN,
                {
                    "org": org_id,
                    "chs": [it.channel.id for it in items],
                    "exts": [it.payload.external_id for it in items],
                },
            )
        ).all()
    }
    wanted = {it.event_id: _desired(it.payload.lines) for it in items}
    skus = await sku_ids(session, sorted({s for w in wanted.values() for s in w}))
    todo: list[FreshOrder] = []
    for it in items:
        w = wanted[it.event_id]
        if (
            (it.channel.id, it.payload.external_id) in known
            or it.payload.cancelled
            or not it.payload.external_id
            or (w and it.channel.warehouse_id is None)
            or any(s not in skus or q > MAX_QUANTITY for s, q in w.items())
        ):
            out.left.append(it.event_id)
        else:
            todo.append(it)
    if not todo:
        return out
    # The counters first (the one-order path's order: counter, then levels), read and locked.
    counters: dict[str, tuple[int, bool]] = {}
    for source in sorted({it.channel.source for it in todo}):
        row = (await session.execute(_COUNTER, {"org": org_id, "s": ORDER_SOURCES[source]})).one()
        counters[source] = (0 if row.inserted else row.last_value, row.inserted)
    pairs = sorted({(skus[s], it.channel.warehouse_id) for it in todo for s in wanted[it.event_id]})
    levels = {
        (r.sku_id, r.warehouse_id): r
        for r in (
            await session.execute(
                LOCK_LEVELS, {"org": org_id, "skus": [p[0] for p in pairs], "whs": [p[1] for p in pairs]}
            )
        ).all()
    }
    available = {key: r.on_hand - r.reserved for key, r in levels.items()}
    reserved = {key: r.reserved for key, r in levels.items()}
    used = dict.fromkeys(counters, 0)
    orders: list[tuple[FreshOrder, uuid.UUID, str]] = []
    res_rows: list[tuple[uuid.UUID, int, str, int, str | None]] = []
    for it in todo:
        w = wanted[it.event_id]
        need = {(skus[s], it.channel.warehouse_id): q for s, q in w.items()}
        if any(key not in levels or available[key] < q for key, q in need.items()):
            out.left.append(it.event_id)  # short: the one-order path puts it on hold, with the reason
            continue
        order_id = uuid.uuid4()
        used[it.channel.source] += 1
        number = format_number(
            it.channel.org_code, it.channel.source, counters[it.channel.source][0] + used[it.channel.source]
        )
        for key, q in sorted(need.items(), key=lambda kv: levels[kv[0]].id):
            res_rows.append((levels[key].id, q, str(order_id), reserved[key], it.request_id))
            available[key] -= q
            reserved[key] += q
        orders.append((it, order_id, number))
    for source, (base, inserted) in counters.items():
        if used[source]:
            await session.execute(
                text("UPDATE order_counters SET last_value = :v WHERE org_id = :org AND source = :s"),
                {"v": base + used[source], "org": org_id, "s": ORDER_SOURCES[source]},
            )
        elif inserted:  # made here and nothing numbered: leave no number taken
            await session.execute(
                text("DELETE FROM order_counters WHERE org_id = :org AND source = :s"),
                {"org": org_id, "s": ORDER_SOURCES[source]},
            )
    if not orders:
        return out
    await session.execute(
        _INSERT_ORDERS,
        {
            "org": org_id,
            "ids": [o[1] for o in orders],
            "numbers": [o[2] for o in orders],
            "sources": [o[0].channel.source for o in orders],
            "chs": [o[0].channel.id for o in orders],
            "exts": [o[0].payload.external_id for o in orders],
            "names": [o[0].payload.name for o in orders],
            "currencies": [o[0].payload.currency for o in orders],
            "updated": [o[0].payload.updated_at for o in orders],
        },
    )
    lines = [
        (order_id, pos, ln, it.payload.currency)
        for it, order_id, _ in orders
        for pos, ln in enumerate(it.payload.lines, start=1)
    ]
    if lines:
        await session.execute(
            _INSERT_LINES,
            {
                "org": org_id,
                "orders": [x[0] for x in lines],
                "positions": [x[1] for x in lines],
                "ext_ids": [x[2].external_line_id for x in lines],
                "skus": [x[2].sku for x in lines],
                "titles": [x[2].title for x in lines],
                "qtys": [x[2].quantity for x in lines],
                "prices": [x[2].unit_price_minor for x in lines],
                "currencies": [x[3] for x in lines],
            },
        )
    if res_rows:
        await session.execute(
            _RESERVE,
            {
                "org": org_id,
                "ref_type": RESERVATION_REF,
                "actor": current_actor().describe(),
                "levels": [r[0] for r in res_rows],
                "qtys": [r[1] for r in res_rows],
                "refs": [r[2] for r in res_rows],
                "befores": [r[3] for r in res_rows],
                "request_ids": [r[4] for r in res_rows],
            },
        )
    ev_orders: list[uuid.UUID] = []
    ev_kinds: list[str] = []
    ev_details: list[str] = []
    ev_events: list[uuid.UUID] = []
    codes = await _warehouse_codes(session, {it.channel.warehouse_id for it, _, _ in orders})
    for it, order_id, number in orders:
        ev_orders.append(order_id)
        ev_kinds.append("created")
        ev_details.append(json.dumps({"number": number, "external_name": it.payload.name}))
        ev_events.append(it.event_id)
        w = wanted[it.event_id]
        if w:
            ev_orders.append(order_id)
            ev_kinds.append("reserved")
            detail = {"warehouse": codes.get(it.channel.warehouse_id), "skus": w}
            ev_details.append(json.dumps(detail))
            ev_events.append(it.event_id)
        out.created.append(Created(it.event_id, order_id, number))
    await session.execute(
        _INSERT_EVENTS,
        {"org": org_id, "orders": ev_orders, "kinds": ev_kinds, "details": ev_details, "events": ev_events},
    )
    return out


async def _warehouse_codes(session: AsyncSession, ids: set[uuid.UUID | None]) -> dict[uuid.UUID | None, str]:
    found = [i for i in ids if i is not None]
    if not found:
        return {}
    rows = await session.execute(
        text("SELECT id, code FROM warehouses WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": found}
    )
    return {r.id: r.code for r in rows.all()}
