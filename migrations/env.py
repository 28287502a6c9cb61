"""Alembic environment: async engine, URL from rappit settings or the caller."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from rappit.app.models_registry import metadata
from rappit.platform.settings import Settings, _async_url

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        settings = Settings.from_env()
        url = settings.migration_database_url or settings.database_url
    if not url:
        raise RuntimeError(
            "no database URL: set MIGRATION_DATABASE_URL or DATABASE_URL (or use `rappit migrate`)"
        )
    return _async_url(url)


MIGRATION_LOCK = 7_243_001  # pg_advisory_lock key: one migrator at a time across containers


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # Several containers running `rappit serve` at once: the others wait here, then find nothing to do.
    connection.exec_driver_sql(
        f"SELECT pg_advisory_lock({MIGRATION_LOCK})"
    )  # a session lock: outlives the commit
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
        connection.commit()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
