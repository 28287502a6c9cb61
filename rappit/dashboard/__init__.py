"""The merchant dashboard: server-rendered pages (Jinja + htmx) under /dashboard/, calling the same
service functions as the JSON API. `routes()` builds its router for the app factory."""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.config.csrf import CSRFConfig
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.static_files import create_static_files_router

from rappit.dashboard.pages import admin, auth, imports, inventory, jobs, orders, overview
from rappit.dashboard.web import EXCEPTION_HANDLERS, PREFIX, STATIC, JobsPort, template_config
from rappit.platform.settings import Settings

CSRF_COOKIE = "rappit_csrf"

__all__ = ["JobsPort", "csrf_config", "routes", "template_config"]


def csrf_config(settings: Settings) -> CSRFConfig:
    """Double-submit token on every dashboard form (field `_csrf_token`, or the X-CSRFToken header
    htmx sends); the cookie is HttpOnly (the page embeds the token) and Secure in production."""
    return CSRFConfig(
        secret=settings.secret_key,
        cookie_name=CSRF_COOKIE,
        cookie_path=PREFIX,
        cookie_secure=settings.is_production,
        cookie_httponly=True,
        cookie_samesite="lax",
        header_name="x-csrftoken",
    )


def routes(settings: Settings) -> list[Any]:
    pages = Router(
        path=PREFIX,
        route_handlers=[
            auth.AuthPages,
            overview.OverviewPages,
            inventory.InventoryPages,
            orders.OrderPages,
            orders.ShipmentPages,
            # Uploads up to MAX_IMPORT_BYTES, like the API's import routes (MAX_BODY_BYTES elsewhere).
            Router(
                path="/",
                route_handlers=[imports.ImportPages],
                request_max_body_size=settings.max_import_bytes,
            ),
            jobs.JobPages,
            admin.ChannelPages,
            admin.CarrierPages,
            admin.TeamPages,
        ],
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf_config(settings))],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        include_in_schema=False,
        tags=["dashboard"],
    )
    static = create_static_files_router(
        path=f"{PREFIX}/static",
        directories=[STATIC],
        name="dashboard.static",
        opt={"exclude_from_auth": True},
        include_in_schema=False,
    )
    return [pages, static]
