"""Bulk import of stock levels and of the catalogue, on the import service (`rappit.inventory.imports`):
a small file is applied in the request, a big one (over IMPORT_JOB_THRESHOLD_BYTES, the API's rule) is
stored and run by the `run_import` job while its page polls the progress; then the summary, every
rejected line with its reason, and the service's rejected-lines CSV. Imports are the API's records, so
one uploaded with curl shows here too."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State, UploadFile
from litestar.response import Redirect, Template

from rappit.dashboard.web import PREFIX, principal, render
from rappit.inventory import bulk, imports
from rappit.platform.errors import BadRequest
from rappit.platform.http import DbSession, Id
from rappit.tenancy.auth import PASSIVE, requires

READ = [requires("inventory:read")]
WRITE = [requires("inventory:write")]
RECENT = 20
FINISHED = ("done", "failed")


class ImportPages(Controller):
    path = "/imports"

    @get("/", guards=READ, name="dashboard.imports")
    async def index(self, request: Request[Any, Any, Any], state: State, db_session: DbSession) -> Template:
        recent = await imports.list_recent(db_session, limit=RECENT, offset=0)
        threshold = state.settings.import_job_threshold_bytes
        return render(request, "imports.html", recent=recent, threshold_text=_size(threshold))

    @post("/stock", guards=WRITE)
    async def upload_stock(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Redirect:
        """The stock CSV of `POST /api/v1/inventory/bulk` (sku,quantity,warehouse_code[,mode])."""
        return await _upload(request, state, db_session, "stock")

    @post("/skus", guards=WRITE)
    async def upload_skus(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Redirect:
        """The catalogue CSV of `POST /api/v1/skus/bulk` (code, name, reorder point, customs fields)."""
        return await _upload(request, state, db_session, "skus")

    @get("/{import_id:uuid}", guards=READ)
    async def show(self, request: Request[Any, Any, Any], db_session: DbSession, import_id: Id) -> Template:
        row = await imports.get(db_session, import_id)
        return render(request, "import.html", row=row, imp=imports.view(row))

    @get("/{import_id:uuid}/progress", guards=READ, opt={PASSIVE: True})
    async def progress(
        self, request: Request[Any, Any, Any], db_session: DbSession, import_id: Id
    ) -> Response[Any]:
        """Polled (without counting as use of the session) while the job runs; once the import is
        done or failed the page reloads to show the outcome."""
        row = await imports.get(db_session, import_id)
        if row.status in FINISHED:
            return Response(b"", headers={"HX-Refresh": "true"})
        return render(request, "_import_progress.html", row=row, imp=imports.view(row))

    @get("/{import_id:uuid}/rejected.csv", guards=READ)
    async def rejected(self, db_session: DbSession, import_id: Id) -> Response[str]:
        row = await imports.get(db_session, import_id)
        return Response(
            imports.rejected_csv(row),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{import_id}-rejected.csv"'},
        )


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


async def _upload(request: Request[Any, Any, Any], state: State, db_session: Any, kind: str) -> Redirect:
    """Apply a small file now, or store a big one for its job (enqueued once the row is committed,
    after the response; the sweeper finds it if Redis is down). Either way: to the import's page."""
    form = await request.form()
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise BadRequest("choose a CSV file to upload", code="MISSING_FILE", details={"field": "file"})
    mode = bulk.check_mode(form.get("mode") or "set") if kind == "stock" else None
    upload = imports.Upload(kind=kind, content_type="text/csv", body=await file.read(), mode=mode)
    if imports.runs_as_job(upload, state.settings.import_job_threshold_bytes):
        import_id = uuid.UUID((await imports.submit(db_session, upload))["import_id"])
        me = principal(request)
        assert me is not None  # the guards ran
        return Redirect(
            f"{PREFIX}/imports/{import_id}",
            status_code=303,
            background=BackgroundTask(imports.try_enqueue, state.arq, me.org_id, import_id),
        )
    parsed = imports.parse(upload)  # a file that cannot be read at all: its message, nothing recorded
    import_id = uuid.uuid4()
    await imports.run_now(db_session, upload, parsed, import_id=import_id)
    return Redirect(f"{PREFIX}/imports/{import_id}", status_code=303)
