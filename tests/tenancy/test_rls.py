"""Row-level security is the backstop: raw SQL as the app role sees only the org in SET LOCAL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from rappit.platform.db import SYSTEM_ROLE
from rappit.tenancy.context import org_context
from rappit.tenancy.models import User
from rappit.tenancy.scoping import unscoped


async def count_users(conn, org_ids: list[uuid.UUID]) -> int:
    return (
        await conn.execute(text("select count(*) from users where org_id = any(:ids)"), {"ids": org_ids})
    ).scalar_one()


async def test_raw_sql_without_org_setting_sees_no_tenant_rows(engine, make_org, admin_engine) -> None:
    a, b = await make_org(), await make_org()
    async with admin_engine.connect() as admin:
        assert await count_users(admin, [a.id, b.id]) == 2  # the rows exist
    async with engine.connect() as conn:  # the app role, no app.org_id
        assert await count_users(conn, [a.id, b.id]) == 0
        assert (await conn.execute(text("select count(*) from api_tokens"))).scalar_one() == 0
        assert (await conn.execute(text("select count(*) from organizations"))).scalar_one() == 0


async def test_raw_sql_with_org_setting_sees_only_that_org(engine, make_org) -> None:
    a, b = await make_org(), await make_org()
    async with engine.begin() as conn:
        await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(a.id)})
        assert await count_users(conn, [a.id, b.id]) == 1
        orgs = (await conn.execute(text("select id from organizations"))).scalars().all()
        assert orgs == [a.id]
        # Updating or deleting the other org's rows silently touches nothing.
        result = await conn.execute(text("update users set role = 'viewer' where org_id = :b"), {"b": b.id})
        assert result.rowcount == 0


async def test_raw_insert_into_another_org_is_rejected_by_policy(engine, make_org) -> None:
    a, b = await make_org(), await make_org()
    with pytest.raises(DBAPIError, match="row-level security"):
        async with engine.begin() as conn:
            await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(a.id)})
            await conn.execute(
                text(
                    "insert into users (id, org_id, email, password_hash, role, is_active, created_at)"
                    " values (gen_random_uuid(), :b, 'x@y.test', '!', 'viewer', true, now())"
                ),
                {"b": b.id},
            )


async def _policy_tables(conn) -> list[tuple[str, str]]:
    """(table, org column) of every table with an org_isolation policy."""
    rows = await conn.execute(
        text(
            "select tablename, case when tablename = 'organizations' then 'id' else 'org_id' end"
            " from pg_policies where schemaname = 'public' and policyname = 'org_isolation'"
        )
    )
    return [(r[0], r[1]) for r in rows]


async def _settings_policies_read(conn) -> set[str]:
    """Every custom setting any policy reads (current_setting('...')), whatever its name."""
    rows = await conn.execute(
        text(
            r"""select distinct m[1] from pg_policies,
                   regexp_matches(coalesce(qual, '') || ' ' || coalesce(with_check, ''),
                                  'current_setting\(''([^'']+)''', 'g') as m
                 where schemaname = 'public'"""
        )
    )
    return {r[0] for r in rows}


async def test_app_role_cannot_switch_rls_off_with_any_setting(engine, admin_engine, make_org) -> None:
    """Injected SQL running as the app role sets app.bypass_rls (and every other setting a policy
    reads, except the org id) and still sees only its own org's rows, and none with no org set."""
    a, b = await make_org(), await make_org()
    async with admin_engine.connect() as admin:
        tables = await _policy_tables(admin)
        read = await _settings_policies_read(admin)
    assert len(tables) >= 10 and "app.org_id" in read
    hostile = (read | {"app.bypass_rls"}) - {"app.org_id"}
    async with engine.begin() as conn:
        for name in sorted(hostile):
            await conn.execute(text("select set_config(:n, 'on', true)"), {"n": name})
        await conn.execute(text("set local app.bypass_rls = 'on'"))
        assert await count_users(conn, [a.id, b.id]) == 0
        for table, _ in tables:
            assert (await conn.execute(text(f"select count(*) from {table}"))).scalar_one() == 0, table
        await conn.execute(text("select set_config('app.org_id', :o, true)"), {"o": str(a.id)})
        assert await count_users(conn, [a.id, b.id]) == 1
        for table, column in tables:
            others = (
                await conn.execute(text(f"select count(*) from {table} where {column} <> :a"), {"a": a.id})
            ).scalar_one()
            assert others == 0, f"{table} shows another org's rows"
        updated = await conn.execute(text("update users set role = 'viewer' where org_id = :b"), {"b": b.id})
        assert updated.rowcount == 0


async def test_system_bypass_only_through_the_system_engine(
    engine, sessionmaker, system_sessionmaker, make_org, caplog
) -> None:
    a, b = await make_org(), await make_org()
    async with unscoped(system_sessionmaker, reason="test: platform report") as session:
        assert await count_users(session, [a.id, b.id]) == 2
        orgs = set(
            (await session.execute(select(User.org_id).where(User.org_id.in_([a.id, b.id])))).scalars()
        )
        assert orgs == {a.id, b.id}
    # The app role's sessions are no way in: unscoped() refuses them, and the role can neither
    # bypass row-level security nor become the system role.
    with pytest.raises(RuntimeError, match="system"):
        async with unscoped(sessionmaker, reason="test: wrong engine"):
            pass
    async with engine.connect() as conn:
        bypasses = text("select rolbypassrls from pg_roles where rolname = current_user")
        assert not (await conn.execute(bypasses)).scalar_one()
        with pytest.raises(DBAPIError, match="permission denied"):
            await conn.execute(text(f"set role {SYSTEM_ROLE}"))
    async with sessionmaker() as session, session.begin():
        with org_context(a.id):
            assert await count_users(session, [a.id, b.id]) == 1
