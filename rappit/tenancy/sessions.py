"""Dashboard sessions (server-side, in Redis) that get a fresh id at login.

Litestar's server-side backend keeps whatever session id the client's cookie names; a login must not
(an id planted before login would otherwise become an authenticated session: session fixation).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.types import Message
from litestar.types.empty import Empty
from redis.exceptions import RedisError

from rappit.platform.errors import dependency_error_response

_NEW_ID = "rappit_new_session_id"
SESSION_COOKIE = "rappit_session"


class RotatingSessionBackend(ServerSideSessionBackend):
    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        fresh = connection.scope.get("state", {}).get(_NEW_ID)
        return fresh or super().get_session_id(connection)

    async def store_in_message(
        self, scope_session: Any, message: Any, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        # An API call with no session: no Redis write, no cookie (Litestar would store an empty one).
        if scope_session is not Empty and not scope_session and not connection.cookies.get(self.config.key):
            return
        await super().store_in_message(scope_session, message, connection)


class RedisAwareSessionMiddleware(SessionMiddleware[RotatingSessionBackend]):
    """Litestar writes the session to the store while sending the response, after every exception
    handler has had its turn: a Redis error there escaped as a plain-text 500 with no request id.
    Here it becomes the 503 envelope instead of the response the handler made (a session that cannot
    be saved must not be reported as a login). Loading a session raises before the handler runs and
    reaches the exception handlers like any other error."""

    def create_send_wrapper(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> Callable[[Message], Awaitable[None]]:
        replaced = False

        async def wrapped_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the handler's body belongs to the response that was replaced
            if message["type"] != "http.response.start":
                await connection.send(message)
                return
            try:
                await self.backend.store_in_message(connection.scope.get("session"), message, connection)
            except RedisError as exc:
                replaced = True
                request: Request[Any, Any, Any] = Request(connection.scope, connection.receive)
                response = dependency_error_response(request, "redis", exc)
                asgi = response.to_asgi_response(app=None, request=request)
                await asgi(connection.scope, connection.receive, connection.send)
                return
            await connection.send(message)

        return wrapped_send


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend

    @property
    def middleware(self) -> DefineMiddleware:
        return DefineMiddleware(RedisAwareSessionMiddleware, backend=self._backend_class(config=self))


async def start_new_session(request: Any, data: dict[str, Any]) -> None:
    """Forget the session the request came with and store `data` under a new id."""
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await request.app.stores.get("sessions").delete(old)
    request.scope.setdefault("state", {})[_NEW_ID] = secrets.token_hex(32)
    request.set_session(data)


async def forget_session(connection: Any) -> None:
    """Delete the connection's stored session (its cookie then names nothing)."""
    sid = connection.cookies.get(SESSION_COOKIE)
    if sid:
        await connection.app.stores.get("sessions").delete(sid)
    connection.scope["session"] = {}
