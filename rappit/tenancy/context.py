"""Who is acting, for which org: request- or job-scoped context.

The org-scoping hooks and row-level security read the current org from here. It is set by the
auth middleware for HTTP requests and by `org_context()` in jobs and the CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a change; copied onto audit rows."""

    kind: str  # user | token | channel | carrier | system
    id: str | None = None
    label: str = ""

    def describe(self) -> str:
        return f"{self.kind}:{self.id}" if self.id else self.kind


SYSTEM = Actor(kind="system", label="system")

_org: ContextVar[uuid.UUID | None] = ContextVar("rappit_org", default=None)
_actor: ContextVar[Actor] = ContextVar("rappit_actor", default=SYSTEM)


class TenantContextMissing(RuntimeError):
    """A tenant table was queried with no org in context (cross-org work uses `unscoped()`)."""


def current_org_id() -> uuid.UUID | None:
    return _org.get()


def require_org_id() -> uuid.UUID:
    org_id = _org.get()
    if org_id is None:
        raise TenantContextMissing("no organization in context")
    return org_id


def current_actor() -> Actor:
    return _actor.get()


def set_org_context(org_id: uuid.UUID | None, actor: Actor | None = None) -> None:
    """Set for the rest of the current task (used by the auth middleware per request)."""
    _org.set(org_id)
    _actor.set(actor or SYSTEM)


def clear_org_context() -> None:
    """Nobody's org and the system actor: run at the start of every request."""
    set_org_context(None)


@contextmanager
def org_context(org_id: uuid.UUID, actor: Actor | None = None) -> Iterator[None]:
    """Act as `org_id` inside the block (jobs, CLI, tests)."""
    org_token = _org.set(org_id)
    actor_token = _actor.set(actor or SYSTEM)
    try:
        yield
    finally:
        _org.reset(org_token)
        _actor.reset(actor_token)
