"""Bulk stock import: parse and validate every row, COPY the valid ones into a staging table, then
apply them with a handful of set-based statements (with their ledger rows) in the caller's transaction.

Row problems become entries in the summary; a file that is not parseable CSV is a 400 naming the line.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.stock import LEDGER_COLUMNS, MAX_QUANTITY
from rappit.platform.db import long_statements
from rappit.platform.errors import BadRequest
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import current_actor, require_org_id

REQUIRED_COLUMNS = ("sku", "quantity", "warehouse_code")
OPTIONAL_COLUMNS = ("mode",)
MODES = ("set", "add")
_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(slots=True)
class Row:
    line: int
    sku: str
    warehouse: str
    quantity: int
    mode: str


@dataclass(slots=True)
class RowError:
    line: int
    sku: str
    code: str
    message: str
    field: str | None = None
    """The column at fault (catalogue imports name it; a stock row has one error at most)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "sku": self.sku, "code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def malformed(line: int, message: str) -> BadRequest:
    return BadRequest(f"line {line}: {message}", code="MALFORMED_CSV", details={"line": line})


def decode_csv(body: bytes) -> str:
    """UTF-8 (a BOM is dropped); anything else is a 400 naming the line of the first bad byte."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise malformed(body[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text") from exc


@dataclass(slots=True)
class Parsed:
    rows: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    received: int = 0
    text_quantities: bool = True


def _validate(
    parsed: Parsed, line: int, sku: Any, quantity: Any, warehouse: Any, mode: Any, default_mode: str
) -> None:
    """CSV gives strings ("12"); JSON must give integers (a JSON "12" or true is refused)."""
    parsed.received += 1
    sku = sku.strip() if isinstance(sku, str) else ""
    warehouse = warehouse.strip() if isinstance(warehouse, str) else ""
    if "\x00" in sku or "\x00" in warehouse:
        parsed.errors.append(
            RowError(line, sku.replace("\x00", ""), "INVALID_TEXT", "NUL characters are not allowed")
        )
        return
    if not sku or not warehouse:
        missing = [name for name, value in (("sku", sku), ("warehouse_code", warehouse)) if not value]
        parsed.errors.append(RowError(line, sku, "MISSING_FIELD", f"missing {', '.join(missing)}"))
        return
    if isinstance(quantity, str) and parsed.text_quantities and _DIGITS.match(quantity.strip()):
        qty: int | None = int(quantity.strip())
    elif isinstance(quantity, int) and not isinstance(quantity, bool):
        qty = quantity
    else:
        qty = None
    if qty is None or qty < 0 or qty > MAX_QUANTITY:
        parsed.errors.append(
            RowError(
                line,
                sku,
                "INVALID_QUANTITY",
                f"quantity must be a whole number from 0 to {MAX_QUANTITY}, got {quantity!r}",
            )
        )
        return
    row_mode = (mode.strip().lower() if isinstance(mode, str) else "") or default_mode
    if row_mode not in MODES:
        parsed.errors.append(RowError(line, sku, "INVALID_MODE", f"mode must be set or add, got {mode!r}"))
        return
    parsed.rows.append(Row(line, sku, warehouse, qty, row_mode))


def check_mode(mode: Any) -> str:
    """The file-wide default mode (query or form field): a bad one refuses the whole upload."""
    if mode not in MODES:
        raise BadRequest(
            f"mode must be one of {', '.join(MODES)}; got {mode!r}",
            code="INVALID_MODE",
            details={"mode": mode if isinstance(mode, str) else repr(mode), "allowed": list(MODES)},
        )
    return str(mode)


def parse_csv(body: bytes, default_mode: str, into: Parsed | None = None) -> Parsed:
    default_mode = check_mode(default_mode)
    content = decode_csv(body)
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    parsed = into if into is not None else Parsed()
    try:
        header = next(reader, None)
        if header is None:
            raise BadRequest(
                "line 1: the file is empty; expected a header row sku,quantity,warehouse_code",
                code="MALFORMED_CSV",
                details={"line": 1},
            )
        columns = [h.strip().lower() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if missing or unknown or len(set(columns)) != len(columns):
            raise BadRequest(
                f"line 1: header must be sku,quantity,warehouse_code[,mode]; got {','.join(header)}",
                code="MALFORMED_CSV",
                details={"line": 1, "missing": missing, "unknown": unknown},
            )
        index = {c: i for i, c in enumerate(columns)}
        width = len(columns)
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != width:
                raise BadRequest(
                    f"line {reader.line_num}: expected {width} fields, found {len(record)}",
                    code="MALFORMED_CSV",
                    details={"line": reader.line_num},
                )
            _validate(
                parsed,
                reader.line_num,
                record[index["sku"]],
                record[index["quantity"]],
                record[index["warehouse_code"]],
                record[index["mode"]] if "mode" in index else None,
                default_mode,
            )
    except csv.Error as exc:
        raise BadRequest(
            f"line {reader.line_num}: {exc}", code="MALFORMED_CSV", details={"line": reader.line_num}
        ) from exc
    return parsed


def parse_json(items: Any, default_mode: str, into: Parsed | None = None) -> Parsed:
    default_mode = check_mode(default_mode)
    if not isinstance(items, list):
        raise BadRequest(
            "expected a JSON array of {sku, quantity, warehouse_code} objects", code="MALFORMED_JSON"
        )
    parsed = into if into is not None else Parsed()
    parsed.text_quantities = False
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            parsed.received += 1
            parsed.errors.append(RowError(i, "", "MALFORMED_ROW", "each item must be an object"))
            continue
        _validate(
            parsed,
            i,
            item.get("sku"),
            item.get("quantity"),
            item.get("warehouse_code"),
            item.get("mode"),
            default_mode,
        )
    return parsed


def _reject_duplicates(parsed: Parsed) -> None:
    """A (sku, warehouse) twice in one file is ambiguous: every occurrence fails, none applies."""
    first: dict[tuple[str, str], int] = {}
    dup_keys: set[tuple[str, str]] = set()
    for row in parsed.rows:
        key = (row.sku, row.warehouse)
        if key in first:
            dup_keys.add(key)
        else:
            first[key] = row.line
    if not dup_keys:
        return
    lines: dict[tuple[str, str], list[int]] = {}
    for row in parsed.rows:
        if (row.sku, row.warehouse) in dup_keys:
            lines.setdefault((row.sku, row.warehouse), []).append(row.line)
    keep = []
    for row in parsed.rows:
        key = (row.sku, row.warehouse)
        if key in dup_keys:
            others = [str(n) for n in lines[key] if n != row.line]
            parsed.errors.append(
                RowError(
                    row.line,
                    row.sku,
                    "DUPLICATE_ROW",
                    f"{row.sku} in {row.warehouse} also appears on line {', '.join(others)}",
                )
            )
        else:
            keep.append(row)
    parsed.rows = keep


BULK_STATEMENT_TIMEOUT_MS = 120_000
"""An import is the one deliberately long write: it gets this instead of DB_STATEMENT_TIMEOUT_MS."""

_RAW = """CREATE TEMP TABLE import_raw (line int, sku text, wh text, qty int, mode text) ON COMMIT DROP"""

# Codes resolved to ids, and each row's existing level found, by joins on the unique indexes: one pass
# in the database instead of shipping every code and id through Python.
_STAGE = """CREATE TEMP TABLE import_stage ON COMMIT DROP AS
    SELECT r.line, r.sku, r.wh, r.qty, r.mode, s.id AS sku_id, w.id AS wh_id, l.id AS level_id
      FROM import_raw r
      LEFT JOIN skus s ON s.org_id = :org AND s.code = r.sku
      LEFT JOIN warehouses w ON w.org_id = :org AND w.code = r.wh
      LEFT JOIN inventory_levels l ON l.org_id = :org AND l.sku_id = s.id AND l.warehouse_id = w.id"""

_UNKNOWN = text(
    "SELECT line, sku, wh, sku_id IS NULL FROM import_stage WHERE sku_id IS NULL OR wh_id IS NULL "
    "ORDER BY line"
)
_DROP_UNKNOWN = text("DELETE FROM import_stage WHERE sku_id IS NULL OR wh_id IS NULL")

# New levels are inserted with their final quantity (and a ledger row from zero) instead of being
# created empty and then updated: half the writes, and no re-check of foreign keys on the update.
_INSERT_NEW = text(
    f"""WITH ins AS (
          INSERT INTO inventory_levels (id, org_id, sku_id, warehouse_id, on_hand, reserved, updated_at)
          SELECT gen_random_uuid(), :org, s.sku_id, s.wh_id, s.qty, 0, now()
            FROM import_stage s
           WHERE s.level_id IS NULL
           ORDER BY s.sku_id, s.wh_id
          ON CONFLICT (org_id, sku_id, warehouse_id) DO NOTHING
          RETURNING id, sku_id, warehouse_id, on_hand
        ), led AS (
          INSERT INTO inventory_ledger {LEDGER_COLUMNS}
          SELECT :org, i.id, i.sku_id, i.warehouse_id, 'import', 0, i.on_hand, i.on_hand,
                 0, 0, 0, :actor, 'import', :import_id, :request_id, NULL, now()
            FROM ins i WHERE i.on_hand <> 0
        )
        SELECT count(*), count(*) FILTER (WHERE on_hand = 0) FROM ins"""
)

# A level that another transaction created between the stage and the insert (a concurrent adjustment)
# was skipped by ON CONFLICT: the whole apply runs again (a serialization failure: `with_retries` rolls
# back to its savepoint and retries), and the level is then found as an existing one.
_RACED = text(
    "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', "
    "MESSAGE = 'a stock level was created concurrently with the import'; END $$"
)

_EXISTING = """import_stage s
          JOIN inventory_levels l ON l.org_id = :org AND l.id = s.level_id
         WHERE s.level_id IS NOT NULL"""

_LOCK = text(
    f"SELECT count(*) FROM (SELECT l.id FROM {_EXISTING} ORDER BY l.id FOR NO KEY UPDATE OF l) locked"
)

_APPLY = text(
    f"""WITH cur AS (
          SELECT s.line, s.sku, l.id, l.sku_id, l.warehouse_id, l.on_hand, l.reserved,
                 CASE WHEN s.mode = 'add' THEN least(l.on_hand::bigint + s.qty, 2000000001) ELSE s.qty
                   END AS new_on_hand
            FROM {_EXISTING}
        ), upd AS (
          UPDATE inventory_levels l SET on_hand = c.new_on_hand, updated_at = now()
            FROM cur c
           WHERE l.id = c.id AND c.new_on_hand >= c.reserved AND c.new_on_hand <> c.on_hand
             AND c.new_on_hand <= 2000000000
          RETURNING l.id, l.sku_id, l.warehouse_id, c.on_hand AS before, l.on_hand AS after, l.reserved
        ), led AS (
          INSERT INTO inventory_ledger {LEDGER_COLUMNS}
          SELECT :org, u.id, u.sku_id, u.warehouse_id, 'import', u.before, u.after, u.after - u.before,
                 u.reserved, u.reserved, 0, :actor, 'import', :import_id, :request_id, NULL, now()
            FROM upd u
        )
        SELECT c.line, c.sku, c.on_hand, c.reserved, c.new_on_hand
          FROM cur c WHERE c.new_on_hand < c.reserved OR c.new_on_hand = c.on_hand OR c.new_on_hand >
            2000000000"""
)


async def apply(
    session: AsyncSession,
    parsed: Parsed,
    import_id: uuid.UUID | None = None,
    *,
    timeout_ms: int = BULK_STATEMENT_TIMEOUT_MS,
) -> dict[str, Any]:
    """Apply the valid rows in the caller's transaction; returns the summary.

    Works on a copy: `with_retries` may run it again, and errors must not be counted twice."""
    parsed = Parsed(
        rows=list(parsed.rows),
        errors=list(parsed.errors),
        received=parsed.received,
        text_quantities=parsed.text_quantities,
    )
    _reject_duplicates(parsed)
    org_id = require_org_id()
    reference = str(import_id or uuid.uuid4())
    unchanged = 0
    if parsed.rows:
        async with long_statements(session, timeout_ms):
            conn = await session.connection()
            raw = (await conn.get_raw_connection()).driver_connection
            await session.execute(text(_RAW))
            await raw.copy_records_to_table(  # type: ignore[union-attr]
                "import_raw",
                records=[(r.line, r.sku, r.warehouse, r.quantity, r.mode) for r in parsed.rows],
                columns=["line", "sku", "wh", "qty", "mode"],
            )
            parsed.rows = []
            await session.execute(text(_STAGE), {"org": org_id})
            unknown = (await session.execute(_UNKNOWN)).all()
            for line, sku, wh, no_sku in unknown:
                if no_sku:
                    parsed.errors.append(
                        RowError(line, sku, "UNKNOWN_SKU", f"no SKU {sku!r} in this organization")
                    )
                else:
                    parsed.errors.append(
                        RowError(line, sku, "UNKNOWN_WAREHOUSE", f"no warehouse {wh!r} in this organization")
                    )
            if unknown:
                await session.execute(_DROP_UNKNOWN)
            await session.execute(text("ANALYZE import_stage"))
            params = {
                "org": org_id,
                "actor": current_actor().describe(),
                "import_id": reference,
                "request_id": current_request_id(),
            }
            expected_new = (
                await session.execute(text("SELECT count(*) FROM import_stage WHERE level_id IS NULL"))
            ).scalar_one()
            inserted, zero = (await session.execute(_INSERT_NEW, params)).one()
            unchanged += zero
            if inserted < expected_new:
                await session.execute(_RACED)
            await session.execute(_LOCK, params)
            result = await session.execute(_APPLY, params)
            for line, sku, on_hand, reserved, new_on_hand in result.all():
                if new_on_hand > 2_000_000_000:
                    parsed.errors.append(
                        RowError(line, sku, "NUMBER_OUT_OF_RANGE", "on_hand would exceed 2,000,000,000")
                    )
                elif new_on_hand < reserved:
                    parsed.errors.append(
                        RowError(
                            line,
                            sku,
                            "BELOW_RESERVED",
                            f"cannot set on_hand to {new_on_hand}: {reserved} are reserved"
                            f" (on_hand {on_hand})",
                        )
                    )
                else:
                    unchanged += 1
    parsed.errors.sort(key=lambda e: e.line)
    failed = len(parsed.errors)
    return {
        "import_id": reference,
        "received": parsed.received,
        "applied": parsed.received - failed - unchanged,
        "unchanged": unchanged,
        "failed": failed,
        "errors": [e.as_dict() for e in parsed.errors],
    }
