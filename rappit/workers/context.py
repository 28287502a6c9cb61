"""What every job receives: arq's own keys plus the clients made once in `on_startup`."""

from __future__ import annotations

from typing import TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rappit.integrations.channels.registry import ChannelRegistry
from rappit.platform.crypto import SecretBox
from rappit.platform.settings import Settings


class WorkerContext(TypedDict, total=False):
    # arq's
    redis: ArqRedis
    job_id: str
    job_try: int
    # made in on_startup (tests may pass settings and the tuning knobs below in ctx)
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # system_*: SYSTEM_DATABASE_URL, the BYPASSRLS role, for the cross-org reads of the crons only
    system_engine: AsyncEngine
    system_sessionmaker: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    channels: ChannelRegistry
    webhook_backoff: tuple[float, ...]
    """Seconds before the 2nd, 3rd... attempt of a failed webhook event."""
    sweep_grace_seconds: float
    """How long an inbox row may stay pending before the sweeper re-enqueues it."""
