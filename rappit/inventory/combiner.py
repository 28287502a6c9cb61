"""A per-process combiner for reservations of one hot stock level (a flash sale on one SKU).

One conditional UPDATE per reservation holds the level's row lock from the UPDATE to its commit (an
fsync), so one level takes at most one reservation per commit, whatever the number of clients. The
combiner gathers the single-line reservations of the same level that arrive while a batch is being
written (and for `linger` seconds before the first one) and writes them in ONE transaction with ONE
statement: it locks the level, grants the requests in arrival order while the running total fits in
`on_hand - reserved`, raises `reserved` by what it granted (a conditional UPDATE that re-checks the
total), and inserts one reservation row and one ledger row per granted request, chained before/after
like individual reservations. Each caller still gets its own answer: its reservation, or
InsufficientStock as if it had reserved alone at its turn. The CHECK constraints on inventory_levels
stay the safety net; nothing here relies on the process being the only one (several processes each
run their own combiner and serialise on the row lock like single reservations do).

A combined reservation commits in its own transaction: use it only where the reservation is the
whole operation (a manual hold without an Idempotency-Key, a flash-sale checkout), never inside a
transaction that must commit or roll back together with it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.inventory.reservations import Reserved, _insufficient
from rappit.inventory.stock import LEDGER_COLUMNS, MAX_QUANTITY
from rappit.platform.db import provide_session
from rappit.platform.errors import BusinessRuleViolation
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import Actor, current_actor, org_context

# Taken first, in its own statement: the combined statement that follows then starts (and takes its
# snapshot) after the lock is ours, so it reads the level as it is and nobody can change it under us.
_LOCK = text(
    """SELECT l.on_hand - l.reserved FROM inventory_levels l
        WHERE l.org_id = :org AND l.sku_id = :sku AND l.warehouse_id = :wh
        FOR NO KEY UPDATE"""
)

# Requests in arrival order (`ord`); the level (locked by _LOCK); each request's running total; the
# prefix that fits is granted. The UPDATE re-checks the total against the row it changes (a conditional
# UPDATE), and the reservation and ledger rows are written only if it changed the row as computed.
_COMBINED = text(
    f"""WITH req AS (
          SELECT * FROM unnest(CAST(:qtys AS int[]), CAST(:ref_types AS text[]), CAST(:ref_ids AS text[]),
                               CAST(:expires AS timestamptz[]), CAST(:actors AS text[]),
                               CAST(:request_ids AS text[]))
                 WITH ORDINALITY AS r(qty, ref_type, ref_id, expires, actor, request_id, ord)
        ), lvl AS (
          SELECT l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved FROM inventory_levels l
           WHERE l.org_id = :org AND l.sku_id = :sku AND l.warehouse_id = :wh
        ), run AS (
          SELECT r.*, lvl.id AS level_id, lvl.sku_id, lvl.warehouse_id, lvl.on_hand,
                 lvl.reserved + sum(r.qty) OVER (ORDER BY r.ord) - r.qty AS reserved_before,
                 lvl.reserved + sum(r.qty) OVER (ORDER BY r.ord) AS reserved_after
            FROM req r CROSS JOIN lvl
        ), granted AS MATERIALIZED (
          SELECT run.*, gen_random_uuid() AS reservation_id
            FROM run WHERE run.reserved_after <= run.on_hand
        ), total AS (
          SELECT level_id, sum(qty) AS qty, max(reserved_after) AS reserved_after
            FROM granted GROUP BY level_id
        ), upd AS (
          UPDATE inventory_levels l SET reserved = l.reserved + CAST(t.qty AS int), updated_at = now()
            FROM total t
           WHERE l.id = t.level_id AND l.org_id = :org AND l.on_hand - l.reserved >= t.qty
             AND l.reserved + t.qty = t.reserved_after
          RETURNING l.id
        ), ok AS (
          SELECT g.* FROM granted g WHERE EXISTS (SELECT 1 FROM upd)
        ), res AS (
          INSERT INTO reservations (id, org_id, level_id, quantity, status, reference_type, reference_id,
                                    expires_at, actor, created_at)
          SELECT ok.reservation_id, :org, ok.level_id, ok.qty, 'active', ok.ref_type, ok.ref_id, ok.expires,
                 ok.actor, now() FROM ok
        ), led AS (
          INSERT INTO inventory_ledger {LEDGER_COLUMNS}
          SELECT :org, ok.level_id, ok.sku_id, ok.warehouse_id, 'reserve', ok.on_hand, ok.on_hand, 0,
                 ok.reserved_before, ok.reserved_after, ok.qty, ok.actor, ok.ref_type, ok.ref_id,
                 ok.request_id, NULL, now()
            FROM ok ORDER BY ok.ord
        )
        SELECT 'level' AS kind, NULL::bigint AS ord, lvl.id AS level_id, NULL::uuid AS reservation_id,
               lvl.on_hand - lvl.reserved AS available, (SELECT count(*) FROM upd) AS updated FROM lvl
        UNION ALL
        SELECT 'granted', ok.ord, ok.level_id, ok.reservation_id, NULL, NULL FROM ok"""
)


@dataclass(slots=True)
class _Request:
    quantity: int
    reference_type: str
    reference_id: str | None
    expires_at: datetime | None
    actor: str
    request_id: str | None
    future: asyncio.Future[Reserved] = field(repr=False)


@dataclass(slots=True)
class _Level:
    pending: list[_Request] = field(default_factory=list)
    leader: asyncio.Task[None] | None = None


class ReservationCombiner:
    """Combines concurrent single-line reservations of one level in this process (see the module doc)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        linger: float = 0.001,
        max_batch: int = 500,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.linger = linger
        self.max_batch = max_batch
        self._levels: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], _Level] = {}
        self.batches = 0  # statements run (for the benchmark: requests per batch)

    async def reserve(
        self,
        org_id: uuid.UUID,
        sku_id: uuid.UUID,
        warehouse_id: uuid.UUID,
        quantity: int,
        *,
        reference_type: str,
        reference_id: str | None = None,
        expires_at: datetime | None = None,
        labels: tuple[str, str] | None = None,
    ) -> Reserved:
        """Reserve `quantity` of one level, committed, or raise InsufficientStock (nothing written)."""
        if quantity <= 0:
            raise BusinessRuleViolation("quantities must be positive", code="INVALID_QUANTITY")
        if quantity > MAX_QUANTITY:
            raise BusinessRuleViolation(
                f"at most {MAX_QUANTITY} units of one SKU per reservation", code="INVALID_QUANTITY"
            )
        key = (org_id, sku_id, warehouse_id)
        request = _Request(
            quantity,
            reference_type,
            reference_id,
            expires_at,
            current_actor().describe(),
            current_request_id(),
            asyncio.get_running_loop().create_future(),
        )
        level = self._levels.setdefault(key, _Level())
        level.pending.append(request)
        if level.leader is None:
            level.leader = asyncio.create_task(self._lead(key, level))
        try:
            return await request.future
        except _Short as short:
            label = {(sku_id, warehouse_id): labels} if labels else None
            raise _insufficient({(sku_id, warehouse_id): (quantity, short.available)}, label) from None

    async def _lead(self, key: tuple[uuid.UUID, uuid.UUID, uuid.UUID], level: _Level) -> None:
        """Write the level's pending requests batch after batch until none is left."""
        try:
            if self.linger:
                await asyncio.sleep(self.linger)
            while level.pending:
                batch, level.pending = level.pending[: self.max_batch], level.pending[self.max_batch :]
                try:
                    outcomes = await self._write(key, batch)
                except Exception as exc:  # the whole batch failed (a database error): every caller hears it
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    continue
                # Answers go out only now, after the commit: a grant is never announced before it is durable.
                for request, outcome in zip(batch, outcomes, strict=True):
                    if request.future.done():  # the caller went away; its reservation stands, like any commit
                        continue
                    if isinstance(outcome, _Short):
                        request.future.set_exception(outcome)
                    else:
                        request.future.set_result(outcome)
        finally:
            level.leader = None
            if level.pending:  # arrived between the last batch and here
                level.leader = asyncio.create_task(self._lead(key, level))
            else:
                self._levels.pop(key, None)

    async def _write(
        self, key: tuple[uuid.UUID, uuid.UUID, uuid.UUID], batch: list[_Request]
    ) -> list[Reserved | _Short]:
        """One transaction: grant what fits, in order; the outcome of each request, committed."""
        org_id, sku_id, warehouse_id = key
        outcomes: dict[int, Reserved | _Short] = {}
        with org_context(org_id, Actor(kind="system", id="reservation-combiner")):
            async with provide_session(self.sessionmaker) as session:
                locked = (
                    await session.execute(_LOCK, {"org": org_id, "sku": sku_id, "wh": warehouse_id})
                ).scalar_one_or_none()
                if locked is None:  # no such level: nothing is in stock
                    return [_Short(0) for _ in batch]
                todo = list(enumerate(batch))
                while todo:
                    self.batches += 1
                    rows = (
                        await session.execute(
                            _COMBINED,
                            {
                                "org": org_id,
                                "sku": sku_id,
                                "wh": warehouse_id,
                                "qtys": [r.quantity for _, r in todo],
                                "ref_types": [r.reference_type for _, r in todo],
                                "ref_ids": [r.reference_id for _, r in todo],
                                "expires": [r.expires_at for _, r in todo],
                                "actors": [r.actor for _, r in todo],
                                "request_ids": [r.request_id for _, r in todo],
                            },
                        )
                    ).all()
                    level = next(r for r in rows if r.kind == "level")
                    granted = {int(r.ord): r for r in rows if r.kind == "granted"}
                    if (granted and not level.updated) or (
                        not granted and todo[0][1].quantity <= level.available
                    ):  # the first request fitted but nothing was written: the level moved under the lock
                        raise RuntimeError("combined reservation: the level changed under its row lock")
                    available = int(level.available) - sum(todo[o - 1][1].quantity for o in granted)
                    rest = []
                    for ord_, (i, request) in enumerate(todo, start=1):
                        row = granted.get(ord_)
                        if row is not None:
                            outcomes[i] = Reserved(
                                row.reservation_id, row.level_id, sku_id, warehouse_id, request.quantity
                            )
                        elif request.quantity > available:
                            outcomes[i] = _Short(max(available, 0))  # not enough at its turn: refused
                        else:
                            rest.append((i, request))  # fits after a bigger one was refused: next round
                    todo = rest
        return [outcomes[i] for i in range(len(batch))]


class _Short(Exception):
    """A refused request and what was available at its turn."""

    def __init__(self, available: int) -> None:
        super().__init__(available)
        self.available = available
