"""Import records the bulk-import page shows: one per upload, kept in Redis for a day under the org.

A record is `{"id", "kind", "status", "file_name", "progress", "summary", "columns", "rejected"}`:
`status` is `running` or `done`; `progress` is `{"done", "total"}` while running; `summary` has the
shape every bulk import answers (`received`, `applied`, `unchanged`, `failed`, `errors`); `rejected`
holds each rejected line's original fields so they can be downloaded and fixed. The stock import runs
in the request and writes a `done` record at once; an import run as a job (a big catalogue file)
writes `running` records with progress as it goes, and the page polls them until `done`."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from redis.asyncio import Redis

KEEP_SECONDS = 24 * 3600


def _key(org_id: uuid.UUID, import_id: str) -> str:
    return f"rappit:dashboard:import:{org_id}:{import_id}"


async def save(redis: Redis, org_id: uuid.UUID, record: dict[str, Any]) -> None:
    await redis.set(_key(org_id, record["id"]), json.dumps(record, default=str), ex=KEEP_SECONDS)


async def load(redis: Redis, org_id: uuid.UUID, import_id: str) -> dict[str, Any] | None:
    raw = await redis.get(_key(org_id, import_id))
    return json.loads(raw) if raw else None


def rejected_rows(body: bytes, errors: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Each rejected line's original fields beside its reason (the file has already parsed as CSV)."""
    reader = csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""))
    header = next(reader, [])
    by_line: dict[int, list[str]] = {}
    for record in reader:
        by_line[reader.line_num] = record
    rows = [
        {
            "line": e["line"],
            "code": e["code"],
            "message": e["message"],
            "fields": by_line.get(int(e["line"]), []),
        }
        for e in errors
    ]
    return header, rows


def rejected_csv(record: dict[str, Any]) -> str:
    """The rejected lines as CSV: line, error code and message, then the line's own columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "error_code", "error_message", *record.get("columns", [])])
    for row in record.get("rejected", []):
        writer.writerow([row["line"], row["code"], row["message"], *row["fields"]])
    return out.getvalue()
