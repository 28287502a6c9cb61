"""Background work for inventory: expiring reservations (cron, every minute)."""

from __future__ import annotations

from functools import partial

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rappit.inventory import reservations, stock
from rappit.inventory.models import Reservation
from rappit.platform.db import provide_session, utcnow
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import unscoped

log = structlog.get_logger("rappit.inventory.jobs")
EXPIRY = Actor(kind="system", id="reservation-expiry", label="reservation expiry sweep")


async def release_expired_reservations(
    sessionmaker: async_sessionmaker[AsyncSession], system_sessionmaker: async_sessionmaker[AsyncSession]
) -> int:
    """Find the orgs with expired active holds (one logged cross-org read as the system role), then
    release each org's holds in its own transaction, as that org (the app role, row-level security on),
    through the same service as a manual release."""
    now = utcnow()
    async with unscoped(
        system_sessionmaker, reason="expiry sweep: which orgs have expired reservations"
    ) as s:
        org_ids = list(
            (
                await s.execute(
                    select(Reservation.org_id)
                    .where(Reservation.status == "active", Reservation.expires_at <= now)
                    .distinct()
                )
            ).scalars()
        )
    released = 0
    for org_id in org_ids:
        with org_context(org_id, EXPIRY):
            async with provide_session(sessionmaker) as session:
                ids = await stock.with_retries(
                    session, partial(reservations.release_expired, session, now=now)
                )
        released += len(ids)
        log.info("inventory.reservations_expired", org_id=str(org_id), count=len(ids))
    return released
