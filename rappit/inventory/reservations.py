"""Reservations: reserve (all or nothing), release, commit and expire holds on stock.

A single-line reserve is one conditional UPDATE that also writes the reservation and its ledger row;
multi-line ones lock levels in id order first. Release and commit close reservations in id order.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.catalogue import sku_ids, warehouse_ids
from rappit.inventory.models import InventoryLevel, Reservation, Sku
from rappit.inventory.stock import LEDGER_COLUMNS, MAX_QUANTITY, InsufficientStock, with_retries
from rappit.platform.db import get_or_404
from rappit.platform.errors import BusinessRuleViolation
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import current_actor, require_org_id


@dataclass(frozen=True, slots=True)
class ReserveLine:
    sku_id: uuid.UUID
    warehouse_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class Reserved:
    reservation_id: uuid.UUID
    level_id: uuid.UUID
    sku_id: uuid.UUID
    warehouse_id: uuid.UUID
    quantity: int


# After `upd` (the levels just reserved, with qty): their reservation rows and ledger rows, one statement.
_RESERVE_TAIL = f"""), res AS (
          INSERT INTO reservations (id, org_id, level_id, quantity, status, reference_type, reference_id,
                                    expires_at, actor, created_at)
          SELECT gen_random_uuid(), :org, u.id, u.qty, 'active', :ref_type, :ref_id,
                 CAST(:expires AS timestamptz), :actor, now() FROM upd u
          RETURNING id, level_id, quantity
        ), led AS (
          INSERT INTO inventory_ledger {LEDGER_COLUMNS}
          SELECT :org, u.id, u.sku_id, u.warehouse_id, 'reserve', u.on_hand, u.on_hand, 0,
                 u.reserved - u.qty, u.reserved, u.qty, :actor, :ref_type, :ref_id, :request_id, NULL, now()
            FROM upd u
        )
        SELECT r.id, r.level_id, u.sku_id, u.warehouse_id, r.quantity FROM res r JOIN upd u ON u.id =
          r.level_id"""

_RESERVE_ONE = text(
    f"""WITH upd AS (
          UPDATE inventory_levels l SET reserved = l.reserved + CAST(:qty AS int), updated_at = now()
           WHERE l.org_id = :org AND l.sku_id = :sku AND l.warehouse_id = :wh
             AND l.on_hand - l.reserved >= CAST(:qty AS int)
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved, CAST(:qty AS int) AS qty
        {_RESERVE_TAIL}"""
)

LOCK_LEVELS = text(
    """SELECT l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved
         FROM inventory_levels l
         JOIN unnest(CAST(:skus AS uuid[]), CAST(:whs AS uuid[])) AS r(sku_id, warehouse_id)
           ON l.sku_id = r.sku_id AND l.warehouse_id = r.warehouse_id
        WHERE l.org_id = :org
        ORDER BY l.id
        FOR NO KEY UPDATE OF l"""
)
"""The levels of (sku, warehouse) pairs, row-locked in id order (the one lock order every multi-level
write takes); the batch order path uses it too."""

_RESERVE_LOCKED = text(
    f"""WITH req AS (
          SELECT * FROM unnest(CAST(:levels AS uuid[]), CAST(:qtys AS int[])) AS r(level_id, qty)
        ), upd AS (
          UPDATE inventory_levels l SET reserved = l.reserved + r.qty, updated_at = now()
            FROM req r WHERE l.id = r.level_id AND l.org_id = :org
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved, r.qty
        {_RESERVE_TAIL}"""
)


async def reserve(
    session: AsyncSession,
    lines: Sequence[ReserveLine],
    *,
    reference_type: str,
    reference_id: str | None = None,
    expires_at: datetime | None = None,
    labels: dict[tuple[uuid.UUID, uuid.UUID], tuple[str, str]] | None = None,
) -> list[Reserved]:
    """Reserve every line or none. Lines repeating a (SKU, warehouse) reserve their sum.

    Short lines raise InsufficientStock (422) listing every short SKU with requested and available;
    nothing has been written then. `labels` maps ids to (sku code, warehouse code) for that message.
    """
    wanted: dict[tuple[uuid.UUID, uuid.UUID], int] = defaultdict(int)
    for line in lines:
        if line.quantity <= 0:
            raise BusinessRuleViolation("quantities must be positive", code="INVALID_QUANTITY")
        wanted[(line.sku_id, line.warehouse_id)] += line.quantity
    if max(wanted.values(), default=0) > MAX_QUANTITY:
        raise BusinessRuleViolation(
            f"at most {MAX_QUANTITY} units of one SKU per reservation", code="INVALID_QUANTITY"
        )
    if not wanted:
        raise BusinessRuleViolation("nothing to reserve", code="NO_LINES")
    org_id = require_org_id()
    common = {
        "org": org_id,
        "ref_type": reference_type,
        "ref_id": reference_id,
        "expires": expires_at,
        "actor": current_actor().describe(),
        "request_id": current_request_id(),
    }
    if len(wanted) == 1:
        # One row: a single conditional UPDATE (with its reservation and ledger row) is atomic by itself.
        (((sku_id, wh_id), qty),) = wanted.items()
        rows = (await session.execute(_RESERVE_ONE, {**common, "sku": sku_id, "wh": wh_id, "qty": qty})).all()
        if rows:
            return [Reserved(*row) for row in rows]
        current = (
            await session.execute(
                select(InventoryLevel.on_hand - InventoryLevel.reserved).where(
                    InventoryLevel.sku_id == sku_id, InventoryLevel.warehouse_id == wh_id
                )
            )
        ).scalar_one_or_none()
        raise _insufficient({(sku_id, wh_id): (qty, current or 0)}, labels)
    keys = sorted(wanted)

    async def lock_and_apply() -> list[Reserved]:
        locked = (
            await session.execute(
                LOCK_LEVELS, {"org": org_id, "skus": [k[0] for k in keys], "whs": [k[1] for k in keys]}
            )
        ).all()
        by_key = {(r.sku_id, r.warehouse_id): r for r in locked}
        short = {
            key: (qty, (by_key[key].on_hand - by_key[key].reserved) if key in by_key else 0)
            for key, qty in wanted.items()
            if key not in by_key or by_key[key].on_hand - by_key[key].reserved < qty
        }
        if short:
            raise _insufficient(short, labels)
        rows = (
            await session.execute(
                _RESERVE_LOCKED,
                {**common, "levels": [by_key[k].id for k in keys], "qtys": [wanted[k] for k in keys]},
            )
        ).all()
        return [Reserved(*row) for row in rows]

    # Several rows: locks are taken in id order, so this cannot deadlock with its own kind; the
    # savepoint-and-retry covers anything else the caller's transaction may be holding.
    return await with_retries(session, lock_and_apply)


def _insufficient(
    short: dict[tuple[uuid.UUID, uuid.UUID], tuple[int, int]],
    labels: dict[tuple[uuid.UUID, uuid.UUID], tuple[str, str]] | None,
) -> InsufficientStock:
    lines = []
    for key, (requested, available) in sorted(
        short.items(), key=lambda kv: (labels or {}).get(kv[0], (str(kv[0]),))
    ):
        sku, warehouse = (labels or {}).get(key, (str(key[0]), str(key[1])))
        lines.append(
            {"sku": sku, "warehouse": warehouse, "requested": requested, "available": max(available, 0)}
        )
    skus = ", ".join(f"{line['sku']} ({line['available']} of {line['requested']})" for line in lines)
    return InsufficientStock(f"not enough stock for {skus}", details={"lines": lines})


async def reserve_by_codes(
    session: AsyncSession,
    lines: Sequence[tuple[str, str, int]],
    *,
    reference_type: str,
    reference_id: str | None = None,
    expires_at: datetime | None = None,
) -> list[Reserved]:
    """`lines` are (sku code, warehouse code, quantity); unknown codes are a 422 naming them."""
    skus = await sku_ids(session, [line[0] for line in lines])
    whs = await warehouse_ids(session, [line[1] for line in lines])
    unknown_skus = sorted({line[0] for line in lines} - skus.keys())
    unknown_whs = sorted({line[1] for line in lines} - whs.keys())
    if unknown_skus or unknown_whs:
        raise BusinessRuleViolation(
            "unknown SKU or warehouse codes",
            code="UNKNOWN_CODES",
            details={"skus": unknown_skus, "warehouses": unknown_whs},
        )
    labels = {(skus[s], whs[w]): (s, w) for s, w, _ in lines}
    return await reserve(
        session,
        [ReserveLine(skus[s], whs[w], q) for s, w, q in lines],
        reference_type=reference_type,
        reference_id=reference_id,
        expires_at=expires_at,
        labels=labels,
    )


_LOCK_RESERVATIONS = """SELECT r.id, r.level_id, r.quantity, r.reference_type, r.reference_id
                          FROM reservations r
                         WHERE r.org_id = :org AND r.status = 'active' AND {where}
                         ORDER BY r.id
                         FOR NO KEY UPDATE"""

_CLOSE = text(
    f"""WITH closed AS (
          UPDATE reservations r SET status = CAST(:status AS text), closed_at = now(), close_reason = :reason
           WHERE r.id = ANY(CAST(:ids AS uuid[])) AND r.org_id = :org
          RETURNING r.id
        ), req AS (
          SELECT * FROM unnest(CAST(:levels AS uuid[]), CAST(:qtys AS int[]), CAST(:ref_types AS text[]),
                               CAST(:ref_ids AS text[])) AS r(level_id, qty, ref_type, ref_id)
        ), upd AS (
          UPDATE inventory_levels l
             SET reserved = l.reserved - r.qty,
                 on_hand = l.on_hand - CASE WHEN CAST(:commit AS boolean) THEN r.qty ELSE 0 END,
                 updated_at = now()
            FROM req r WHERE l.id = r.level_id AND l.org_id = :org
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved, r.qty, r.ref_type, r.ref_id
        ), led AS (
          INSERT INTO inventory_ledger {LEDGER_COLUMNS}
          SELECT :org, u.id, u.sku_id, u.warehouse_id, CAST(:ledger_reason AS text),
                 u.on_hand + CASE WHEN CAST(:commit AS boolean) THEN u.qty ELSE 0 END, u.on_hand,
                 CASE WHEN CAST(:commit AS boolean) THEN -u.qty ELSE 0 END,
                 u.reserved + u.qty, u.reserved, -u.qty, :actor, u.ref_type, u.ref_id, :request_id,
                   NULL, now()
            FROM upd u
        )
        SELECT count(*) FROM closed"""
)


async def _close(
    session: AsyncSession,
    where: str,
    params: dict[str, Any],
    *,
    status: str,
    reason: str,
    ledger_reason: str,
    reference: tuple[str, str] | None = None,
) -> list[uuid.UUID]:
    """`reference` (type, id) replaces the reservations' own on the ledger rows (a commit names the
    shipment that took the stock, not the order that reserved it)."""
    org_id = require_org_id()
    targets = (
        await session.execute(text(_LOCK_RESERVATIONS.format(where=where)), {"org": org_id, **params})
    ).all()
    if not targets:
        return []
    per_level: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for t in targets:
        per_level[t.level_id].append(t)
    levels = sorted(per_level)
    if len(levels) > 1:
        await session.execute(
            text(
                """SELECT id FROM inventory_levels WHERE org_id = :org AND id = ANY(CAST(:ids AS uuid[]))
                    ORDER BY id FOR NO KEY UPDATE"""
            ),
            {"org": org_id, "ids": levels},
        )

    def single(values: set[Any]) -> Any:
        return next(iter(values)) if len(values) == 1 else None

    await session.execute(
        _CLOSE,
        {
            "org": org_id,
            "ids": [t.id for t in targets],
            "status": status,
            "reason": reason,
            "levels": levels,
            "qtys": [sum(t.quantity for t in per_level[lv]) for lv in levels],
            "ref_types": [
                reference[0] if reference else single({t.reference_type for t in per_level[lv]})
                for lv in levels
            ],
            "ref_ids": [
                reference[1] if reference else single({t.reference_id for t in per_level[lv]})
                for lv in levels
            ],
            "commit": status == "committed",
            "ledger_reason": ledger_reason,
            "actor": current_actor().describe(),
            "request_id": current_request_id(),
        },
    )
    return [t.id for t in targets]


async def release(session: AsyncSession, reservation_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Release active reservations (already closed ones are skipped: releasing twice is a no-op)."""
    return await _close(
        session,
        "r.id = ANY(CAST(:ids AS uuid[]))",
        {"ids": list(reservation_ids)},
        status="released",
        reason="release",
        ledger_reason="release",
    )


async def release_reference(
    session: AsyncSession,
    reference_type: str,
    reference_id: str,
    *,
    level_ids: Sequence[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Release what is still reserved for one reference (an order being cancelled), or only its
    reservations on `level_ids` (an order line going down)."""
    where = "r.reference_type = :rt AND r.reference_id = :ri"
    params: dict[str, Any] = {"rt": reference_type, "ri": reference_id}
    if level_ids is not None:
        where += " AND r.level_id = ANY(CAST(:levels AS uuid[]))"
        params["levels"] = list(level_ids)
    return await _close(session, where, params, status="released", reason="release", ledger_reason="release")


async def reserved_for_reference(
    session: AsyncSession, reference_type: str, reference_id: str
) -> dict[str, tuple[uuid.UUID, int]]:
    """SKU code -> (level id, quantity) still actively reserved for a reference."""
    rows = await session.execute(
        select(Sku.code, InventoryLevel.id, func.sum(Reservation.quantity))
        .join(InventoryLevel, InventoryLevel.id == Reservation.level_id)
        .join(Sku, Sku.id == InventoryLevel.sku_id)
        .where(
            Reservation.reference_type == reference_type,
            Reservation.reference_id == reference_id,
            Reservation.status == "active",
        )
        .group_by(Sku.code, InventoryLevel.id)
    )
    out: dict[str, tuple[uuid.UUID, int]] = {}
    for code, level_id, qty in rows.all():
        prev = out.get(code)
        out[code] = (level_id, int(qty) + (prev[1] if prev else 0))
    return out


async def committed_for_reference(
    session: AsyncSession, reference_type: str, reference_id: str
) -> dict[str, int]:
    """SKU code -> units of a reference's reservations already committed (shipped)."""
    rows = await session.execute(
        select(Sku.code, func.sum(Reservation.quantity))
        .join(InventoryLevel, InventoryLevel.id == Reservation.level_id)
        .join(Sku, Sku.id == InventoryLevel.sku_id)
        .where(
            Reservation.reference_type == reference_type,
            Reservation.reference_id == reference_id,
            Reservation.status == "committed",
        )
        .group_by(Sku.code)
    )
    return {code: int(qty) for code, qty in rows.all()}


_SPLIT = text(
    """WITH src AS (
         UPDATE reservations SET quantity = quantity - CAST(:part AS int)
          WHERE org_id = :org AND id = :id AND status = 'active' AND quantity > CAST(:part AS int)
         RETURNING org_id, level_id, reference_type, reference_id, expires_at, actor
       )
       INSERT INTO reservations (id, org_id, level_id, quantity, status, reference_type, reference_id,
                                 expires_at, actor)
       SELECT :new, org_id, level_id, CAST(:part AS int), 'active', reference_type, reference_id,
              expires_at, actor
         FROM src
       RETURNING id"""
)

_TAKE_FREE = text(
    f"""WITH upd AS (
          UPDATE inventory_levels l SET on_hand = l.on_hand - CAST(:qty AS int), updated_at = now()
           WHERE l.org_id = :org AND l.id = :level AND l.on_hand - l.reserved >= CAST(:qty AS int)
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved
        )
        INSERT INTO inventory_ledger {LEDGER_COLUMNS}
        SELECT :org, u.id, u.sku_id, u.warehouse_id, 'commit', u.on_hand + CAST(:qty AS int), u.on_hand,
               -CAST(:qty AS int), u.reserved, u.reserved, 0, :actor, :ref_type, :ref_id, :request_id,
               'shipped beyond the reservation', now()
          FROM upd u
        RETURNING level_id"""
)


async def commit_units(
    session: AsyncSession,
    reference_type: str,
    reference_id: str,
    units: Sequence[tuple[str, Sequence[uuid.UUID], int]],
    *,
    reference: tuple[str, str],
) -> list[uuid.UUID]:
    """Commit exactly `units` of a reference's active reservations. Each group is (SKU code, the levels
    it is reserved on, units that leave): whole reservations oldest level first, the last one split
    when it holds more than is left to take (the rest stays reserved for the reference). Units the
    reference no longer holds (its order went down after the label was bought) come from the first
    level's free stock; if that is short too, `InsufficientStock` and the caller's transaction must
    roll back. Returns the committed reservation ids."""
    org_id = require_org_id()
    levels = sorted({lv for _, group, _ in units for lv in group})
    where = "r.reference_type = :rt AND r.reference_id = :ri AND r.level_id = ANY(CAST(:levels AS uuid[]))"
    held = (
        await session.execute(
            text(_LOCK_RESERVATIONS.format(where=where)),
            {"org": org_id, "rt": reference_type, "ri": reference_id, "levels": levels},
        )
    ).all()
    chosen: list[uuid.UUID] = []
    short: list[tuple[str, uuid.UUID, int]] = []
    for code, group, quantity in units:
        need = quantity
        order = {level: i for i, level in enumerate(group)}
        for r in sorted((h for h in held if h.level_id in order), key=lambda h: (order[h.level_id], h.id)):
            if need <= 0:
                break
            if r.quantity <= need:
                chosen.append(r.id)
                need -= r.quantity
                continue
            part = uuid.uuid4()
            await session.execute(_SPLIT, {"org": org_id, "id": r.id, "part": need, "new": part})
            chosen.append(part)
            need = 0
        if need > 0:
            if not group:
                raise InsufficientStock(
                    f"not enough stock for {code} (nothing reserved, {need} to ship)",
                    details={"lines": [{"sku": code, "requested": need, "available": 0}]},
                )
            short.append((code, group[0], need))
    committed = await commit(session, chosen, reference=reference) if chosen else []
    for code, level_id, need in short:
        taken = (
            await session.execute(
                _TAKE_FREE,
                {
                    "org": org_id,
                    "level": level_id,
                    "qty": need,
                    "actor": current_actor().describe(),
                    "ref_type": reference[0],
                    "ref_id": reference[1],
                    "request_id": current_request_id(),
                },
            )
        ).first()
        if taken is None:
            available = (
                await session.execute(
                    select(InventoryLevel.on_hand - InventoryLevel.reserved).where(
                        InventoryLevel.id == level_id
                    )
                )
            ).scalar_one_or_none()
            raise InsufficientStock(
                f"not enough stock for {code} ({max(available or 0, 0)} free of {need} shipped beyond "
                "the reservation)",
                details={"lines": [{"sku": code, "requested": need, "available": max(available or 0, 0)}]},
            )
    return committed


async def commit(
    session: AsyncSession, reservation_ids: Sequence[uuid.UUID], *, reference: tuple[str, str] | None = None
) -> list[uuid.UUID]:
    """Stock leaves the building (shipment): on_hand and reserved both drop by the reserved quantity.
    `reference` (type, id) goes on the ledger rows instead of the reservations' own."""
    return await _close(
        session,
        "r.id = ANY(CAST(:ids AS uuid[]))",
        {"ids": list(reservation_ids)},
        status="committed",
        reason="commit",
        ledger_reason="commit",
        reference=reference,
    )


async def release_expired(session: AsyncSession, *, now: datetime | None = None) -> list[uuid.UUID]:
    """Release the current org's reservations whose expires_at has passed (audited as `expire`)."""
    return await _close(
        session,
        "r.expires_at IS NOT NULL AND r.expires_at <= coalesce(CAST(:now AS timestamptz), now())",
        {"now": now},
        status="released",
        reason="expire",
        ledger_reason="expire",
    )


async def get_reservation(session: AsyncSession, reservation_id: uuid.UUID) -> Reservation:
    return await get_or_404(session, Reservation, reservation_id, "reservation")
