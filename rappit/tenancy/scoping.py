"""The org-scoping session hook and its database backstop.

* `do_orm_execute` adds `org_id = <current org>` to every ORM SELECT, UPDATE and DELETE that touches
  a tenant model (including joined, aliased and lazy-loaded ones), and refuses to run one with no org.
* `before_flush` stamps the current org on new tenant rows and refuses rows of another org.
* `after_begin` runs `set_config('app.org_id', ..., true)` (SET LOCAL) so PostgreSQL's row-level
  security policies see the same org: raw SQL that forgets the filter still sees only that org.
* `unscoped(system_sessionmaker, reason=...)` is the only way across orgs: a session on the system
  engine, whose role has BYPASSRLS; it is logged every time. No setting switches the policies off, so
  SQL running as the app role cannot cross orgs whatever it sets.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, with_loader_criteria

from rappit.platform.db import SYSTEM_SESSION, RappitSession, is_system
from rappit.tenancy.context import TenantContextMissing, current_org_id
from rappit.tenancy.models import TenantMixin

log = structlog.get_logger("rappit.tenancy")

_SET_CONTEXT = text("select set_config('app.org_id', :org, true)")


class CrossTenantWrite(RuntimeError):
    """A flush tried to write a row that belongs to another org."""


def _system(session: Session) -> bool:
    return bool(session.info.get(SYSTEM_SESSION))


def _touches_tenant(state: ORMExecuteState) -> bool:
    return any(issubclass(m.class_, TenantMixin) for m in state.all_mappers)


def _scope_to_org(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the criteria added to the parent statement propagate to these loads
    if state.execution_options.get("rappit_unscoped") or _system(state.session):
        return
    org_id = current_org_id()
    if org_id is None:
        if _touches_tenant(state):
            raise TenantContextMissing(
                "tenant query with no organization in context; use unscoped() with a reason"
            )
        return
    # Always add the criteria when an org is set: `all_mappers` only sees the selected columns, so a
    # count over a subquery of tenant rows would otherwise slip through (RLS would still catch it).
    state.statement = state.statement.options(
        with_loader_criteria(TenantMixin, lambda cls: cls.org_id == org_id, include_aliases=True)
    )


def _stamp_org(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    org_id = current_org_id()
    system = _system(session)
    for obj in session.new:
        if not isinstance(obj, TenantMixin):
            continue
        if obj.org_id is None:
            if org_id is None:
                raise TenantContextMissing(f"new {type(obj).__name__} with no organization in context")
            obj.org_id = org_id
        elif org_id is not None and obj.org_id != org_id and not system:
            raise CrossTenantWrite(f"{type(obj).__name__} belongs to another organization")


def _set_local_org(session: Session, transaction: Any, connection: Any) -> None:
    org_id = current_org_id()
    connection.execute(_SET_CONTEXT, {"org": str(org_id) if org_id else ""})


_HOOKS = (("do_orm_execute", _scope_to_org), ("before_flush", _stamp_org), ("after_begin", _set_local_org))


def install_scoping() -> None:
    """Attach the hooks to every `RappitSession` (idempotent). Called once at start-up by the app, the
    worker, the CLI and the tests; `make_sessionmaker` refuses to build sessions until it has run."""
    for name, hook in _HOOKS:
        if not event.contains(RappitSession, name, hook):
            event.listen(RappitSession, name, hook)
    RappitSession.scoped = True


@asynccontextmanager
async def unscoped(
    system_sessionmaker: async_sessionmaker[AsyncSession] | None, *, reason: str
) -> AsyncIterator[AsyncSession]:
    """Cross-org access for a named reason (sweepers, expiry, reconciliation): one transaction on the
    system engine (SYSTEM_DATABASE_URL, a BYPASSRLS role only the worker and the CLI hold), committed
    on success. Logged every time. Credential look-ups by the API use narrow definer functions instead."""
    if system_sessionmaker is None or not is_system(system_sessionmaker):
        raise RuntimeError(
            f"unscoped({reason!r}) needs the system engine's sessionmaker (SYSTEM_DATABASE_URL); "
            "the app role cannot cross orgs"
        )
    log.info("tenancy.unscoped", reason=reason, org_id=str(current_org_id() or ""))
    async with system_sessionmaker() as session, session.begin():
        yield session


async def set_transaction_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Re-point RLS at `org_id` inside an open transaction (after org_context() changed mid-way)."""
    await session.execute(_SET_CONTEXT, {"org": str(org_id)})
