"""Bulk imports as records: stock levels (`bulk.py`) and the catalogue (`sku_bulk.py`), run in their
request when small, or stored and run by a job when big, with progress, a summary and the rejected lines.

The rule for a job import is all-or-nothing: the whole file is applied in one transaction that also
marks the import `done` with its summary, so a crash, a timeout or a failed statement anywhere leaves
no row of it applied, and the next attempt starts from the stored file again. Progress
(`processed_rows`) is written in short transactions of its own beside that one: it is only a gauge.

These functions are what the API routes, the worker's job and the dashboard call.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from arq.connections import ArqRedis
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.inventory import bulk, sku_bulk, stock
from rappit.inventory.models import Import
from rappit.platform.db import get_or_404, long_statements, provide_session, utcnow
from rappit.platform.errors import BadRequest, DomainError, UnsupportedMediaType
from rappit.platform.http import is_json_media_type
from rappit.platform.logging import current_request_id
from rappit.tenancy.context import current_actor

log = structlog.get_logger("rappit.inventory.imports")
JOB = "run_import"
"""The arq job that runs one stored import: (org id, import id), job id `import:{import id}`."""
KINDS = ("stock", "skus")
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
PROGRESS_EVERY_SECONDS = 0.5

Parsed = bulk.Parsed | sku_bulk.ParsedSkus


@dataclass(frozen=True, slots=True)
class Upload:
    """A bulk upload as received: the file's bytes, how to read them, the default stock mode."""

    kind: str
    content_type: str
    """text/csv or application/json (a multipart upload's file is CSV)."""
    body: bytes
    mode: str | None = None


def media_type(content_type: str) -> str:
    """text/csv | application/json, or 415 for anything else (multipart is unpacked by the route)."""
    if content_type in CSV_TYPES:
        return "text/csv"
    if is_json_media_type(content_type):
        return "application/json"
    raise UnsupportedMediaType(
        "send text/csv, application/json or multipart/form-data", details={"content_type": content_type}
    )


def _new(kind: str) -> Parsed:
    return sku_bulk.ParsedSkus() if kind == "skus" else bulk.Parsed()


def parse(upload: Upload, into: Parsed | None = None) -> Parsed:
    """Read and validate every row (400 for a file that cannot be read at all). `into` (empty) is
    filled as it goes: another thread may read its `received` count as progress."""
    into = into if into is not None else _new(upload.kind)
    if upload.content_type == "application/json":
        try:
            items = msgspec.json.decode(upload.body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="MALFORMED_JSON") from exc
        if isinstance(into, sku_bulk.ParsedSkus):
            return sku_bulk.parse_json(items, into)
        return bulk.parse_json(items, upload.mode or "set", into)
    if isinstance(into, sku_bulk.ParsedSkus):
        return sku_bulk.parse_csv(upload.body, into, copy=True)
    return bulk.parse_csv(upload.body, upload.mode or "set", into, copy=True)


async def apply(
    session: AsyncSession,
    kind: str,
    parsed: Parsed,
    import_id: uuid.UUID,
    *,
    timeout_ms: int = bulk.BULK_STATEMENT_TIMEOUT_MS,
    seen: bulk.Seen | None = None,
) -> dict[str, Any]:
    """Apply the valid rows in the caller's transaction (retried on a deadlock or serialization
    failure); the ledger rows of a stock import name `import_id` as their reference. `timeout_ms`: the
    statement timeout of the big statements (a job passes its own deadline); `seen`: told the rows read
    so far where the database reads them (a copyable CSV file)."""
    if isinstance(parsed, sku_bulk.ParsedSkus):
        skus = parsed
        return await stock.with_retries(
            session, lambda: sku_bulk.apply(session, skus, import_id, timeout_ms=timeout_ms, seen=seen)
        )
    levels = parsed
    return await stock.with_retries(
        session, lambda: bulk.apply(session, levels, import_id, timeout_ms=timeout_ms, seen=seen)
    )


def runs_as_job(upload: Upload, threshold_bytes: int) -> bool:
    """Whether an upload is big enough to be stored and run by a job (IMPORT_JOB_THRESHOLD_BYTES):
    the one rule the API and the dashboard both follow."""
    return len(upload.body) > threshold_bytes


async def run_now(
    session: AsyncSession, upload: Upload, parsed: Parsed, *, import_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """A small import, in the request's transaction: applied, and recorded as a done import (so its
    rejected lines can be fetched later like a job's). `import_id`: the record's id, when the caller
    wants to point at it (the dashboard redirects to it)."""
    import_id = import_id or uuid.uuid4()
    summary = await apply(session, upload.kind, parsed, import_id)
    now = utcnow()
    session.add(
        Import(
            id=import_id,
            kind=upload.kind,
            status="done",
            content_type=upload.content_type,
            mode=upload.mode,
            body=None,
            size_bytes=len(upload.body),
            total_rows=summary["received"],
            processed_rows=summary["received"],
            summary=summary,
            attempts=1,
            actor=current_actor().describe(),
            request_id=current_request_id(),
            started_at=now,
            finished_at=now,
        )
    )
    await session.flush()
    return summary


def _estimate_rows(upload: Upload) -> int:
    """Lines after the header (CSV) or a rough item count (JSON): the gauge's total until the file is read."""
    if upload.content_type == "application/json":
        return max(upload.body.count(b"{"), 0)
    lines = upload.body.count(b"\n") + (0 if upload.body.endswith(b"\n") else 1)
    return max(lines - 1, 0)


async def submit(session: AsyncSession, upload: Upload) -> dict[str, Any]:
    """A big import: store the file (committed with the request, before the 202) for the job."""
    row = Import(
        id=uuid.uuid4(),
        kind=upload.kind,
        status="queued",
        content_type=upload.content_type,
        mode=upload.mode,
        body=upload.body,
        size_bytes=len(upload.body),
        total_rows=_estimate_rows(upload),
        processed_rows=0,
        attempts=0,
        actor=current_actor().describe(),
        request_id=current_request_id(),
    )
    session.add(row)
    # Writing a file of tens of MiB is a deliberately long statement, like the import itself: not
    # held to the request's DB_STATEMENT_TIMEOUT_MS (it once ran past it under load, a 503).
    async with long_statements(session, bulk.BULK_STATEMENT_TIMEOUT_MS):
        await session.flush()
    return {"import_id": str(row.id), "status": "queued", "kind": upload.kind, "total_rows": row.total_rows}


async def get(session: AsyncSession, import_id: uuid.UUID) -> Import:
    return await get_or_404(session, Import, import_id, "import")


def view(row: Import) -> dict[str, Any]:
    """What GET /api/v1/imports/{id} answers (and the dashboard shows)."""
    summary = row.summary
    return {
        "id": str(row.id),
        "kind": row.kind,
        "status": row.status,
        "total_rows": row.total_rows,
        "processed_rows": row.processed_rows,
        "size_bytes": row.size_bytes,
        "attempts": row.attempts,
        "error": row.last_error if row.status == "failed" else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "summary": summary,
        "rejected": summary["errors"] if summary else [],
    }


async def list_recent(session: AsyncSession, *, limit: int, offset: int) -> list[Import]:
    rows = await session.execute(
        select(Import).order_by(Import.created_at.desc(), Import.id).limit(limit).offset(offset)
    )
    return list(rows.scalars())


def rejected_csv(row: Import) -> str:
    """The rejected lines as CSV (line, sku, field, code, message), for the merchant to fix and resend."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "sku", "field", "code", "message"])
    for e in (row.summary or {}).get("errors", []):
        writer.writerow([e["line"], e["sku"], e.get("field") or "", e["code"], e["message"]])
    return out.getvalue()


# ---------------------------------------------------------------- the job's side


async def enqueue(redis: ArqRedis, org_id: uuid.UUID, import_id: uuid.UUID) -> bool:
    """Queue the import's job; False if one with its id is queued or running already (arq dedup)."""
    return (
        await redis.enqueue_job(JOB, str(org_id), str(import_id), _job_id=f"import:{import_id}") is not None
    )


async def try_enqueue(redis: ArqRedis, org_id: uuid.UUID, import_id: uuid.UUID) -> None:
    """Best effort, after the row is committed: if Redis is down the sweeper enqueues it later."""
    try:
        await enqueue(redis, org_id, import_id)
    except Exception as exc:  # the stored import is the truth; the sweeper picks it up
        log.warning("import.enqueue_failed", import_id=str(import_id), error=type(exc).__name__)


async def start_attempt(session: AsyncSession, import_id: uuid.UUID) -> Import | None:
    """Count an attempt before any work, in its own transaction; None when gone or finished."""
    row = (
        await session.execute(select(Import).where(Import.id == import_id).with_for_update())
    ).scalar_one_or_none()
    if row is None or row.status in ("done", "failed"):
        return None
    row.attempts += 1
    row.status = "running"
    row.started_at = row.started_at or utcnow()
    return row


async def record_failure(
    session: AsyncSession, import_id: uuid.UUID, error: str, *, final: bool
) -> Import | None:
    row = (
        await session.execute(select(Import).where(Import.id == import_id).with_for_update())
    ).scalar_one_or_none()
    if row is None or row.status in ("done", "failed"):
        return None
    row.last_error = error[:4000]
    if final:
        row.status, row.finished_at = "failed", utcnow()
    return row


async def reopen(session: AsyncSession, import_id: uuid.UUID) -> None:
    """An operator's retry of a failed import: queued again with a fresh attempt budget (its file is
    still stored: only a done import drops it)."""
    await session.execute(
        update(Import)
        .where(Import.id == import_id, Import.status == "failed")
        .values(status="queued", attempts=0, last_error=None, finished_at=None, processed_rows=0)
    )


Progress = Callable[[int], Awaitable[None]]


async def run_stored(
    session: AsyncSession,
    import_id: uuid.UUID,
    progress: Progress | None = None,
    *,
    timeout_ms: int = bulk.BULK_STATEMENT_TIMEOUT_MS,
) -> dict[str, Any] | None:
    """Apply a stored import whole, in the caller's transaction, and mark it done there: commit that
    transaction and all of it is in; roll it back (or die) and none of it is. None when another run
    holds it or it is already done. A file that cannot be read ends the import as failed (no retry can
    help): raises `BadRequest`, which the job records."""
    locked = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"import:{import_id}"}
        )
    ).scalar_one()
    if not locked:
        return None
    row = (await session.execute(select(Import).where(Import.id == import_id))).scalar_one_or_none()
    if row is None or row.status in ("done", "failed"):
        return None
    body = (await session.execute(select(Import.body).where(Import.id == import_id))).scalar_one()
    upload = Upload(kind=row.kind, content_type=row.content_type, body=body or b"", mode=row.mode)
    gauge = _Gauge(_new(upload.kind))
    ticker = asyncio.ensure_future(gauge.tick(progress)) if progress is not None else None
    try:
        # Parsed in a thread (the event loop stays free to write the gauge); a copyable CSV file is
        # only looked at here, its rows read by the database in `apply`.
        parsed = await asyncio.to_thread(parse, upload, gauge.parsed)
        summary = await apply(session, upload.kind, parsed, import_id, timeout_ms=timeout_ms, seen=gauge.see)
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    if progress is not None:
        await progress(summary["received"])  # every row read and checked (the gauge's last word)
    await session.execute(
        update(Import)
        .where(Import.id == import_id)
        .values(
            status="done",
            summary=summary,
            total_rows=summary["received"],
            processed_rows=summary["received"],
            finished_at=utcnow(),
            last_error=None,
            body=None,  # applied: the file's rejected lines live on in the summary
        )
    )
    return summary


class _Gauge:
    """Rows read so far, from whichever reads them (Python's parser in its thread, or COPY), written
    as progress every PROGRESS_EVERY_SECONDS by `tick` (its own short transactions)."""

    def __init__(self, parsed: Parsed) -> None:
        self.parsed = parsed
        self.copied = 0

    def see(self, rows: int) -> None:
        self.copied = rows

    @property
    def rows(self) -> int:
        return max(self.parsed.received, self.copied)

    async def tick(self, progress: Progress) -> None:
        written = -1
        while True:
            await asyncio.sleep(PROGRESS_EVERY_SECONDS)
            if self.rows != written:
                written = self.rows
                await progress(written)


async def write_progress(
    sessionmaker: async_sessionmaker[AsyncSession], import_id: uuid.UUID, processed: int
) -> None:
    """The gauge, in a transaction of its own (the import's own stays open until it is all applied)."""
    async with provide_session(sessionmaker) as session:
        await session.execute(
            update(Import)
            .where(Import.id == import_id, Import.status == "running")
            .values(processed_rows=processed)
        )


async def unfinished(
    system_session: AsyncSession, *, older_than: timedelta
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(org id, import id) of imports still queued or running after a grace period, across orgs (the
    sweeper's read, on a system session)."""
    rows = await system_session.execute(
        select(Import.org_id, Import.id)
        .where(Import.status.in_(("queued", "running")), Import.created_at < utcnow() - older_than)
        .order_by(Import.created_at)
        .limit(500)
    )
    return [(org, iid) for org, iid in rows.all()]


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "JOB",
    "KINDS",
    "Upload",
    "apply",
    "enqueue",
    "get",
    "list_recent",
    "media_type",
    "parse",
    "rejected_csv",
    "run_now",
    "run_stored",
    "runs_as_job",
    "submit",
    "try_enqueue",
    "unfinished",
    "view",
]
