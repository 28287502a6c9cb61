"""The demo organization `rappit up` makes: every start makes what is missing and nothing twice, and
points the demo carrier accounts at the sandboxes of this start."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import select, text

from rappit.app import demo
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.settings import Settings
from rappit.shipping.models import CarrierAccount
from rappit.tenancy.context import org_context
from rappit.tenancy.models import ApiToken
from rappit.tenancy.scoping import set_transaction_org
from rappit.tenancy.service import hash_token, reset_password, revoke_token

ANY_PORT = {"shopify": 0, "fedex": 0, "dhl": 0}


async def as_org(settings: Settings, org_id: uuid.UUID, fn: Any) -> Any:
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with provide_session(make_sessionmaker(engine)) as session:
            await set_transaction_org(session, org_id)
            with org_context(org_id):
                return await fn(session)
    finally:
        await engine.dispose()


async def test_a_second_start_makes_nothing_twice_and_moves_the_accounts_to_its_sandboxes(
    own_database, stack, redis, tmp_path
) -> None:
    # (`redis`: the session's client is made here, in an async test, not later from a sync one's fixture)
    settings = replace(
        Settings(env="development", log_json=True).with_stack(
            database_url=own_database.app_url,
            migration_database_url=own_database.admin_url,
            redis_url=stack.redis_url,
            system_database_url=own_database.system_url,
        ),
        data_dir=tmp_path,
    )

    async def stock(session: Any) -> list[tuple[str, int]]:
        rows = await session.execute(
            text("select s.code, l.on_hand from inventory_levels l join skus s on s.id = l.sku_id order by 1")
        )
        return [tuple(r) for r in rows]

    async def base_urls(session: Any) -> dict[str, str | None]:
        return {a.carrier: a.base_url for a in (await session.execute(select(CarrierAccount))).scalars()}

    first = demo.Sandboxes.start(ANY_PORT)
    try:
        made = await demo.ensure_base(settings, first)
    finally:
        first.stop()
    assert made.created and made.password and made.token.startswith("rpt_")
    counts = await demo.count_rows(settings, made.org_id)
    assert counts == {"warehouses": 1, "skus": 3, "channels": 1, "carrier_accounts": 2, "orders": 0}
    received = await as_org(settings, made.org_id, stock)
    assert received == [("MUG", 25), ("POSTER", 3), ("TEE-M", 40)]

    second = demo.Sandboxes.start(ANY_PORT)  # other free ports: the accounts must follow
    try:
        assert second.fedex.url != first.fedex.url
        again = await demo.ensure_base(settings, second)
        assert not again.created and again.org_id == made.org_id
        assert (again.token, again.password, again.webhook_secret) == (
            made.token,
            made.password,
            made.webhook_secret,
        )
        assert await demo.count_rows(settings, made.org_id) == counts
        assert await as_org(settings, made.org_id, stock) == received  # never received twice
        assert await as_org(settings, made.org_id, base_urls) == {
            "fedex": second.fedex.url,
            "dhl_express": second.dhl.api_url,
        }

        # A revoked token is replaced; a password changed since is no longer shown.
        async def revoke_and_reset(session: Any) -> None:
            token = (
                await session.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(made.token)))
            ).scalar_one()
            await revoke_token(session, token.id)
            await reset_password(session, email=demo.OWNER_EMAIL, password="another password 123")

        await as_org(settings, made.org_id, revoke_and_reset)
        third = await demo.ensure_base(settings, second)
        assert third.token != made.token and third.token.startswith("rpt_") and third.password is None
        fourth = await demo.ensure_base(settings, second)
        assert fourth.token == third.token  # the replacement is kept in turn
    finally:
        second.stop()
    assert (tmp_path / "demo.json").stat().st_mode & 0o077 == 0  # the kept token is the owner's only
