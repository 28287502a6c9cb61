"""The dashboard's plumbing: templates, rendering with the caller's role, notices, and how errors
become pages (a failed action shows the service's own message; no session goes to the sign-in page)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import QueryParameter
from litestar.plugins.flash import flash, get_flashes
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.platform.errors import DomainError
from rappit.tenancy.auth import Principal

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HTMX_FILE = "htmx-2.0.4.min.js"
"""htmx 2.0.4 from the npm package `htmx.org` (dist/htmx.min.js, sha256 e209dda5...b447), shipped as is."""
PREFIX = "/dashboard"
LOGIN_PATH = f"{PREFIX}/login"
QText = Annotated[str, QueryParameter(required=False)]
QFlag = Annotated[bool, QueryParameter(required=False)]
QPage = Annotated[int, QueryParameter(required=False, ge=1, le=1_000_000)]
IDLE_REASON = "idle"


@dataclass(frozen=True, slots=True)
class JobsPort:
    """Dead letters live with the workers, a floor the dashboard may not import: the app hands their
    service functions in (see rappit/app/factory.py)."""

    count_dead: Callable[[AsyncSession], Awaitable[int]]
    list_dead: Callable[..., Awaitable[Sequence[Any]]]
    retry: Callable[[AsyncSession, uuid.UUID, str], Awaitable[Any]]
    enqueue_retried: Callable[[Any, Any, str | None], Awaitable[None]]
    """After the retry's commit: put the work back in its queue (whatever its kind)."""


def when(value: datetime | None) -> str:
    """Timestamps are stored in UTC and shown in UTC, labelled (no org time zone setting exists yet)."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def money(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return "—"
    return f"{minor / 100:,.2f} {currency or ''}".strip()


def _setup(engine: JinjaTemplateEngine) -> None:
    engine.register_template_callable("get_flashes", get_flashes)
    engine.engine.filters["when"] = when
    engine.engine.filters["money"] = money


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_setup)


def principal(request: Request[Any, Any, Any]) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None


def render(request: Request[Any, Any, Any], name: str, *, status_code: int = 200, **context: Any) -> Template:
    """A page with the caller's role at hand: `can('inventory:write')` decides whether a control shows."""
    me = principal(request)
    perms = me.permissions if me else frozenset()
    return Template(
        template_name=name,
        status_code=status_code,
        context={
            "me": me,
            "can": lambda permission: permission in perms,
            "path": request.url.path,
            "htmx_file": HTMX_FILE,
            **context,
        },
    )


def notice(request: Request[Any, Any, Any], message: str, *, ok: bool = True) -> None:
    flash(request, message, "ok" if ok else "error")


def done(request: Request[Any, Any, Any], message: str, to: str) -> Redirect:
    """After a successful form: the notice, and a redirect (a reload never repeats the action)."""
    notice(request, message)
    return Redirect(to, status_code=303)


def back(request: Request[Any, Any, Any]) -> str:
    """Where a failed form returns: the dashboard page it was sent from, else the overview."""
    if request.url.path == LOGIN_PATH:
        return LOGIN_PATH  # with no session, the overview would only redirect here again
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.path.startswith(f"{PREFIX}/") and referer.netloc in ("", request.url.netloc):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return f"{PREFIX}/"


def message_of(exc: Exception) -> str:
    """The API's own message; a validation error names each field it is about."""
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, ValidationException):
        fields = [
            f"{item.get('key', 'field')}: {item.get('message', 'invalid')}"
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        return f"{exc.detail}: {'; '.join(fields)}" if fields else str(exc.detail)
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc)


def _status(exc: Exception) -> int:
    return int(getattr(exc, "status_code", 500))


def on_not_signed_in(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    params = {"next": request.url.path} if request.method == "GET" else {}
    if str(exc.detail).startswith("signed out after"):
        params["reason"] = IDLE_REASON
    target = LOGIN_PATH + (f"?{urlencode(params)}" if params else "")
    if request.headers.get("hx-request"):
        return Response(b"", status_code=200, headers={"HX-Redirect": target})  # a poll: htmx navigates
    return Redirect(target, status_code=303)


def on_forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    """A role without the permission, or a form without its CSRF token: refused, never redirected."""
    return render(request, "error.html", status_code=403, title="Not allowed", message=message_of(exc))


def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A failed action goes back where it came from with the service's message as a notice; a page
    that cannot be shown says why with the API's status."""
    if request.method == "GET" or request.headers.get("hx-request"):
        return render(
            request,
            "error.html",
            status_code=_status(exc),
            title="Something is wrong",
            message=message_of(exc),
        )
    notice(request, message_of(exc), ok=False)
    return Redirect(back(request), status_code=303)


EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Response[Any]]] = {
    NotAuthorizedException: on_not_signed_in,
    PermissionDeniedException: on_forbidden,
    ValidationException: on_error,
    DomainError: on_error,
    HTTPException: on_error,
}


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(value: str) -> str | None:
    return value or None
