"""Engine, sessions and the declarative base.

Every session is a `RappitSession`: the tenancy package attaches the org-scoping hooks to that
class, so no code path can get an unscoped ORM session by accident.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import ClassVar, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import DateTime, MetaData, event, func
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rappit.platform.settings import Settings

T = TypeVar("T")

APP_ROLE = os.environ.get("RAPPIT_DB_APP_ROLE", "rappit_app")
"""The role the app connects as: it owns no table, so row-level security binds it. Read here, once,
because migrations and the local stack run outside the app's settings object."""
SYSTEM_ROLE = os.environ.get("RAPPIT_DB_SYSTEM_ROLE", "rappit_system")
"""The role cross-org work connects as (SYSTEM_DATABASE_URL, held by the worker, never the API): the
app role's privileges plus BYPASSRLS, so the database, not a setting any SQL can flip, allows it."""
SYSTEM_SESSION = "rappit_system"
"""`Session.info` key marking a session on the system engine; the scoping hook leaves those alone."""

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class RappitSession(Session):
    """The sync session class behind every AsyncSession; tenancy attaches its org-scoping hooks here
    (`rappit.tenancy.scoping.install_scoping`, called at start-up) and sets `scoped`."""

    scoped: ClassVar[bool] = False


def make_engine(settings: Settings, *, url: str | None = None, **kwargs: object) -> AsyncEngine:
    target = url or settings.database_url
    if not target:
        raise RuntimeError("no DATABASE_URL configured (the local stack sets it in development)")
    statement_ms = settings.db_statement_timeout_ms
    options: dict[str, object] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "pool_pre_ping": True,
        "hide_parameters": True,  # no e-mails, hashes or notes in error logs
        "connect_args": {
            # asyncpg's connect timeout (its default is 60 s) and a client-side backstop for a server
            # too stalled (SIGSTOP, a dead network) to enforce its own statement_timeout.
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": statement_ms / 1000 + 1,
            "server_settings": {"application_name": "rappit", "statement_timeout": str(statement_ms)},
        },
    }
    options.update(kwargs)
    engine = create_async_engine(target, **options)
    event.listen(engine.sync_engine, "handle_error", _broken_protocol_is_a_disconnect)
    return engine


def _broken_protocol_is_a_disconnect(context: ExceptionContext) -> None:
    """asyncpg's InternalClientError ("cannot switch to state 12; another operation is in progress")
    means the connection's protocol was left mid-operation (a task cancelled while PostgreSQL was
    restarting, in the chaos soak): it cannot be used again, yet SQLAlchemy's asyncpg dialect counts
    only a closed connection as a disconnect, so the pool handed it to the next transactions, which
    failed at once. Marked a disconnect, it is discarded (and the pool's other connections checked)."""
    error = context.original_exception
    if isinstance(error, asyncpg.InternalClientError) or isinstance(
        error.__cause__, asyncpg.InternalClientError
    ):
        context.is_disconnect = True


@asynccontextmanager
async def long_statements(session: AsyncSession, timeout_ms: int) -> AsyncIterator[None]:
    """Give the statements in this block (a bulk import) `timeout_ms` instead of the request budget.

    The server-side limit is `SET LOCAL` (ends with the transaction); asyncpg's client-side backstop
    (`command_timeout`) has no public per-connection setter, so it is raised on this connection's
    config for the block and restored after."""
    from sqlalchemy import text

    await session.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
    raw = (await (await session.connection()).get_raw_connection()).driver_connection
    config = getattr(raw, "_config", None)
    if config is not None and hasattr(config, "_replace"):
        raw._config = config._replace(command_timeout=timeout_ms / 1000 + 1)  # type: ignore[union-attr]
    try:
        yield
    finally:
        if config is not None and hasattr(config, "_replace"):
            raw._config = config  # type: ignore[union-attr]


def make_sessionmaker(engine: AsyncEngine, *, system: bool = False) -> async_sessionmaker[AsyncSession]:
    """Sessions for `engine`; `system=True` for the system engine (SYSTEM_DATABASE_URL), whose sessions
    only `rappit.tenancy.scoping.unscoped()` hands out."""
    if not RappitSession.scoped:
        raise RuntimeError("the org-scoping hooks are not installed: call install_scoping() at start-up")
    return async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=RappitSession, info={SYSTEM_SESSION: system}
    )


def is_system(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    return bool(sessionmaker.kw.get("info", {}).get(SYSTEM_SESSION))


async def assert_rls_binds(engine: AsyncEngine) -> None:
    """Refuse to serve as a role row-level security does not bind (superuser, BYPASSRLS, table owner):
    tenant isolation would then rest on the ORM hook alone."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    """select r.rolname, r.rolsuper or r.rolbypassrls as bypasses,
                              exists(select 1 from pg_tables t where t.schemaname = 'public'
                                      and t.tableowner = current_user) as owns
                         from pg_roles r where r.rolname = current_user"""
                )
            )
        ).one()
    if row.bypasses or row.owns:
        raise RuntimeError(
            f"DATABASE_URL connects as {row.rolname!r}, which "
            f"{'bypasses' if row.bypasses else 'owns the tables, so bypasses'} row-level security; "
            "connect as the app role (rappit_app) and run migrations with MIGRATION_DATABASE_URL"
        )


async def assert_bypasses_rls(engine: AsyncEngine) -> None:
    """The system engine must connect as a role with BYPASSRLS: otherwise every cross-org sweep would
    silently find nothing (row-level security shows a role with no org no rows)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("select rolname, rolsuper or rolbypassrls from pg_roles where rolname = current_user")
            )
        ).one()
    if not row[1]:
        raise RuntimeError(
            f"SYSTEM_DATABASE_URL connects as {row[0]!r}, which does not bypass row-level security; "
            f"connect as the system role ({SYSTEM_ROLE}, BYPASSRLS)"
        )


@asynccontextmanager
async def provide_session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction for one operation: commit on success, roll back on any error.

    Used by workers and the CLI; HTTP handlers get the same thing through DI.
    """
    async with sessionmaker() as session, session.begin():
        yield session


async def add_unique(session: AsyncSession, obj: object, conflict: Exception) -> None:
    """Add and flush `obj` in a savepoint; a UNIQUE violation raises `conflict` (the database decides,
    the message is ours) and leaves the caller's transaction usable. Other integrity errors propagate."""
    from sqlalchemy.exc import IntegrityError

    from rappit.platform.errors import is_unique_violation

    session.add(obj)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        raise conflict from exc


async def get_or_404(session: AsyncSession, model: type[T], obj_id: uuid.UUID, what: str) -> T:
    """One row of the current org by id (the scoping hook adds the org), or NotFound."""
    from sqlalchemy import select

    from rappit.platform.errors import NotFound

    found = (await session.execute(select(model).where(model.id == obj_id))).scalar_one_or_none()  # type: ignore[attr-defined]
    if found is None:
        raise NotFound(f"no such {what}", details={f"{what.replace(' ', '_')}_id": str(obj_id)})
    return found
