"""Dead letters API: list them, put one back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import QueryParameter

from rappit.channels import inbox
from rappit.inventory import imports
from rappit.platform.http import DbSession, Id, Limit, Offset
from rappit.platform.logging import current_request_id
from rappit.tenancy.auth import Principal, requires
from rappit.tenancy.idempotency import idempotent
from rappit.workers import dead_letters
from rappit.workers.schemas import DeadLetterOut


class DeadLetterController(Controller):
    path = "/api/v1/jobs/dead"
    tags = ["jobs"]

    @get("/", guards=[requires("jobs:read")])
    async def list_dead(
        self,
        db_session: DbSession,
        status: Annotated[Literal["dead", "retried"] | None, QueryParameter()] = "dead",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> list[DeadLetterOut]:
        return [
            DeadLetterOut.of(d)
            for d in await dead_letters.list_dead(db_session, status=status, limit=limit, offset=offset)
        ]

    @post("/{dead_letter_id:uuid}/retry", guards=[requires("jobs:retry")], status_code=200)
    async def retry(
        self, request: Request[Principal, Any, Any], state: State, db_session: DbSession, dead_letter_id: Id
    ) -> Response[Any]:
        async def op() -> DeadLetterOut:
            return DeadLetterOut.of(
                await dead_letters.retry(db_session, dead_letter_id, request.user.actor.describe())
            )

        response = await idempotent(request, db_session, op, status_code=200)
        if response.headers.get("idempotent-replayed") != "true":
            out = await dead_letters.get(db_session, dead_letter_id)
            if out.kind == dead_letters.IMPORT:
                response.background = BackgroundTask(imports.try_enqueue, state.arq, out.org_id, out.ref_id)
            else:
                response.background = BackgroundTask(
                    inbox.try_enqueue, state.arq, out.org_id, out.ref_id, current_request_id()
                )
        return response


ROUTES = [DeadLetterController]
