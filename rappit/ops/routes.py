"""`GET /api/v1/admin/verify`: the caller's org checked as `rappit verify` checks it (owners only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from rappit.ops import verify
from rappit.ops.schemas import VerifyOut
from rappit.platform.http import DbSession
from rappit.tenancy.auth import requires

DEFAULT_STUCK_SECONDS = int(verify.DEFAULT_STUCK_AFTER.total_seconds())
StuckAfter = Annotated[
    int,
    QueryParameter(
        ge=1,
        le=90 * 86400,
        description="seconds after which a pending or failed webhook event counts as stuck",
    ),
]


class VerifyController(Controller):
    path = "/api/v1/admin/verify"
    tags = ["admin"]

    @get("/", guards=[requires("org:verify")])
    async def verify_org(
        self,
        db_session: DbSession,
        stuck_after: StuckAfter = DEFAULT_STUCK_SECONDS,
    ) -> VerifyOut:
        """200 whether or not there is drift: `clean` says which, `findings` lists every drift."""
        options = verify.Options(stuck_after=timedelta(seconds=stuck_after))
        return VerifyOut.of(await verify.verify_org(db_session, options))


ROUTES = [VerifyController]
