"""Dashboard sessions (server-side, in Redis) that get a fresh id at login.

Litestar's server-side backend keeps whatever session id the client's cookie names; a login must not
(an id planted before login would otherwise become an authenticated session: session fixation).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.types.empty import Empty

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


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend  # type: ignore[assignment]


async def start_new_session(request: Any, data: dict[str, Any]) -> None:
    """Forget the session the request came with and store `data` under a new id."""
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await request.app.stores.get("sessions").delete(old)
    request.scope.setdefault("state", {})[_NEW_ID] = secrets.token_hex(32)
    request.set_session(data)
