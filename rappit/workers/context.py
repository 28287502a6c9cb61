"""What every job receives: arq's `ctx` (its own keys: redis, job_id, job_try) carries ours as one
typed object under "deps", made once in `on_startup`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.platform.crypto import SecretBox
from rappit.platform.db import make_engine, make_sessionmaker
from rappit.platform.settings import Settings
from rappit.shipping.accounts import Carriers

Ctx = dict[Any, Any]
"""arq's job context, as arq types it."""
INBOX_SESSIONS = 8
"""Default of `Deps.inbox_sessions`."""


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # system_*: SYSTEM_DATABASE_URL, the BYPASSRLS role, for the cross-org reads of the crons only
    system_engine: AsyncEngine
    system_sessionmaker: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    channels: ChannelRegistry
    carriers: Carriers
    """One httpx client and one breaker board for the worker process's carrier calls."""
    webhook_backoff: tuple[float, ...] = (2.0, 10.0, 30.0)
    """Seconds before the 2nd, 3rd... attempt of a failed webhook event."""
    fulfillment_backoff: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)
    """Seconds before the 2nd, 3rd... attempt of a fulfillment push the channel did not take."""
    sweep_grace_seconds: float = 20.0
    """How long a fulfillment push or carrier callback may stay pending before its sweeper re-enqueues it."""
    inbox_batch: int = 200
    """Webhook events one claim takes (shared fairly among the orgs that have some pending)."""
    inbox_loops: int = 2
    """Claim loops per worker process (one applies a batch while another claims the next)."""
    inbox_poll_seconds: float = 0.5
    """How long an idle claim loop waits for a NOTIFY before it claims anyway (retries come due)."""
    inbox_gather_seconds: float = 0.05
    """After a wake-up, how long a claim loop lets events gather before it claims: a trickle then goes
    in batches too, not one event per transaction (a bound on the latency it adds)."""
    inbox_sessions: int = INBOX_SESSIONS
    """Inbox transactions one process runs at once, batch and one-event together, across all its claim
    loops and orgs (the one-event path overlaps slow channel fetches). At most the pool's size plus
    overflow (`build` narrows it), so a backlog over many orgs queues on this gate instead of timing
    out on the pool."""
    inbox_gate: asyncio.Semaphore = field(init=False)
    callback_backoff: tuple[float, ...] = (2.0, 10.0, 30.0, 60.0)
    """Seconds before the 2nd, 3rd... attempt of a failed carrier callback."""
    label_void_backoff: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)
    """Seconds before the 2nd, 3rd... attempt of a failed void of a cancelled order's label."""
    label_void_attempts: int = 5
    """Tries of one label void before it is dead-lettered (below the job's arq max_tries)."""
    import_backoff: tuple[float, ...] = (2.0, 10.0, 30.0)
    """Seconds before the 2nd, 3rd... attempt of a failed import job."""
    import_sweep_grace_seconds: float = 30.0
    """How long an import may stay queued or running before the sweeper enqueues it (again)."""
    reconcile_budget_seconds: float | None = None
    """How long one reconciliation run follows a channel's pages (default: 60 % of the job timeout)."""
    shipment_recovery_after_seconds: float = 120.0
    """A `pending` shipment this old has had its label call end (longer than any carrier read timeout):
    the recovery job asks the carrier what became of it."""

    def __post_init__(self) -> None:
        if self.inbox_sessions < 1:
            raise ValueError("inbox_sessions must be at least 1")
        object.__setattr__(self, "inbox_gate", asyncio.Semaphore(self.inbox_sessions))

    @classmethod
    def build(cls, settings: Settings, *, pool_size: int = 10, max_overflow: int = 12, **tuning: Any) -> Deps:
        if not settings.system_database_url:
            raise RuntimeError("the worker needs SYSTEM_DATABASE_URL (the BYPASSRLS role) for cross-org jobs")
        # A gate wider than the pool would not keep the inbox off the pool's timeout.
        tuning["inbox_sessions"] = min(tuning.get("inbox_sessions", INBOX_SESSIONS), pool_size + max_overflow)
        engine = make_engine(settings, pool_size=pool_size, max_overflow=max_overflow)
        # Cross-org reads (sweeper, expiry, reconciliation, purge) are a few cron queries: a small pool.
        system = make_engine(settings, url=settings.system_database_url, pool_size=2, max_overflow=2)
        box = SecretBox(settings.encryption_keys)
        carriers = Carriers(http=httpx.AsyncClient(), breakers=BreakerBoard(settings.redis_url), box=box)
        return cls(
            settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine),
            system_engine=system, system_sessionmaker=make_sessionmaker(system, system=True),
            secret_box=box, channels=ChannelRegistry.from_settings(settings), carriers=carriers,
            **tuning,
        )  # fmt: skip

    async def close(self) -> None:
        await self.engine.dispose()
        await self.system_engine.dispose()
        await self.carriers.http.aclose()
        self.carriers.breakers.close()


def deps(ctx: Ctx) -> Deps:
    found = ctx["deps"]
    assert isinstance(found, Deps), "the worker's on_startup did not run"
    return found


def redis(ctx: Ctx) -> ArqRedis:
    found = ctx["redis"]
    assert isinstance(found, ArqRedis)
    return found
