"""Row-level security is the backstop: raw SQL as the app role sees only the org in SET LOCAL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from rappit.tenancy.context import org_context
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


async def test_unscoped_bypass_crosses_orgs_and_is_logged(sessionmaker, make_org, caplog) -> None:
    a, b = await make_org(), await make_org()
    async with sessionmaker() as session, session.begin():
        with org_context(a.id):
            assert await count_users(session, [a.id, b.id]) == 1
            async with unscoped(session, reason="test: platform report"):
                assert await count_users(session, [a.id, b.id]) == 2
            assert await count_users(session, [a.id, b.id]) == 1
    assert any(
        "tenancy.unscoped" in r.getMessage() and "platform report" in r.getMessage() for r in caplog.records
    )
