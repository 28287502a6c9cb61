"""Sign in and out: the same server-side session and per-account failure limit as `POST /auth/login`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from rappit.dashboard.web import IDLE_REASON, LOGIN_PATH, PREFIX, QText, notice, render
from rappit.platform.http import DbSession
from rappit.tenancy.login import sign_in

PUBLIC = {"exclude_from_auth": True}


class LoginForm(msgspec.Struct):
    org_code: str
    email: str
    password: str
    next: QText = ""


def safe_next(target: str) -> str:
    """Only a dashboard path (never another site, never `//host`)."""
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


class AuthPages(Controller):
    path = ""

    @get("/login", opt=PUBLIC, name="dashboard.login")
    async def login_page(
        self, request: Request[Any, Any, Any], reason: QText = "", next: QText = ""
    ) -> Template:
        idle = request.app.state.settings.session_idle_seconds // 60
        reasons = {
            IDLE_REASON: f"You were signed out after {idle} minutes without activity.",
            "signed_out": "You are signed out.",
        }
        return render(request, "login.html", reason=reasons.get(reason), next=safe_next(next))

    @post("/login", opt=PUBLIC)
    async def login(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        who = await sign_in(
            request, db_session, org_code=data.org_code.strip(), email=data.email, password=data.password
        )
        notice(request, f"Signed in to {who.org_code} as {who.role}.")
        return Redirect(safe_next(data.next), status_code=303)

    @post("/logout", opt=PUBLIC)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect(f"{LOGIN_PATH}?reason=signed_out", status_code=303)
