"""Bulk stock import: parse and validate every row, COPY the valid ones into a staging table, then
apply them with a handful of set-based statements (with their ledger rows) in the caller's transaction.

Row problems become entries in the summary; a file that is not parseable CSV is a 400 naming the line.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.stock import LEDGER_COLUMNS, MAX_QUANTITY
from rappit.platform.db import long_statements
from rappit.platform.errors import BadRequest, sqlstate_of
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


@dataclass(frozen=True, slots=True)
class CopyableCsv:
    """A CSV file plain enough for PostgreSQL's own CSV reader to see exactly the records Python's does
    (see `copyable`): its rows are COPYed as they are and checked in SQL, no per-row Python object."""

    body: bytes
    """The whole file as uploaded (the slow path reads it again if COPY refuses it)."""
    start: int
    """Where the first row begins (after the header line)."""
    columns: tuple[str, ...]
    """The header's column names, in file order."""
    default_mode: str = "set"


@dataclass(slots=True)
class Parsed:
    rows: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    received: int = 0
    text_quantities: bool = True
    csv: CopyableCsv | None = None
    """Set instead of `rows` when the file goes to the database as it is (`received` is then counted
    there)."""


_BOM = b"\xef\xbb\xbf"


def copyable(body: bytes) -> int | None:
    """Where the rows start, if PostgreSQL's CSV reader gives exactly the records, line numbers and
    field values that Python's `csv` module gives for this file: no quote (so no quoted comma or newline
    and no empty-string-versus-NULL question), no NUL, no backslash-dot (COPY's end-of-data marker), no
    blank line (Python skips those, COPY would count them), and one kind of line ending. Anything else
    returns None and takes the Python path. A record with the wrong number of fields is refused by COPY,
    and the Python path then names its line."""
    start = len(_BOM) if body.startswith(_BOM) else 0
    end = body.find(b"\n", start)
    if end < 0 or b'"' in body or b"\x00" in body or b"\\." in body:
        return None
    cr = body.count(b"\r")
    if cr and not (cr == body.count(b"\r\n") == body.count(b"\n")):
        return None
    rows = end + 1
    if body.startswith((b"\n", b"\r\n"), rows) or b"\n\n" in body or b"\n\r\n" in body:
        return None
    if max(map(len, body.split(b"\n"))) > csv.field_size_limit():
        return None  # Python's reader refuses a field this long (a 400); COPY would take it
    return rows


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


def _columns(header: list[str] | None) -> list[str]:
    """The header's column names, or the 400 naming line 1."""
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
    return columns


def parse_csv(body: bytes, default_mode: str, into: Parsed | None = None, *, copy: bool = False) -> Parsed:
    """Read and check every row in Python; or, with `copy` and a file `copyable` says PostgreSQL reads
    the same way, only its header here, the rows going to the database as they are (`apply`)."""
    default_mode = check_mode(default_mode)
    content = decode_csv(body)
    parsed = into if into is not None else Parsed()
    start = copyable(body) if copy else None
    if start is not None:
        header = next(csv.reader([content.split("\n", 1)[0].rstrip("\r")]), None)
        parsed.csv = CopyableCsv(body, start, tuple(_columns(header)), default_mode)
        return parsed
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        columns = _columns(next(reader, None))
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


BULK_STATEMENT_TIMEOUT_MS = 120_000
"""An import is the one deliberately long write: it gets this instead of DB_STATEMENT_TIMEOUT_MS."""

COPY_CHUNK = 1 << 20
_COPY_REFUSED = ("22",)  # data exceptions: a record COPY cannot read (wrong field count, bad encoding)

_RAW = """CREATE TEMP TABLE import_raw (line int, sku text, wh text, qty int, mode text) ON COMMIT DROP"""

# A copyable CSV file's rows as they are: every field text (an empty one NULL), numbered from line 2 in
# file order (COPY reads the rows in order, and a copyable file has one record per line).
_CSV = """CREATE TEMP TABLE import_csv (
    line int GENERATED ALWAYS AS IDENTITY (START WITH 2 CACHE 10000),
    sku text, quantity text, warehouse_code text, mode text
) ON COMMIT DROP"""

# A row SQL can accept without Python's rules: sku and warehouse begin and end with a printable ASCII
# character that is not a space (so strip() would not change them; no NUL can be in a copyable file),
# the quantity 1-9 ASCII digits (below MAX_QUANTITY), the mode empty (the file's default) or exactly set
# or add. Every other row is read back and checked by `_validate`, the same function the Python path
# uses: SQL only ever accepts rows Python accepts, with the same values.
_CLEAN = """coalesce(c.sku IS NOT NULL AND c.warehouse_code IS NOT NULL AND c.quantity IS NOT NULL
    AND ascii(c.sku) BETWEEN 33 AND 126 AND ascii(right(c.sku, 1)) BETWEEN 33 AND 126
    AND ascii(c.warehouse_code) BETWEEN 33 AND 126 AND ascii(right(c.warehouse_code, 1)) BETWEEN 33 AND 126
    AND c.quantity ~ '^[0-9]{1,9}$' AND (c.mode IS NULL OR c.mode IN ('set', 'add')), false)"""

_CLEAN_ROWS = f"""(SELECT c.line, c.sku, c.warehouse_code AS wh, c.quantity::int AS qty,
        coalesce(c.mode, CAST(:mode AS text)) AS mode
   FROM import_csv c WHERE {_CLEAN}) r"""

_DOUBTFUL = text(
    f"SELECT c.line, c.sku, c.quantity, c.warehouse_code, c.mode FROM import_csv c WHERE NOT {_CLEAN} "
    "ORDER BY c.line"
)

# Codes resolved to ids, and each row's existing level found, by joins on the unique indexes: one pass
# in the database instead of shipping every code and id through Python.
_JOINS = """SELECT r.line, r.sku, r.wh, r.qty, r.mode, s.id AS sku_id, w.id AS wh_id, l.id AS level_id
      FROM {source}
      LEFT JOIN skus s ON s.org_id = :org AND s.code = r.sku
      LEFT JOIN warehouses w ON w.org_id = :org AND w.code = r.wh
      LEFT JOIN inventory_levels l ON l.org_id = :org AND l.sku_id = s.id AND l.warehouse_id = w.id"""
_STAGE = "CREATE TEMP TABLE import_stage ON COMMIT DROP AS " + _JOINS
_STAGE_MORE = text("INSERT INTO import_stage " + _JOINS.format(source="import_raw r"))

# A (sku, warehouse) twice in one file is ambiguous: every occurrence fails, none applies.
_DUPLICATES = text(
    """WITH d AS (
          SELECT sku, wh, array_agg(line ORDER BY line) AS lines
            FROM import_stage GROUP BY sku, wh HAVING count(*) > 1
        ), gone AS (
          DELETE FROM import_stage s USING d WHERE s.sku = d.sku AND s.wh = d.wh
          RETURNING s.line, s.sku, s.wh, d.lines
        )
        SELECT line, sku, wh, lines FROM gone"""
)

_UNKNOWN = text(
    """DELETE FROM import_stage WHERE sku_id IS NULL OR wh_id IS NULL
       RETURNING line, sku, wh, sku_id IS NULL"""
)
_COUNTS = text("SELECT count(*) FILTER (WHERE level_id IS NULL), count(level_id) FROM import_stage")

# New levels are inserted with their final quantity (and a ledger row from zero) instead of being
# created empty and then updated: half the writes, and no re-check of foreign keys on the update.
INSERT_NEW_LEVELS = f"""WITH ins AS (
          INSERT INTO inventory_levels (id, org_id, sku_id, warehouse_id, on_hand, reserved, updated_at)
          SELECT {{new_id}}, :org, s.sku_id, s.wh_id, s.qty, 0, now()
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

Seen = Callable[[int], None]
"""Told how many rows have been read so far (a job's progress gauge)."""


async def _chunks(data: memoryview, seen: Seen | None) -> AsyncIterator[bytes]:
    """The file in pieces for COPY, counting the lines sent (the gauge moves while COPY runs)."""
    lines = 0
    for at in range(0, len(data), COPY_CHUNK):
        chunk = bytes(data[at : at + COPY_CHUNK])
        if seen is not None:
            lines += chunk.count(b"\n")
            seen(lines)
        yield chunk


async def copy_file(raw: Any, table: str, file: CopyableCsv, seen: Seen | None) -> int:
    """COPY a copyable file's rows into `table` (its columns named as the header names them); the
    number of rows. Raises what COPY raises (see `refused`)."""
    status = await raw.copy_to_table(
        table,
        source=_chunks(memoryview(file.body)[file.start :], seen),
        columns=list(file.columns),
        format="csv",
    )
    return int(str(status).split()[-1])  # "COPY n"


def refused(exc: BaseException) -> bool:
    """COPY could not read a record (wrong field count, bad encoding): a data exception, class 22. The
    Python path then reads the file and names the line (asyncpg's own error: COPY runs on the driver
    connection, not through SQLAlchemy)."""
    return (getattr(exc, "sqlstate", None) or sqlstate_of(exc) or "")[:2] in _COPY_REFUSED


async def copy_or_refused(
    session: AsyncSession, raw: Any, create: str, table: str, file: CopyableCsv, seen: Seen | None
) -> int | None:
    """Create `table` (`create`) and COPY a copyable file into it, in a savepoint: the rows copied, or
    None (the savepoint rolled back, nothing created) when COPY refuses the file."""
    try:
        async with session.begin_nested():
            await session.execute(text(create))
            return await copy_file(raw, table, file, seen)
    except Exception as exc:
        if refused(exc):
            return None
        raise


async def _stage_copied(
    session: AsyncSession, raw: Any, parsed: Parsed, file: CopyableCsv, org_id: uuid.UUID, seen: Seen | None
) -> bool:
    """COPY a copyable file into `import_csv`, stage its clean rows with SQL, check the others with
    `_validate`. False (nothing staged, the savepoint rolled back) when COPY refuses the file."""
    copied = await copy_or_refused(session, raw, _CSV, "import_csv", file, seen)
    if copied is None:
        return False
    await session.execute(text("ANALYZE import_csv"))  # a plan for 1M rows, not for the 1 it would guess
    await session.execute(text(_STAGE.format(source=_CLEAN_ROWS)), {"org": org_id, "mode": file.default_mode})
    doubtful = (await session.execute(_DOUBTFUL)).all()
    checked = Parsed(text_quantities=True)
    for line, sku, quantity, warehouse, mode in doubtful:
        # An empty field is NULL in COPY and "" in Python's reader.
        _validate(checked, line, sku or "", quantity or "", warehouse or "", mode, file.default_mode)
    parsed.errors.extend(checked.errors)
    if checked.rows:
        await session.execute(text(_RAW))
        await raw.copy_records_to_table(
            "import_raw",
            records=[(r.line, r.sku, r.warehouse, r.quantity, r.mode) for r in checked.rows],
            columns=["line", "sku", "wh", "qty", "mode"],
        )
        await session.execute(_STAGE_MORE, {"org": org_id})
    parsed.received += copied
    if seen is not None:
        seen(parsed.received)
    return True


FRESH_PLANS = text("DISCARD PLANS")
"""Run before a bulk import's inserts. Every row inserted is checked by its foreign keys' triggers, whose
query plans PostgreSQL caches per connection (generic after five uses). A pooled connection that
first checked a key when the referenced table was tiny keeps a sequential-scan plan, and then scans the
whole table once per row: 100,000 rows against a catalogue grown meanwhile ran past the 120 s
statement timeout (the flaky `test_one_hundred_thousand_rows_apply_correctly`, CPU-bound, no lock
wait). Discarding the connection's cached plans makes those checks plan again on the tables as they
are now. It is not DISCARD ALL: prepared statements and session state stay."""

BULK_WORK_MEM = text("SET LOCAL work_mem = '64MB'")
"""For the import's transaction only: its sorts, hashes and CTEs of a million rows stay in memory
instead of spilling to temporary files (the default is 4 MB)."""


BULK_NO_NESTLOOP = text("SET LOCAL enable_nestloop = off")
"""For the import's transaction only: every join in it is set-based (staged rows against levels, SKUs,
warehouses), so a nested loop is never the right plan, yet the planner picks one when the org's rows
are estimated from statistics taken before this org's last import (the org_id's share of a table
that many orgs use, a few rows, when an import just added 20,000): the UPDATE of existing levels
then compared every level with every staged row, and in the full test suite the big-import test's
second and third imports ran for minutes instead of seconds. Foreign-key checks (single-table
look-ups) are unaffected."""


async def prepare(session: AsyncSession) -> str:
    """What every bulk import runs first, in its transaction (see FRESH_PLANS, BULK_WORK_MEM and
    BULK_NO_NESTLOOP). Returns the SQL for a new row id (see `new_id`)."""
    await session.execute(FRESH_PLANS)
    await session.execute(BULK_WORK_MEM)
    await session.execute(BULK_NO_NESTLOOP)
    version = (await session.execute(text("SELECT current_setting('server_version_num')::int"))).scalar_one()
    return new_id(int(version))


def new_id(server_version_num: int) -> str:
    """Ids for a million new rows: time-ordered (`uuidv7()`, PostgreSQL 18+) where the server has it,
    so that rows inserted in order append to their primary-key index and the foreign-key checks that
    follow them read it in order, instead of touching a random page of a big index per row (the
    import's I/O once its indexes outgrow shared_buffers); random (`gen_random_uuid()`) before 18."""
    return "uuidv7()" if server_version_num >= 180000 else "gen_random_uuid()"


async def apply(
    session: AsyncSession,
    parsed: Parsed,
    import_id: uuid.UUID | None = None,
    *,
    timeout_ms: int = BULK_STATEMENT_TIMEOUT_MS,
    seen: Seen | None = None,
) -> dict[str, Any]:
    """Apply the valid rows in the caller's transaction; returns the summary. `seen`: told the rows read
    so far, while a copyable file is COPYed.

    Works on a copy: `with_retries` may run it again, and errors must not be counted twice."""
    parsed = Parsed(
        rows=list(parsed.rows),
        errors=list(parsed.errors),
        received=parsed.received,
        text_quantities=parsed.text_quantities,
        csv=parsed.csv,
    )
    org_id = require_org_id()
    reference = str(import_id or uuid.uuid4())
    unchanged = 0
    async with long_statements(session, timeout_ms):
        id_sql = await prepare(session)
        conn = await session.connection()
        raw = (await conn.get_raw_connection()).driver_connection
        staged = False
        if parsed.csv is not None:
            staged = await _stage_copied(session, raw, parsed, parsed.csv, org_id, seen)
            if not staged:  # COPY refused a record: Python reads the file and names the line (a 400)
                file, parsed.csv = parsed.csv, None
                parse_csv(file.body, file.default_mode, parsed)
        if not staged and parsed.rows:
            await session.execute(text(_RAW))
            await raw.copy_records_to_table(  # type: ignore[union-attr]
                "import_raw",
                records=[(r.line, r.sku, r.warehouse, r.quantity, r.mode) for r in parsed.rows],
                columns=["line", "sku", "wh", "qty", "mode"],
            )
            parsed.rows = []
            await session.execute(text(_STAGE.format(source="import_raw r")), {"org": org_id})
            staged = True
        if staged:
            unchanged = await _apply_stage(session, parsed, org_id, reference, id_sql)
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


async def _apply_stage(
    session: AsyncSession, parsed: Parsed, org_id: uuid.UUID, reference: str, id_sql: str
) -> int:
    """From `import_stage` (every row that passed the checks of one row): refuse duplicates and unknown
    codes, insert the new levels, update the existing ones, each with its ledger row. Returns how many
    rows changed nothing."""
    unchanged = 0
    for line, sku, wh, lines in (await session.execute(_DUPLICATES)).all():
        others = ", ".join(str(n) for n in lines if n != line)
        parsed.errors.append(
            RowError(line, sku, "DUPLICATE_ROW", f"{sku} in {wh} also appears on line {others}")
        )
    for line, sku, wh, no_sku in (await session.execute(_UNKNOWN)).all():
        if no_sku:
            parsed.errors.append(RowError(line, sku, "UNKNOWN_SKU", f"no SKU {sku!r} in this organization"))
        else:
            parsed.errors.append(
                RowError(line, sku, "UNKNOWN_WAREHOUSE", f"no warehouse {wh!r} in this organization")
            )
    await session.execute(text("ANALYZE import_stage"))  # fresh statistics for the joins below
    expected_new, existing = (await session.execute(_COUNTS)).one()
    params = {
        "org": org_id,
        "actor": current_actor().describe(),
        "import_id": reference,
        "request_id": current_request_id(),
    }
    if expected_new:
        inserted, zero = (await session.execute(text(INSERT_NEW_LEVELS.format(new_id=id_sql)), params)).one()
        unchanged += zero
        if inserted < expected_new:
            await session.execute(_RACED)
    if not existing:
        return unchanged  # nothing to lock or update: two statements fewer
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
                    f"cannot set on_hand to {new_on_hand}: {reserved} are reserved (on_hand {on_hand})",
                )
            )
        else:
            unchanged += 1
    return unchanged
