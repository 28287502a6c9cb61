"""Carrier accounts of an org: create (credentials encrypted, callback secret shown once), list, disable,
and the adapter of an account (its breaker shared by every process)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.integrations.carriers.base import CarrierAdapter
from rappit.integrations.carriers.breaker import BreakerBoard, BreakerSnapshot
from rappit.integrations.carriers.registry import CARRIER_NAMES, adapter_class, adapter_for
from rappit.integrations.carriers.transport import Timeouts
from rappit.platform.crypto import SecretBox
from rappit.platform.db import add_unique, get_or_404, utcnow
from rappit.platform.errors import BadRequest, Conflict
from rappit.shipping.models import CarrierAccount


@dataclass(frozen=True, slots=True)
class Carriers:
    """What calling carriers needs, made once per process: one httpx client, one breaker board."""

    http: httpx.AsyncClient
    breakers: BreakerBoard
    box: SecretBox
    timeouts: Timeouts | None = None

    def adapter(self, account: CarrierAccount) -> CarrierAdapter:
        credentials: dict[str, str] = json.loads(self.box.decrypt(account.credentials))
        return adapter_for(
            account.carrier,
            account_id=str(account.id),
            credentials=credentials,
            account_number=account.account_number,
            base_url=account.base_url,
            http=self.http,
            breakers=self.breakers,
            timeouts=self.timeouts,
        )


@dataclass(frozen=True, slots=True)
class WithSecret:
    account: CarrierAccount
    callback_secret: str
    """Plaintext, returned once at creation and never stored unencrypted."""


async def create_account(
    session: AsyncSession,
    box: SecretBox,
    *,
    carrier: str,
    name: str,
    credentials: Mapping[str, str],
    account_number: str,
    base_url: str | None,
) -> WithSecret:
    if carrier not in CARRIER_NAMES:
        raise BadRequest(f"unknown carrier {carrier!r}", code="UNKNOWN_CARRIER")
    try:  # the carrier's settings class names every missing credential
        adapter_class(carrier).for_account(
            credentials,
            account_number=account_number,
            base_url=base_url,
            http=None,  # type: ignore[arg-type]
            breaker=None,
        )
    except ValueError as exc:
        raise BadRequest(str(exc), code="INVALID_CREDENTIALS") from None
    secret = secrets.token_urlsafe(32)
    account = CarrierAccount(
        carrier=carrier,
        name=name.strip(),
        account_number=account_number.strip(),
        base_url=base_url.rstrip("/") if base_url else None,
        credentials=box.encrypt(json.dumps(dict(credentials))),
        callback_secret=box.encrypt(secret),
    )
    await add_unique(
        session, account, Conflict(f"a carrier account named {name!r} exists", code="CARRIER_ACCOUNT_EXISTS")
    )
    return WithSecret(account, secret)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> CarrierAccount:
    return await get_or_404(session, CarrierAccount, account_id, "carrier account")


async def list_accounts(
    session: AsyncSession, *, active_only: bool = False, limit: int = 200, offset: int = 0
) -> list[CarrierAccount]:
    query = select(CarrierAccount).order_by(CarrierAccount.created_at, CarrierAccount.id)
    if active_only:
        query = query.where(CarrierAccount.status == "active")
    return list((await session.execute(query.limit(limit).offset(offset))).scalars())


async def disable_account(session: AsyncSession, account_id: uuid.UUID) -> CarrierAccount:
    account = await get_account(session, account_id)
    if account.status != "disabled":
        account.status = "disabled"
        account.disabled_at = utcnow()
    return account


async def set_base_url(session: AsyncSession, account_id: uuid.UUID, base_url: str | None) -> CarrierAccount:
    """Point an account at another API address (`rappit up` moves its demo accounts to the sandboxes'
    ports of this run)."""
    account = await get_account(session, account_id)
    account.base_url = base_url.rstrip("/") if base_url else None
    return account


async def breaker_states(
    session: AsyncSession, breakers: BreakerBoard
) -> list[tuple[CarrierAccount, BreakerSnapshot]]:
    """Each account's breaker as every process sees it (Redis), or this process's view if Redis is down."""
    return [(a, breakers.for_account(a.carrier, str(a.id)).snapshot()) for a in await list_accounts(session)]
