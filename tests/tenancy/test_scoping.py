"""The ORM hook: every tenant query is filtered to the org in context, without anyone remembering."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from rappit.platform.db import make_engine, make_sessionmaker
from rappit.tenancy.context import TenantContextMissing, org_context
from rappit.tenancy.models import ApiToken, User
from rappit.tenancy.scoping import CrossTenantWrite, unscoped


@pytest.fixture(params=["app role (RLS binds too)", "table owner (the hook alone)"])
async def any_sessionmaker(
    request, sessionmaker, settings
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The app's sessions, and sessions as the table owner, whom row-level security does not bind:
    there the ORM hook is the only thing between a query and every org's rows."""
    if request.param.startswith("app"):
        yield sessionmaker
        return
    engine = make_engine(settings, url=settings.migration_database_url, pool_size=2, max_overflow=0)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_select_update_delete_are_scoped_to_the_current_org(any_sessionmaker, make_org) -> None:
    sessionmaker = any_sessionmaker
    a, b = await make_org(), await make_org()
    async with sessionmaker() as session, session.begin():
        with org_context(b.id):
            users = (await session.execute(select(User))).scalars().all()
            assert [u.org_id for u in users] == [b.id]
            # Joins and aliases are filtered too.
            u2 = aliased(User)
            joined = await session.execute(
                select(ApiToken.org_id, u2.org_id).join(u2, u2.id == ApiToken.user_id)
            )
            assert {row for row in joined} == {(b.id, b.id)}
            # A bulk UPDATE naming org A's owner by e-mail touches nothing.
            result = await session.execute(
                update(User)
                .where(User.email == a.owner_email)
                .values(role="viewer")
                .execution_options(synchronize_session=False)
            )
            assert result.rowcount == 0
            result = await session.execute(delete(ApiToken).where(ApiToken.org_id == a.id))
            assert result.rowcount == 0
    async with sessionmaker() as session, session.begin():
        with org_context(a.id):
            owner = (await session.execute(select(User))).scalar_one()
            assert owner.role == "owner"
            assert (await session.execute(select(func.count()).select_from(ApiToken))).scalar_one() == 1


async def test_tenant_query_without_org_context_is_refused(sessionmaker) -> None:
    async with sessionmaker() as session:
        with pytest.raises(TenantContextMissing):
            await session.execute(select(User))


async def test_new_rows_are_stamped_with_the_current_org(sessionmaker, make_org) -> None:
    a = await make_org()
    async with sessionmaker() as session, session.begin():
        with org_context(a.id):
            user = User(email="stamped@x.test", role="viewer", password_hash="!")
            session.add(user)
            await session.flush()
            assert user.org_id == a.id


async def test_writing_a_row_for_another_org_is_refused(sessionmaker, make_org) -> None:
    a, b = await make_org(), await make_org()
    async with sessionmaker() as session:
        with org_context(a.id):
            session.add(User(org_id=b.id, email="intruder@x.test", role="viewer", password_hash="!"))
            with pytest.raises(CrossTenantWrite):
                await session.flush()


async def test_unscoped_orm_query_sees_every_org(system_sessionmaker, make_org) -> None:
    a, b = await make_org(), await make_org()
    async with unscoped(system_sessionmaker, reason="test: cross-org ORM read") as session:
        orgs = set(
            (await session.execute(select(User.org_id).where(User.org_id.in_([a.id, b.id])))).scalars()
        )
    assert orgs == {a.id, b.id}
