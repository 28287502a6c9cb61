"""Bulk catalogue import (`POST /api/v1/skus/bulk`): upsert SKUs by code, with the same rules as a
single SKU create, one error per bad field naming its line, and the stock import's summary shape.

Columns: `code` (required), `name`, `reorder_point`, `hs_code`, `country_of_origin`,
`customs_value_minor` + `customs_currency` (both or neither), `weight_grams`. A column left out of the
file (a key left out of a JSON object) keeps an existing SKU's value and gives a new one the default;
an empty cell (JSON null) clears an optional field. Valid rows are COPYed into a staging table and
applied with two set-based statements: insert the new codes, update the changed ones.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.inventory.bulk import (
    BULK_STATEMENT_TIMEOUT_MS,
    CopyableCsv,
    RowError,
    Seen,
    copy_or_refused,
    copyable,
    decode_csv,
    malformed,
    prepare,
)
from rappit.platform.db import long_statements
from rappit.platform.errors import BadRequest
from rappit.tenancy.context import require_org_id

# The same rules as SkuIn (schemas.py) and the database CHECKs on skus.
_CODE = re.compile(r"^[^/\x00-\x1f\x7f-\x9f\s](?:[^/\x00-\x1f\x7f-\x9f]*[^/\x00-\x1f\x7f-\x9f\s])?$")
_HS = re.compile(r"^[0-9]{6,10}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_DIGITS = re.compile(r"^[0-9]{1,19}$")
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_WEIGHT = 10_000_000

FIELDS = (
    "name",
    "reorder_point",
    "hs_code",
    "country_of_origin",
    "customs_value_minor",
    "customs_currency",
    "weight_grams",
)
"""The optional columns, in the order of the `given` bit mask (bit i = FIELDS[i] given)."""
COLUMNS = ("code", *FIELDS)
BIT = {name: 1 << i for i, name in enumerate(FIELDS)}


def _text(value: Any, *, pattern: re.Pattern[str] | None, max_length: int, what: str) -> tuple[Any, str]:
    """(value, "") or (None, error message). Empty text is None (cleared)."""
    if value is None:
        return None, ""
    if not isinstance(value, str):
        return None, f"{what} must be text, got {value!r}"
    value = value.strip()
    if not value:
        return None, ""
    if len(value) > max_length or (pattern is not None and not pattern.match(value)):
        return None, f"{what} {value!r} is not valid"
    return value, ""


def _int(value: Any, *, lo: int, hi: int, from_text: bool, what: str) -> tuple[Any, str]:
    if value is None or (isinstance(value, str) and from_text and not value.strip()):
        return None, ""
    if isinstance(value, str) and from_text and _DIGITS.match(value.strip()):
        number: int | None = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = None
    if number is None or not lo <= number <= hi:
        return None, f"{what} must be a whole number from {lo} to {hi}, got {value!r}"
    return number, ""


Check = Callable[[Any, bool], tuple[Any, str]]
CHECKS: dict[str, tuple[str, Check]] = {
    "name": ("INVALID_NAME", lambda v, t: _text(v, pattern=None, max_length=300, what="name")),
    "reorder_point": (
        "INVALID_REORDER_POINT",
        lambda v, t: _int(v, lo=0, hi=INT32_MAX, from_text=t, what="reorder_point"),
    ),
    "hs_code": (
        "INVALID_HS_CODE",
        lambda v, t: _text(v, pattern=_HS, max_length=10, what="hs_code (6 to 10 digits)"),
    ),
    "country_of_origin": (
        "INVALID_COUNTRY_OF_ORIGIN",
        lambda v, t: _text(
            v, pattern=_COUNTRY, max_length=2, what="country_of_origin (ISO 3166 alpha-2, like DE)"
        ),
    ),
    "customs_value_minor": (
        "INVALID_CUSTOMS_VALUE",
        lambda v, t: _int(v, lo=1, hi=INT64_MAX, from_text=t, what="customs_value_minor"),
    ),
    "customs_currency": (
        "INVALID_CUSTOMS_CURRENCY",
        lambda v, t: _text(v, pattern=_CURRENCY, max_length=3, what="customs_currency (ISO 4217, like EUR)"),
    ),
    "weight_grams": (
        "INVALID_WEIGHT",
        lambda v, t: _int(v, lo=1, hi=MAX_WEIGHT, from_text=t, what="weight_grams"),
    ),
}


@dataclass(slots=True)
class SkuRow:
    line: int
    code: str
    given: int
    values: tuple[Any, ...]
    """One value per FIELDS entry (None where not given or cleared)."""


@dataclass(slots=True)
class ParsedSkus:
    rows: list[SkuRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    received: int = 0
    failed_lines: set[int] = field(default_factory=set)
    csv: CopyableCsv | None = None
    """Set instead of `rows` when the file goes to the database as it is (see `bulk.copyable`)."""


def _fail(parsed: ParsedSkus, line: int, code: str, error: str, message: str, column: str | None) -> None:
    parsed.failed_lines.add(line)
    parsed.errors.append(RowError(line, code, error, message, column))


def _row(parsed: ParsedSkus, line: int, item: dict[str, Any], from_text: bool) -> None:
    """Validate one row (every bad field is its own error); a clean row joins parsed.rows."""
    parsed.received += 1
    raw_code = item.get("code")
    code = raw_code.strip() if isinstance(raw_code, str) else ""
    bad = False
    if not code:
        _fail(parsed, line, "", "MISSING_FIELD", "missing code", "code")
        bad = True
    elif len(code) > 100 or not _CODE.match(code):
        shown = code.replace("\x00", "")
        _fail(
            parsed,
            line,
            shown,
            "INVALID_CODE",
            "code must be 1-100 characters without '/', control characters or outer spaces",
            "code",
        )
        bad = True
    given = 0
    values: list[Any] = []
    for name in FIELDS:
        if name not in item:
            values.append(None)
            continue
        given |= BIT[name]
        error_code, check = CHECKS[name]
        value, message = check(item[name], from_text)
        if message:
            _fail(parsed, line, code, error_code, message, name)
            bad = True
        values.append(value)
    value_given, currency_given = given & BIT["customs_value_minor"], given & BIT["customs_currency"]
    value, currency = values[4], values[5]
    if not bad and (bool(value_given) != bool(currency_given) or (value is None) != (currency is None)):
        _fail(
            parsed,
            line,
            code,
            "CUSTOMS_VALUE_NEEDS_CURRENCY",
            "customs_value_minor and customs_currency go together",
            "customs_currency" if value is not None else "customs_value_minor",
        )
        bad = True
    if not bad:
        if values[0] is None and given & BIT["name"]:
            values[0] = ""  # an empty name is the empty name, not unknown
        if values[1] is None and given & BIT["reorder_point"]:
            values[1] = 0
        parsed.rows.append(SkuRow(line, code, given, tuple(values)))


def _digits(value: str, max_length: int) -> bool:
    return 0 < len(value) <= max_length and value.isascii() and value.isdigit()


def _fast_row(columns: list[str]) -> Callable[[int, list[str]], SkuRow | None]:
    """The happy path for one CSV record, with cheap str tests instead of the general checks: a clean
    row comes back as a SkuRow; anything doubtful returns None, and `_row` then gives the errors. Every
    test here is at least as strict as the general one, so it never lets through what `_row` refuses."""
    at = {c: i for i, c in enumerate(columns)}
    code_at = at["code"]
    given = 0
    for name in FIELDS:
        if name in at:
            given |= BIT[name]
    n, rp, hs, co, cv, cc, wg = (at.get(name, -1) for name in FIELDS)
    code_ok = _CODE.match

    def fast(line: int, r: list[str]) -> SkuRow | None:
        code = r[code_at]
        if not code or len(code) > 100 or not code_ok(code):
            return None
        name = r[n].strip() if n >= 0 else None
        if name is not None and len(name) > 300:
            return None
        reorder: int | None = None
        if rp >= 0:
            v = r[rp].strip()
            if not v:
                reorder = 0
            elif _digits(v, 10) and int(v) <= INT32_MAX:
                reorder = int(v)
            else:
                return None
        hs_code = r[hs].strip() or None if hs >= 0 else None
        if hs_code is not None and not (6 <= len(hs_code) and _digits(hs_code, 10)):
            return None
        country = r[co].strip() or None if co >= 0 else None
        if country is not None and not (
            len(country) == 2 and country.isascii() and country.isupper() and country.isalpha()
        ):
            return None
        value: int | None = None
        currency: str | None = None
        if cv >= 0:
            v, currency = r[cv].strip(), r[cc].strip() or None
            if v:
                if not _digits(v, 18) or int(v) < 1 or currency is None:
                    return None
                value = int(v)
            if currency is not None and not (
                value is not None
                and len(currency) == 3
                and currency.isascii()
                and currency.isupper()
                and currency.isalpha()
            ):
                return None
        weight: int | None = None
        if wg >= 0:
            v = r[wg].strip()
            if v:
                if not _digits(v, 8) or not 1 <= int(v) <= MAX_WEIGHT:
                    return None
                weight = int(v)
        return SkuRow(
            line,
            code,
            given,
            ("" if n >= 0 and not name else name, reorder, hs_code, country, value, currency, weight),
        )

    return fast


def _columns(header: list[str] | None) -> list[str]:
    """The header's column names, or the 400 naming line 1."""
    if header is None:
        raise malformed(1, "the file is empty; expected a header row starting with code")
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in COLUMNS]
    if "code" not in columns or unknown or len(set(columns)) != len(columns):
        raise BadRequest(
            f"line 1: header must name code and any of {', '.join(FIELDS)}, each once; got "
            f"{','.join(header)}",
            code="MALFORMED_CSV",
            details={"line": 1, "unknown": unknown, "expected": list(COLUMNS)},
        )
    if ("customs_value_minor" in columns) != ("customs_currency" in columns):
        raise BadRequest(
            "line 1: customs_value_minor and customs_currency go together: name both columns or neither",
            code="MALFORMED_CSV",
            details={"line": 1},
        )
    return columns


def parse_csv(body: bytes, into: ParsedSkus | None = None, *, copy: bool = False) -> ParsedSkus:
    """Read and check every row in Python; or, with `copy` and a file `bulk.copyable` says PostgreSQL
    reads the same way, only its header here, the rows going to the database as they are (`apply`)."""
    content = decode_csv(body)
    parsed = into if into is not None else ParsedSkus()
    start = copyable(body) if copy else None
    if start is not None:
        header = next(csv.reader([content.split("\n", 1)[0].rstrip("\r")]), None)
        parsed.csv = CopyableCsv(body, start, tuple(_columns(header)))
        return parsed
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        columns = _columns(next(reader, None))
        width = len(columns)
        fast = _fast_row(columns)
        rows = parsed.rows
        for record in reader:
            if len(record) != width:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                raise malformed(reader.line_num, f"expected {width} fields, found {len(record)}")
            row = fast(reader.line_num, record)
            if row is not None:
                parsed.received += 1
                rows.append(row)
            else:  # something is off: the full check names every bad field
                _row(parsed, reader.line_num, dict(zip(columns, record, strict=True)), True)
    except csv.Error as exc:
        raise malformed(reader.line_num, str(exc)) from exc
    return parsed


def parse_json(items: Any, into: ParsedSkus | None = None) -> ParsedSkus:
    if not isinstance(items, list):
        raise BadRequest(
            f"expected a JSON array of objects with code and any of {', '.join(FIELDS)}",
            code="MALFORMED_JSON",
        )
    parsed = into if into is not None else ParsedSkus()
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            parsed.received += 1
            _fail(parsed, i, "", "MALFORMED_ROW", "each item must be an object", None)
            continue
        unknown = [k for k in item if k not in COLUMNS]
        if unknown:
            parsed.received += 1
            _fail(
                parsed,
                i,
                str(item.get("code", ""))[:100],
                "UNKNOWN_FIELD",
                f"unknown field(s) {', '.join(map(str, unknown))}; expected {', '.join(COLUMNS)}",
                str(unknown[0]),
            )
            continue
        _row(parsed, i, item, False)
    return parsed


STAGE = """CREATE TEMP TABLE sku_stage (
    line int, code text, given int, name text, reorder_point int, hs_code text, country_of_origin text,
    customs_value_minor bigint, customs_currency text, weight_grams int
) ON COMMIT DROP"""

# A copyable file's rows as they are: every field text (an empty one NULL), numbered from line 2.
_CSV = """CREATE TEMP TABLE sku_csv (
    line int GENERATED ALWAYS AS IDENTITY (START WITH 2 CACHE 10000),
    code text, name text, reorder_point text, hs_code text, country_of_origin text,
    customs_value_minor text, customs_currency text, weight_grams text
) ON COMMIT DROP"""

# What SQL accepts without Python's rules, each test at least as strict as `_row`'s (like `_fast_row`):
# a code of printable ASCII without '/' and without outer spaces; a name without outer whitespace (its
# ends printable ASCII); numbers as plain ASCII digits in range; the codes' exact formats. A column
# not in the file is NULL here and is not given. Every other row is read back and checked by `_row`.
_ENDS_PRINTABLE = "(ascii({c}) BETWEEN 33 AND 126 AND ascii(right({c}, 1)) BETWEEN 33 AND 126)"
_CLEAN = (
    "coalesce("
    + " AND ".join(
        [
            "c.code IS NOT NULL AND length(c.code) <= 100 AND c.code ~ '^[!-.0-~]([ -.0-~]*[!-.0-~])?$'",
            f"(c.name IS NULL OR (length(c.name) <= 300 AND {_ENDS_PRINTABLE.format(c='c.name')}))",
            "(c.reorder_point IS NULL OR c.reorder_point ~ '^[0-9]{1,9}$')",
            "(c.hs_code IS NULL OR c.hs_code ~ '^[0-9]{6,10}$')",
            "(c.country_of_origin IS NULL OR c.country_of_origin ~ '^[A-Z]{2}$')",
            "((c.customs_value_minor IS NULL AND c.customs_currency IS NULL) OR (c.customs_value_minor ~ "
            "'^[0-9]{1,18}$' AND c.customs_value_minor !~ '^0+$' AND c.customs_currency ~ '^[A-Z]{3}$'))",
            "(c.weight_grams IS NULL OR CASE WHEN c.weight_grams ~ '^[0-9]{1,8}$' "
            f"THEN c.weight_grams::int BETWEEN 1 AND {MAX_WEIGHT} ELSE false END)",
        ]
    )
    + ", false)"
)  # never NULL: a row is clean or doubtful, not neither


def _clean_rows(columns: tuple[str, ...]) -> str:
    """INSERT INTO sku_stage the clean rows, typed, with the file's `given` mask (as `_fast_row`: a
    given empty name is the empty name, a given empty reorder point 0, any other given empty cell
    cleared)."""
    given = 0
    for name in FIELDS:
        if name in columns:
            given |= BIT[name]
    name = "coalesce(c.name, '')" if "name" in columns else "NULL"
    reorder = "coalesce(c.reorder_point::int, 0)" if "reorder_point" in columns else "NULL"
    return f"""INSERT INTO sku_stage
        SELECT c.line, c.code, {given}, {name}, {reorder}, c.hs_code, c.country_of_origin,
               c.customs_value_minor::bigint, c.customs_currency, c.weight_grams::int
          FROM sku_csv c WHERE {_CLEAN}"""


def _doubtful(columns: tuple[str, ...]) -> str:
    return f"SELECT c.line, {', '.join(f'c.{c}' for c in columns)} FROM sku_csv c WHERE NOT {_CLEAN}"


_DUPLICATES = text(
    """WITH d AS (
          SELECT code, array_agg(line ORDER BY line) AS lines FROM sku_stage GROUP BY code HAVING count(*) > 1
        ), gone AS (
          DELETE FROM sku_stage s USING d WHERE s.code = d.code RETURNING s.line, s.code, d.lines
        )
        SELECT line, code, lines FROM gone"""
)


def _pick(column: str) -> str:
    return f"CASE WHEN st.given & {BIT[column]} <> 0 THEN st.{column} ELSE s.{column} END"


INSERT_NEW_SKUS = """INSERT INTO skus (id, org_id, code, name, reorder_point, hs_code, country_of_origin,
                            customs_value_minor, customs_currency, weight_grams, created_at)
          SELECT {new_id}, :org, st.code, coalesce(st.name, ''), coalesce(st.reorder_point, 0),
                 st.hs_code, st.country_of_origin, st.customs_value_minor, st.customs_currency,
                 st.weight_grams, now()
            FROM sku_stage st
           WHERE NOT EXISTS (SELECT 1 FROM skus s WHERE s.org_id = :org AND s.code = st.code)
          ON CONFLICT (org_id, code) DO NOTHING"""

_NEW = "(" + ", ".join(_pick(c) for c in FIELDS) + ")"
_OLD = "(" + ", ".join(f"s.{c}" for c in FIELDS) + ")"
_UPDATE = text(
    f"""UPDATE skus s SET {", ".join(f"{c} = {_pick(c)}" for c in FIELDS)}
          FROM sku_stage st
         WHERE s.org_id = :org AND s.code = st.code AND {_NEW} IS DISTINCT FROM {_OLD}"""
)


async def _stage_copied(
    session: AsyncSession, raw: Any, work: ParsedSkus, file: CopyableCsv, seen: Seen | None
) -> bool:
    """COPY a copyable file into `sku_csv`, stage its clean rows with SQL and check the others with
    `_row`. False (nothing staged, the savepoint rolled back) when COPY refuses the file."""
    copied = await copy_or_refused(session, raw, _CSV, "sku_csv", file, seen)
    if copied is None:
        return False
    await session.execute(text(STAGE))
    await session.execute(text(_clean_rows(file.columns)))
    checked = ParsedSkus()
    for line, *values in (await session.execute(text(_doubtful(file.columns)))).all():
        # An empty field is NULL in COPY and "" in Python's reader.
        item = {c: "" if v is None else v for c, v in zip(file.columns, values, strict=True)}
        _row(checked, line, item, True)
    work.errors.extend(checked.errors)
    work.failed_lines |= checked.failed_lines
    await _copy_rows(raw, checked.rows)
    work.received += copied
    if seen is not None:
        seen(work.received)
    return True


async def _copy_rows(raw: Any, rows: list[SkuRow]) -> None:
    if rows:
        await raw.copy_records_to_table(
            "sku_stage",
            records=[(r.line, r.code, r.given, *r.values) for r in rows],
            columns=["line", "code", "given", *FIELDS],
        )


async def apply(
    session: AsyncSession,
    parsed: ParsedSkus,
    import_id: uuid.UUID | None = None,
    *,
    timeout_ms: int = BULK_STATEMENT_TIMEOUT_MS,
    seen: Seen | None = None,
) -> dict[str, Any]:
    """Upsert the valid rows in the caller's transaction; returns the summary. Works on copies: the
    caller may retry it after a serialization failure. `seen`: told the rows read so far, while a
    copyable file is COPYed."""
    work = ParsedSkus(
        rows=list(parsed.rows),
        errors=list(parsed.errors),
        received=parsed.received,
        failed_lines=set(parsed.failed_lines),
        csv=parsed.csv,
    )
    org_id = require_org_id()
    created = updated = 0
    async with long_statements(session, timeout_ms):
        id_sql = await prepare(session)  # foreign-key checks planned on the tables as they are now
        raw = (await (await session.connection()).get_raw_connection()).driver_connection
        staged = False
        if work.csv is not None:
            staged = await _stage_copied(session, raw, work, work.csv, seen)
            if not staged:  # COPY refused a record: Python reads the file and names the line (a 400)
                file, work.csv = work.csv, None
                parse_csv(file.body, work)
        if not staged and work.rows:
            await session.execute(text(STAGE))
            await _copy_rows(raw, work.rows)
            work.rows = []
            staged = True
        if staged:
            # A code twice in one file is ambiguous: every occurrence fails, none applies.
            for line, code, lines in (await session.execute(_DUPLICATES)).all():
                others = ", ".join(str(n) for n in lines if n != line)
                _fail(work, line, code, "DUPLICATE_ROW", f"{code} also appears on line {others}", "code")
            await session.execute(text("ANALYZE sku_stage"))
            staged_rows = (await session.execute(text("SELECT count(*) FROM sku_stage"))).scalar_one()
            if staged_rows:
                insert = text(INSERT_NEW_SKUS.format(new_id=id_sql))
                created = int((await session.execute(insert, {"org": org_id})).rowcount)  # type: ignore[attr-defined]
            if created < staged_rows:
                # The SKUs just inserted join too, but equal their stage row, so they are not counted.
                updated = int((await session.execute(_UPDATE, {"org": org_id})).rowcount)  # type: ignore[attr-defined]
    work.errors.sort(key=lambda e: e.line)
    failed = len(work.failed_lines)
    return {
        "import_id": str(import_id or uuid.uuid4()),
        "received": work.received,
        "applied": created + updated,
        "created": created,
        "updated": updated,
        "unchanged": work.received - failed - created - updated,
        "failed": failed,
        "errors": [e.as_dict() for e in work.errors],
    }
