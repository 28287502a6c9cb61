"""Bulk import of stock levels: upload a CSV, see the summary and every rejected line with its reason,
download the rejected lines. Records live in `rappit.dashboard.imports`; a running import's page polls
`/imports/{id}/progress` (a catalogue import run as a job plugs in there)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from rappit.dashboard import imports
from rappit.dashboard.web import PREFIX, principal, render
from rappit.inventory import bulk, stock
from rappit.platform.errors import BadRequest, NotFound
from rappit.platform.http import DbSession
from rappit.tenancy.auth import PASSIVE, requires

READ = [requires("inventory:read")]
WRITE = [requires("inventory:write")]
ImportId = Annotated[str, PathParameter(pattern="^[0-9a-f]{32}$")]


async def _record(request: Request[Any, Any, Any], state: State, import_id: str) -> dict[str, Any]:
    me = principal(request)
    assert me is not None  # the guards ran
    record = await imports.load(state.redis, me.org_id, import_id)
    if record is None:
        raise NotFound("no such import (records are kept for 24 hours)", details={"import_id": import_id})
    return record


class ImportPages(Controller):
    path = "/imports"

    @get("/", guards=READ, name="dashboard.imports")
    async def form(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "imports.html")

    @post("/stock", guards=WRITE)
    async def upload_stock(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Redirect:
        """The same parser and service as `POST /api/v1/inventory/bulk` (multipart field `file`)."""
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise BadRequest("choose a CSV file to upload", code="MISSING_FILE", details={"field": "file"})
        body = await upload.read()
        parsed = bulk.parse_csv(body, form.get("mode") or "set")
        summary = await stock.with_retries(db_session, lambda: bulk.apply(db_session, parsed))
        columns, rejected = imports.rejected_rows(body, summary["errors"])
        record = {
            "id": uuid.uuid4().hex,
            "kind": "stock",
            "status": "done",
            "file_name": upload.filename,
            "progress": {"done": summary["received"], "total": summary["received"]},
            "summary": summary,
            "columns": columns,
            "rejected": rejected,
        }
        me = principal(request)
        assert me is not None
        await imports.save(state.redis, me.org_id, record)
        return Redirect(f"{PREFIX}/imports/{record['id']}", status_code=303)

    @get("/{import_id:str}", guards=READ)
    async def show(self, request: Request[Any, Any, Any], state: State, import_id: ImportId) -> Template:
        return render(request, "import.html", record=await _record(request, state, import_id))

    @get("/{import_id:str}/progress", guards=READ, opt={PASSIVE: True})
    async def progress(
        self, request: Request[Any, Any, Any], state: State, import_id: ImportId
    ) -> Response[Any]:
        """Polled while an import runs; once it is done the page reloads to show the summary."""
        record = await _record(request, state, import_id)
        if record["status"] == "done":
            return Response(b"", headers={"HX-Refresh": "true"})
        return render(request, "_import_progress.html", record=record)

    @get("/{import_id:str}/rejected.csv", guards=READ)
    async def rejected(
        self, request: Request[Any, Any, Any], state: State, import_id: ImportId
    ) -> Response[str]:
        record = await _record(request, state, import_id)
        return Response(
            imports.rejected_csv(record),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="rejected-{import_id}.csv"'},
        )
