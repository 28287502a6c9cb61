"""Stock changes: receive and adjust on-hand, with the ledger row written by the same statement.

Every change and its ledger row are written by the same SQL statement, inside the caller's
transaction. Row locks are always taken in one global order (reservations by id, then levels by id),
so concurrent multi-line operations cannot deadlock; `with_retries` still retries the rare
deadlock or serialization failure a bounded number of times, inside a savepoint.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.catalogue import resolve_pair
from rappit.platform.errors import BusinessRuleViolation, sqlstate_of
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import current_actor, require_org_id

T = TypeVar("T")
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
MAX_QUANTITY = 1_000_000_000  # stock columns are int4; sums stay well inside it


class InsufficientStock(BusinessRuleViolation):
    code = "INSUFFICIENT_STOCK"


class BelowReserved(BusinessRuleViolation):
    code = "BELOW_RESERVED"


async def with_retries(session: AsyncSession, fn: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Run `fn` in a savepoint; on deadlock/serialization failure roll back to it and try again."""
    for attempt in range(1, attempts + 1):
        try:
            async with session.begin_nested():
                return await fn()
        except DBAPIError as exc:
            if sqlstate_of(exc) not in RETRYABLE_SQLSTATES or attempt == attempts:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class LevelChange:
    sku: str
    warehouse: str
    on_hand_before: int
    on_hand_after: int
    reserved: int
    changed: bool


_ENSURE_LEVEL = text(
    """INSERT INTO inventory_levels (id, org_id, sku_id, warehouse_id, on_hand, reserved, updated_at)
       VALUES (gen_random_uuid(), :org, :sku, :wh, 0, 0, now())
       ON CONFLICT (org_id, sku_id, warehouse_id) DO NOTHING"""
)

LEDGER_COLUMNS = """(org_id, level_id, sku_id, warehouse_id, reason,
    on_hand_before, on_hand_after, on_hand_delta, reserved_before, reserved_after, reserved_delta,
    actor, reference_type, reference_id, request_id, note, created_at)"""
"""The ledger's columns in the order every stock statement inserts them (bulk import shares it)."""

_LOCK_LEVEL = text(
    """SELECT id, on_hand, reserved FROM inventory_levels
        WHERE org_id = :org AND sku_id = :sku AND warehouse_id = :wh
        FOR NO KEY UPDATE"""
)

# Runs while the row lock from _LOCK_LEVEL is held, so `before` is exactly what is being replaced.
_SET_ON_HAND = text(
    f"""WITH upd AS (
          UPDATE inventory_levels l SET on_hand = CAST(:after AS int), updated_at = now()
           WHERE l.id = :level AND l.org_id = :org
          RETURNING l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved
        )
        INSERT INTO inventory_ledger {LEDGER_COLUMNS}
        SELECT :org, u.id, u.sku_id, u.warehouse_id, CAST(:reason AS text), CAST(:before AS int), u.on_hand,
               u.on_hand - CAST(:before AS int), u.reserved, u.reserved, 0, :actor, :ref_type, :ref_id,
               :request_id, :note, now()
          FROM upd u"""
)


async def adjust(
    session: AsyncSession,
    *,
    sku: str,
    warehouse: str,
    quantity: int,
    mode: str = "delta",
    reason: str = "adjust",
    note: str | None = None,
    reference_type: str | None = None,
    reference_id: str | None = None,
) -> LevelChange:
    """Receive or adjust stock: `mode='delta'` adds `quantity` (may be negative), `mode='set'` sets on_hand.

    Refuses (422) to take on_hand below what is reserved; the CHECK constraint backs this up.
    """
    if mode not in ("delta", "set"):
        raise BusinessRuleViolation("mode must be 'delta' or 'set'", code="INVALID_MODE")
    if reason not in ("receive", "adjust"):
        raise BusinessRuleViolation("reason must be 'receive' or 'adjust'", code="INVALID_REASON")
    if reason == "receive" and (mode != "delta" or quantity <= 0):
        raise BusinessRuleViolation("a receipt adds a positive quantity", code="INVALID_QUANTITY")
    if mode == "set" and quantity < 0:
        raise BusinessRuleViolation("on_hand cannot be set below zero", code="INVALID_QUANTITY")
    org_id = require_org_id()
    sku_id, wh_id = await resolve_pair(session, sku, warehouse)
    await session.execute(_ENSURE_LEVEL, {"org": org_id, "sku": sku_id, "wh": wh_id})
    level_id, on_hand, reserved = (
        await session.execute(_LOCK_LEVEL, {"org": org_id, "sku": sku_id, "wh": wh_id})
    ).one()
    new_on_hand = quantity if mode == "set" else on_hand + quantity
    if new_on_hand > 2_000_000_000:
        raise BusinessRuleViolation("on_hand would exceed 2,000,000,000", code="NUMBER_OUT_OF_RANGE")
    if new_on_hand < reserved:
        raise BelowReserved(
            f"{sku} in {warehouse}: on_hand would be {new_on_hand}, below the {reserved} reserved",
            details={
                "sku": sku,
                "warehouse": warehouse,
                "on_hand": on_hand,
                "reserved": reserved,
                "requested_on_hand": new_on_hand,
                "available": on_hand - reserved,
            },
        )
    changed = new_on_hand != on_hand
    if changed:
        await session.execute(
            _SET_ON_HAND,
            {
                "org": org_id,
                "level": level_id,
                "after": new_on_hand,
                "before": on_hand,
                "reason": reason,
                "actor": current_actor().describe(),
                "ref_type": reference_type,
                "ref_id": reference_id,
                "request_id": current_request_id(),
                "note": note,
            },
        )
    return LevelChange(sku, warehouse, on_hand, new_on_hand, reserved, changed)
