from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from rappit.app.models_registry import metadata
from rappit.tenancy.models import TenantMixin
from rappit.tenancy.rls import APP_ROLE


async def test_models_and_migrations_do_not_drift(admin_engine) -> None:
    def diff(sync_conn):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with admin_engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ: {changes}"


def tenant_tables() -> list[str]:
    from rappit.platform.db import Base

    return sorted(m.local_table.name for m in Base.registry.mappers if issubclass(m.class_, TenantMixin))


async def test_every_tenant_table_has_forced_policy_and_app_role_owns_nothing(admin_engine) -> None:
    tables = tenant_tables()
    assert "users" in tables and "api_tokens" in tables
    async with admin_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    """select c.relname, c.relrowsecurity, pg_get_userbyid(c.relowner) as owner,
                              (select count(*) from pg_policy p where p.polrelid = c.oid) as policies
                         from pg_class c where c.relkind = 'r' and c.relnamespace = 'public'::regnamespace"""
                )
            )
        ).all()
    by_name = {r.relname: r for r in rows}
    for table in [*tables, "organizations"]:
        assert by_name[table].relrowsecurity, f"{table} has no row-level security"
        assert by_name[table].policies >= 1, f"{table} has no policy"
    assert all(r.owner != APP_ROLE for r in rows)
