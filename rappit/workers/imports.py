"""The job behind a big bulk import (`rappit.inventory.imports`), with retries and a dead letter.

A run is three kinds of short step around one long transaction, as for the webhook inbox:
1. count the attempt (committed first, so a run that times out or whose worker dies still counts);
2. apply the stored file whole and mark the import done, in one transaction (all or nothing);
3. on a failure, record it in a fresh transaction and retry with backoff, or, after the last try,
   mark the import failed and dead-letter it. A file that cannot be read fails at once: no retry
   could read it better.
"""

from __future__ import annotations

import asyncio
import traceback
import uuid
from datetime import timedelta

import structlog
from arq import Retry

from rappit.inventory import imports
from rappit.platform.db import provide_session
from rappit.platform.errors import BadRequest
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps, redis

log = structlog.get_logger("rappit.workers.imports")
MAX_ATTEMPTS = 3
UNFINISHED = "an earlier attempt did not finish (it timed out or its worker died)"


async def run_import(ctx: Ctx, org_id: str, import_id: str) -> str:
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), import_id=import_id, org_id=org_id)
    d, iid = deps(ctx), uuid.UUID(import_id)
    with org_context(uuid.UUID(org_id), Actor(kind="system", id="import")):
        async with provide_session(d.sessionmaker) as session:
            row = await imports.start_attempt(session, iid)
            attempts = row.attempts if row else 0
        if row is None:
            return "done"  # gone, or finished by an earlier run
        if attempts > MAX_ATTEMPTS:  # every allowed run started and none recorded an outcome
            return await _failed(d, iid, row.last_error or UNFINISHED, final=True, attempts=attempts)

        async def progress(processed: int) -> None:
            await imports.write_progress(d.sessionmaker, iid, processed)

        try:
            budget = _budget(d)
            async with asyncio.timeout(budget):
                async with provide_session(d.sessionmaker) as session:
                    # The job's deadline, not the request-sized 120 s, bounds each big statement.
                    summary = await imports.run_stored(session, iid, progress, timeout_ms=int(budget * 1000))
        except BadRequest as exc:  # the file itself is unreadable: fail now, with the reason
            return await _failed(d, iid, imports.failure_message(exc), final=True, attempts=attempts)
        except Exception as exc:
            error = imports.failure_message(exc)
            log.warning(
                "import.failed_attempt", attempt=attempts, error=error, trace=traceback.format_exc(limit=5)
            )
            return await _failed(d, iid, error, final=attempts >= MAX_ATTEMPTS, attempts=attempts)
    if summary is None:
        return "done"
    log.info(
        "import.done", received=summary["received"], applied=summary["applied"], failed=summary["failed"]
    )
    return "done"


def _budget(d: Deps) -> float:
    """Inside arq's job timeout, so that a slow run is a counted failure with a retry."""
    return max(d.settings.job_timeout_seconds * 0.8, d.settings.job_timeout_seconds - 5)


async def _failed(d: Deps, import_id: uuid.UUID, error: str, *, final: bool, attempts: int) -> str:
    async with provide_session(d.sessionmaker) as session:
        row = await imports.record_failure(session, import_id, error, final=final)
        if row is None:
            return "done"
        if final:
            await dead_letters.record(
                session,
                org_id=row.org_id,
                kind=dead_letters.IMPORT,
                ref_id=row.id,
                job_name=imports.JOB,
                payload={"kind": row.kind, "content_type": row.content_type, "size_bytes": row.size_bytes},
                error=error,
                attempts=row.attempts,
            )
    if final:
        return "failed"
    retry_in = d.import_backoff[min(attempts - 1, len(d.import_backoff) - 1)]
    raise Retry(defer=timedelta(seconds=retry_in))  # after the commit: the failure is on record


async def sweep_unfinished_imports(ctx: Ctx) -> int:
    """Cron: enqueue imports still queued or running after a grace period (the API died before its
    enqueue, Redis lost the job). arq refuses a job id that is queued or running, so a live one is
    never doubled."""
    d = deps(ctx)
    async with unscoped(d.system_sessionmaker, reason="import sweep: unfinished imports") as session:
        rows = await imports.unfinished(session, older_than=timedelta(seconds=d.import_sweep_grace_seconds))
    queued = 0
    for org_id, import_id in rows:
        if await imports.enqueue(redis(ctx), org_id, import_id):
            queued += 1
    if rows:
        log.info("import.sweep", unfinished=len(rows), enqueued=queued)
    return queued
