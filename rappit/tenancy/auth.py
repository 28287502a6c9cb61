"""Who is calling: API tokens (Authorization: Bearer) and dashboard session cookies.

Credentials are looked up through SECURITY DEFINER functions (see the first migration): the one
narrow cross-org read the app role may do, instead of a bypass of row-level security. A verified
caller's org and actor go into the tenancy context for the rest of the request.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from rappit.platform.ratelimit import client_ip
from rappit.tenancy.context import Actor, set_org_context
from rappit.tenancy.login import SEEN_KEY
from rappit.tenancy.permissions import permissions_for
from rappit.tenancy.service import hash_token
from rappit.tenancy.sessions import forget_session

AUTH_EXCLUDE = [
    "^/health",
    "^/metrics",
    "^/schema",
    "^/webhooks/",
    "^/callbacks/",
    "^/auth/login$",
    "^/static/",
    "^/favicon.ico$",
]

PASSIVE = "passive"
"""Route opt: a request the page makes by itself (polling), which does not count as use of the session."""

_TOKEN_SQL = text("select token_id, org_id, org_code, user_id, role from rappit_auth_token(:h)")
_USER_SQL = text("select user_id, org_id, org_code, role, is_active from rappit_auth_user(:u)")


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: uuid.UUID
    org_code: str
    role: str
    permissions: frozenset[str]
    actor: Actor
    user_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None


async def principal_for_token(engine: AsyncEngine, token: str) -> Principal | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_TOKEN_SQL, {"h": hash_token(token)})).first()
    if row is None:
        return None
    token_id, org_id, org_code, user_id, role = row
    return Principal(
        org_id=org_id,
        org_code=org_code,
        role=role,
        permissions=permissions_for(role),
        actor=Actor(kind="token", id=str(token_id)),
        user_id=user_id,
        token_id=token_id,
    )


async def principal_for_user(engine: AsyncEngine, user_id: uuid.UUID) -> Principal | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_USER_SQL, {"u": user_id})).first()
    if row is None or not row.is_active:
        return None
    return Principal(
        org_id=row.org_id,
        org_code=row.org_code,
        role=row.role,
        permissions=permissions_for(row.role),
        actor=Actor(kind="user", id=str(row.user_id)),
        user_id=row.user_id,
    )


def rate_limit_key(request: Any) -> str:
    """The API limit's bucket, once authentication has run: the verified token (or the session's
    user), so one token is one bucket from any address; the address only if nobody was verified."""
    principal = request.scope.get("user")
    if isinstance(principal, Principal):
        return f"token:{principal.token_id}" if principal.token_id else f"user:{principal.user_id}"
    return f"ip:{client_ip(request)}"


class AuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        engine: AsyncEngine = connection.app.state.engine
        header = connection.headers.get("authorization")
        principal: Principal | None
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthorizedException("use 'Authorization: Bearer <token>'")
            principal = await principal_for_token(engine, token.strip())
            if principal is None:
                raise NotAuthorizedException("invalid, expired or revoked token")
        else:
            scoped = connection.scope.get("session")
            session: dict[str, Any] = scoped if isinstance(scoped, dict) else {}
            raw_user = session.get("user_id")
            if not raw_user:
                raise NotAuthorizedException("authentication required")
            idle_limit = connection.app.state.settings.session_idle_seconds
            now = int(time.time())
            seen = session.get(SEEN_KEY)
            if not isinstance(seen, int) or now - seen > idle_limit:
                # Deleted from the store here: the session middleware never sees a response that
                # an exception raised in this middleware produces.
                await forget_session(connection)
                raise NotAuthorizedException(
                    f"signed out after {idle_limit // 60} minutes without activity; sign in again"
                )
            if not connection.route_handler.opt.get(PASSIVE):
                session[SEEN_KEY] = now  # background polling keeps a page fresh, not the session alive
            try:
                principal = await principal_for_user(engine, uuid.UUID(raw_user))
            except ValueError:
                principal = None
            if principal is None:
                raise NotAuthorizedException("session is no longer valid; log in again")
        set_org_context(principal.org_id, principal.actor)
        structlog.contextvars.bind_contextvars(org_id=str(principal.org_id), actor=principal.actor.describe())
        return AuthenticationResult(user=principal, auth=principal)


def requires(*permissions: str) -> Any:
    """A Litestar guard: the caller's role must grant every permission named."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        missing = [p for p in permissions if p not in principal.permissions]
        if missing:
            raise PermissionDeniedException(f"your role ({principal.role}) lacks: {', '.join(missing)}")

    guard.__name__ = f"requires_{'_'.join(p.replace(':', '_') for p in permissions)}"
    return guard
