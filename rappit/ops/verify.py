"""`rappit verify`: does what the database stores still add up, for one org?

Each check is one SQL statement over the domains' tables, run as the org in context (the scoping hook
and row-level security both apply, and every query also names the org). One statement sees one
snapshot, so a check never reports drift that is only a write landing between two of its reads,
even while the platform runs. The result is plain data: a `Report` holding a `Finding` per drift, each
naming the rows involved and what was expected against what was found.

Adding a check: write an async function `(session, org_id, options) -> list[Finding]` and add it to
`CHECKS`; until then name it in `NOT_CHECKED`, so every report says what it did not look at.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.tenancy import service as tenancy
from rappit.tenancy.context import require_org_id

DEFAULT_STUCK_AFTER = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Options:
    stuck_after: timedelta = DEFAULT_STUCK_AFTER
    """A webhook event still pending or failed this long after it arrived is stuck."""


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    message: str
    rows: dict[str, Any]
    """Ids (and human codes) of the rows involved."""
    expected: dict[str, Any]
    found: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Report:
    org_id: uuid.UUID
    org_code: str
    checks: tuple[str, ...]
    not_checked: dict[str, str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


Check = Callable[[AsyncSession, uuid.UUID, Options], Awaitable[list[Finding]]]


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[Any]:
    return list((await session.execute(text(sql), params)).all())


_LEDGER_CHAIN = """
SELECT c.id, c.level_id, c.prev_id, c.on_hand_before, c.reserved_before, c.prev_on_hand, c.prev_reserved,
       s.code AS sku, w.code AS warehouse
  FROM (SELECT g.id, g.level_id, g.sku_id, g.warehouse_id, g.on_hand_before, g.reserved_before,
               lag(g.id) OVER w AS prev_id,
               coalesce(lag(g.on_hand_after) OVER w, 0) AS prev_on_hand,
               coalesce(lag(g.reserved_after) OVER w, 0) AS prev_reserved
          FROM inventory_ledger g
         WHERE g.org_id = :org
        WINDOW w AS (PARTITION BY g.level_id ORDER BY g.id)) c
  JOIN skus s ON s.org_id = :org AND s.id = c.sku_id
  JOIN warehouses w ON w.org_id = :org AND w.id = c.warehouse_id
 WHERE (c.on_hand_before, c.reserved_before) IS DISTINCT FROM (c.prev_on_hand, c.prev_reserved)
 ORDER BY c.level_id, c.id
"""


async def check_ledger_chain(session: AsyncSession, org_id: uuid.UUID, options: Options) -> list[Finding]:
    """Each ledger row of a level starts where the one before it ended (the first one at 0/0)."""
    return [
        Finding(
            check="ledger_chain",
            message=(
                f"ledger row {r.id} of {r.sku} @ {r.warehouse} starts at on_hand {r.on_hand_before}, "
                f"reserved {r.reserved_before}; "
                + (f"row {r.prev_id} before it ended" if r.prev_id else "the first row must start")
                + f" at {r.prev_on_hand}, {r.prev_reserved}"
            ),
            rows={
                "ledger_id": r.id,
                "previous_ledger_id": r.prev_id,
                "level_id": str(r.level_id),
                "sku": r.sku,
                "warehouse": r.warehouse,
            },
            expected={"on_hand_before": r.prev_on_hand, "reserved_before": r.prev_reserved},
            found={"on_hand_before": r.on_hand_before, "reserved_before": r.reserved_before},
        )
        for r in await _rows(session, _LEDGER_CHAIN, org=org_id)
    ]


_LEVELS_VS_LEDGER = """
WITH last AS (
  SELECT DISTINCT ON (level_id) level_id, id, on_hand_after, reserved_after
    FROM inventory_ledger WHERE org_id = :org ORDER BY level_id, id DESC
), replay AS (
  SELECT level_id, sum(on_hand_delta) AS on_hand, sum(reserved_delta) AS reserved
    FROM inventory_ledger WHERE org_id = :org GROUP BY level_id
)
SELECT v.id, s.code AS sku, w.code AS warehouse, v.on_hand, v.reserved, last.id AS last_ledger_id,
       coalesce(last.on_hand_after, 0) AS last_on_hand, coalesce(last.reserved_after, 0) AS last_reserved,
       coalesce(replay.on_hand, 0) AS replay_on_hand, coalesce(replay.reserved, 0) AS replay_reserved
  FROM inventory_levels v
  JOIN skus s ON s.org_id = :org AND s.id = v.sku_id
  JOIN warehouses w ON w.org_id = :org AND w.id = v.warehouse_id
  LEFT JOIN last ON last.level_id = v.id
  LEFT JOIN replay ON replay.level_id = v.id
 WHERE v.org_id = :org
   AND ((v.on_hand, v.reserved) IS DISTINCT FROM
          (coalesce(last.on_hand_after, 0), coalesce(last.reserved_after, 0))
        OR (v.on_hand, v.reserved) IS DISTINCT FROM
             (coalesce(replay.on_hand, 0), coalesce(replay.reserved, 0)))
 ORDER BY s.code, w.code
"""


async def check_levels_against_ledger(
    session: AsyncSession, org_id: uuid.UUID, options: Options
) -> list[Finding]:
    """A level holds what its last ledger row says it holds, which is also the sum of all its deltas."""
    return [
        Finding(
            check="level_vs_ledger",
            message=(
                f"level {r.sku} @ {r.warehouse} holds on_hand {r.on_hand}, reserved {r.reserved}; its ledger "
                f"ends at {r.last_on_hand}, {r.last_reserved} and replays to "
                f"{r.replay_on_hand}, {r.replay_reserved}"
            ),
            rows={
                "level_id": str(r.id),
                "last_ledger_id": r.last_ledger_id,
                "sku": r.sku,
                "warehouse": r.warehouse,
            },
            expected={
                "on_hand": r.last_on_hand,
                "reserved": r.last_reserved,
                "replay_on_hand": int(r.replay_on_hand),
                "replay_reserved": int(r.replay_reserved),
            },
            found={"on_hand": r.on_hand, "reserved": r.reserved},
        )
        for r in await _rows(session, _LEVELS_VS_LEDGER, org=org_id)
    ]


_RESERVED_VS_ACTIVE = """
SELECT v.id, s.code AS sku, w.code AS warehouse, v.reserved,
       coalesce(a.quantity, 0) AS active, coalesce(a.ids, '{}') AS reservation_ids
  FROM inventory_levels v
  JOIN skus s ON s.org_id = :org AND s.id = v.sku_id
  JOIN warehouses w ON w.org_id = :org AND w.id = v.warehouse_id
  LEFT JOIN (SELECT level_id, sum(quantity) AS quantity, array_agg(id::text ORDER BY created_at, id) AS ids
               FROM reservations WHERE org_id = :org AND status = 'active' GROUP BY level_id) a
         ON a.level_id = v.id
 WHERE v.org_id = :org AND v.reserved <> coalesce(a.quantity, 0)
 ORDER BY s.code, w.code
"""


async def check_reserved_against_reservations(
    session: AsyncSession, org_id: uuid.UUID, options: Options
) -> list[Finding]:
    """A level's `reserved` is the sum of its active reservations."""
    return [
        Finding(
            check="reserved_vs_reservations",
            message=(
                f"level {r.sku} @ {r.warehouse} has reserved {r.reserved}; its active reservations "
                f"add up to {r.active}"
            ),
            rows={
                "level_id": str(r.id),
                "sku": r.sku,
                "warehouse": r.warehouse,
                "active_reservation_ids": list(r.reservation_ids),
            },
            expected={"reserved": int(r.active)},
            found={"reserved": r.reserved},
        )
        for r in await _rows(session, _RESERVED_VS_ACTIVE, org=org_id)
    ]


# Reservations name their order by `reference_type = 'order'` and `reference_id = order id`
# (rappit.orders.service.RESERVATION_REF); an order's current lines are its highest version.
_ORDERS_VS_RESERVATIONS = """
WITH latest AS (
  SELECT order_id, max(version) AS version FROM order_lines WHERE org_id = :org GROUP BY order_id
), wanted AS (
  SELECT l.order_id::text AS ref, l.sku, sum(l.quantity) AS quantity
    FROM order_lines l
    JOIN latest ON latest.order_id = l.order_id AND latest.version = l.version
    JOIN orders o ON o.org_id = :org AND o.id = l.order_id
   WHERE l.org_id = :org AND o.status = 'open' AND l.sku IS NOT NULL AND l.quantity > 0
   GROUP BY l.order_id, l.sku
), held AS (
  SELECT r.reference_id AS ref, s.code AS sku,
         coalesce(sum(r.quantity) FILTER (WHERE r.status = 'active'), 0) AS active,
         coalesce(sum(r.quantity) FILTER (WHERE r.status = 'committed'), 0) AS committed,
         coalesce(array_agg(r.id::text ORDER BY r.created_at, r.id) FILTER (WHERE r.status = 'active'), '{}')
           AS ids
    FROM reservations r
    JOIN inventory_levels v ON v.org_id = :org AND v.id = r.level_id
    JOIN skus s ON s.org_id = :org AND s.id = v.sku_id
   WHERE r.org_id = :org AND r.status IN ('active', 'committed') AND r.reference_type = 'order'
   GROUP BY r.reference_id, s.code
), compared AS (
  SELECT coalesce(wanted.ref, held.ref) AS ref, coalesce(wanted.sku, held.sku) AS sku,
         coalesce(wanted.quantity, 0) AS expected, coalesce(held.active, 0) AS active,
         coalesce(held.committed, 0) AS committed, coalesce(held.ids, '{}') AS reservation_ids
    FROM wanted
    FULL JOIN held ON held.ref = wanted.ref AND held.sku = wanted.sku
)
SELECT c.ref, c.sku, CASE WHEN o.status = 'open' THEN greatest(c.expected, c.committed) ELSE c.expected END
         AS expected,
       c.active + CASE WHEN o.status = 'open' THEN c.committed ELSE 0 END AS found,
       c.reservation_ids, o.id AS order_id, o.number, o.status
  FROM compared c
  LEFT JOIN orders o ON o.org_id = :org AND o.id::text = c.ref
 WHERE CASE WHEN o.status = 'open' THEN greatest(c.expected, c.committed) ELSE c.expected END
       <> c.active + CASE WHEN o.status = 'open' THEN c.committed ELSE 0 END
 ORDER BY o.number NULLS FIRST, 1, 2
"""


async def check_orders_against_reservations(
    session: AsyncSession, org_id: uuid.UUID, options: Options
) -> list[Finding]:
    """An open order holds reservations (active, or committed by a shipment that left) for exactly its
    current lines' units per SKU (or what already shipped, if the order went down after it left); an
    order on hold or cancelled holds no active ones; no active order
    reservation names an order that does not exist."""
    findings = []
    for r in await _rows(session, _ORDERS_VS_RESERVATIONS, org=org_id):
        if r.order_id is None:
            what = f"active reservations name order {r.ref}, which does not exist"
        elif r.status == "open":
            what = f"open order {r.number} wants {r.expected} of {r.sku}; active reservations hold {r.found}"
        else:
            what = f"order {r.number} is {r.status} yet its active reservations hold {r.found} of {r.sku}"
        findings.append(
            Finding(
                check="order_reservations",
                message=what,
                rows={
                    "order_id": r.ref,
                    "order_number": r.number,
                    "order_status": r.status,
                    "sku": r.sku,
                    "active_reservation_ids": list(r.reservation_ids),
                },
                expected={"reserved": int(r.expected)},
                found={"reserved": int(r.found)},
            )
        )
    return findings


_STUCK_WEBHOOKS = """
SELECT e.id, e.channel_id, c.name AS channel, e.topic, e.status, e.attempts, e.received_at, e.last_error,
       floor(extract(epoch FROM now() - e.received_at))::bigint AS age_seconds
  FROM webhook_events e
  JOIN channels c ON c.org_id = :org AND c.id = e.channel_id
 WHERE e.org_id = :org AND e.status IN ('pending', 'failed')
   AND e.received_at < now() - make_interval(secs => :seconds)
 ORDER BY e.received_at, e.id
"""


async def check_stuck_webhooks(session: AsyncSession, org_id: uuid.UUID, options: Options) -> list[Finding]:
    """A stored delivery is processed (or dead-lettered) soon after it arrives; one still pending or
    failed past the threshold has lost its job (the sweeper should have re-enqueued it)."""
    limit = int(options.stuck_after.total_seconds())
    return [
        Finding(
            check="stuck_webhook",
            message=(
                f"webhook event {r.id} ({r.topic}, channel {r.channel}) is {r.status} after "
                f"{r.age_seconds} s and {r.attempts} attempts"
            ),
            rows={
                "webhook_event_id": str(r.id),
                "channel_id": str(r.channel_id),
                "topic": r.topic,
                "received_at": r.received_at.isoformat(),
                "last_error": (r.last_error or "")[:500] or None,
            },
            expected={"status": "processed, ignored or dead", "within_seconds": limit},
            found={"status": r.status, "age_seconds": r.age_seconds, "attempts": r.attempts},
        )
        for r in await _rows(session, _STUCK_WEBHOOKS, org=org_id, seconds=float(limit))
    ]


# A shipment's lines are [{sku, quantity}]; `service.ship` commits them with ledger rows of reason
# 'commit' naming the shipment (reference_type 'shipment', reference_id its id), one per level.
_SHIPMENTS_VS_COMMITS = """
WITH carried AS (
  SELECT s.id::text AS ref, l.value->>'sku' AS sku, sum((l.value->>'quantity')::int) AS quantity
    FROM shipments s CROSS JOIN LATERAL jsonb_array_elements(s.lines) AS l(value)
   WHERE s.org_id = :org AND s.status IN ('in_transit', 'delivered')
   GROUP BY s.id, l.value->>'sku'
), taken AS (
  SELECT g.reference_id AS ref, k.code AS sku, -sum(g.on_hand_delta) AS quantity,
         array_agg(g.id ORDER BY g.id) AS ledger_ids
    FROM inventory_ledger g
    JOIN skus k ON k.org_id = :org AND k.id = g.sku_id
   WHERE g.org_id = :org AND g.reason = 'commit' AND g.reference_type = 'shipment'
   GROUP BY g.reference_id, k.code
)
SELECT coalesce(carried.ref, taken.ref) AS ref, coalesce(carried.sku, taken.sku) AS sku,
       coalesce(carried.quantity, 0) AS expected, coalesce(taken.quantity, 0) AS found,
       coalesce(taken.ledger_ids, '{}') AS ledger_ids, s.id AS shipment_id, s.status, s.order_id
  FROM carried
  FULL JOIN taken ON taken.ref = carried.ref AND taken.sku = carried.sku
  LEFT JOIN shipments s ON s.org_id = :org AND s.id::text = coalesce(carried.ref, taken.ref)
 WHERE coalesce(carried.quantity, 0) <> coalesce(taken.quantity, 0)
 ORDER BY 1, 2
"""


async def check_shipments_against_commits(
    session: AsyncSession, org_id: uuid.UUID, options: Options
) -> list[Finding]:
    """A shipment in transit or delivered has its lines' stock committed exactly once (the commit
    ledger rows naming it take exactly its lines' units per SKU); no other shipment has commit rows."""
    findings = []
    for r in await _rows(session, _SHIPMENTS_VS_COMMITS, org=org_id):
        if r.shipment_id is None:
            what = (
                f"commit ledger rows name shipment {r.ref}, which does not exist; "
                f"they took {r.found} of {r.sku}"
            )
        elif r.status in ("in_transit", "delivered"):
            what = (
                f"shipment {r.ref} is {r.status} carrying {r.expected} of {r.sku}; commit ledger rows "
                f"naming it took {r.found}"
            )
        else:
            what = (
                f"shipment {r.ref} is {r.status} yet commit ledger rows naming it took {r.found} of {r.sku}"
            )
        findings.append(
            Finding(
                check="shipments_vs_committed_stock",
                message=what,
                rows={
                    "shipment_id": r.ref,
                    "shipment_status": r.status,
                    "order_id": str(r.order_id) if r.order_id else None,
                    "sku": r.sku,
                    "commit_ledger_ids": list(r.ledger_ids),
                },
                expected={"committed": int(r.expected)},
                found={"committed": int(r.found)},
            )
        )
    return findings


CHECKS: dict[str, Check] = {
    "ledger_chain": check_ledger_chain,
    "level_vs_ledger": check_levels_against_ledger,
    "reserved_vs_reservations": check_reserved_against_reservations,
    "order_reservations": check_orders_against_reservations,
    "stuck_webhook": check_stuck_webhooks,
    "shipments_vs_committed_stock": check_shipments_against_commits,
}
NOT_CHECKED: dict[str, str] = {}


async def verify_org(session: AsyncSession, options: Options | None = None) -> Report:
    """Run every check for the org in context. Reads only; the caller owns the transaction."""
    options = options or Options()
    org_id = require_org_id()
    findings: list[Finding] = []
    for check in CHECKS.values():
        findings.extend(await check(session, org_id, options))
    return Report(
        org_id=org_id,
        org_code=await tenancy.org_code(session, org_id),
        checks=tuple(CHECKS),
        not_checked=dict(NOT_CHECKED),
        findings=findings,
    )


async def organizations(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """(id, code) of every org, by code. Needs a system-role session (`unscoped()`): row-level
    security shows any other role its own org only."""
    return [(r.id, r.code) for r in await _rows(session, "SELECT id, code FROM organizations ORDER BY code")]
