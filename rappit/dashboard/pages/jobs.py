"""Jobs: dead letters with their payload and error; retry one or every one selected (as
`POST /api/v1/jobs/dead/{id}/retry`: the work is re-enqueued once the retry is committed)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import State
from litestar.response import Redirect, Template

from rappit.dashboard.web import PREFIX, JobsPort, QText, notice, principal, render
from rappit.platform.errors import BadRequest
from rappit.platform.http import DbSession
from rappit.platform.logging import current_request_id
from rappit.tenancy.auth import requires

READ = [requires("jobs:read")]
RETRY = [requires("jobs:retry")]


class JobPages(Controller):
    path = "/jobs"

    @get("/", guards=READ, name="dashboard.jobs")
    async def dead_letters(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession, status: QText = "dead"
    ) -> Template:
        jobs: JobsPort = state.dashboard_jobs
        status = status if status in ("dead", "retried") else "dead"
        letters = await jobs.list_dead(db_session, status=status, limit=100, offset=0)
        payloads = {d.id: json.dumps(d.payload, indent=2, sort_keys=True, default=str) for d in letters}
        return render(request, "jobs.html", letters=letters, payloads=payloads, status=status)

    @post("/retry", guards=RETRY)
    async def retry(self, request: Request[Any, Any, Any], state: State, db_session: DbSession) -> Redirect:
        form = await request.form()
        raw = form.getall("ids") if hasattr(form, "getall") else [form.get("ids")]
        try:
            ids = [uuid.UUID(str(v)) for v in raw if v]
        except ValueError:
            raise BadRequest("ids: not dead letter ids", code="BAD_FORM") from None
        if not ids:
            raise BadRequest("select at least one dead letter to retry", code="NOTHING_SELECTED")
        jobs: JobsPort = state.dashboard_jobs
        me = principal(request)
        assert me is not None
        retried = [await jobs.retry(db_session, i, me.actor.describe()) for i in ids]
        # Enqueued after the response, so after the request's transaction committed the retries.
        tasks = [BackgroundTask(jobs.enqueue_retried, state.arq, d, current_request_id()) for d in retried]
        notice(
            request, f"Retried {len(retried)} dead letter{'' if len(retried) == 1 else 's'}: queued again."
        )
        return Redirect(f"{PREFIX}/jobs/", status_code=303, background=BackgroundTasks(tasks))
