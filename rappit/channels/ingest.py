"""The webhook ingress fast path: cached channels, group-committed inbox rows, batched rate limits.

Per process, shared by every request:

- `ChannelCache`: what verifying a delivery needs (org, type, status, address, decrypted secret and
  the channel's `ingress_version`), read once through the SECURITY DEFINER look-up. It is never the
  authority: a delivery is stored only if its channel is still active at the version it was verified
  against (checked by `rappit_webhook_ingest` in the statement that stores it), so a rotated secret or
  a disabled channel takes effect for every process the moment its transaction commits. A 'stale'
  answer drops the entry; the request reloads the channel and is checked again. Entries also expire
  after `ttl` seconds (memory, not correctness).
- `InboxWriter`: gathers concurrent deliveries (of any channel and org) and stores them with ONE
  statement over raw asyncpg in autocommit: the statement is its own transaction, so when it returns
  every row in it is committed, and if it fails none is. Each request is answered only after that.
  Batches are small (`INGRESS_BATCH_ROWS`, 8) and several run at once (`INGRESS_CONNECTIONS`, 4): the
  requests a batch answers come back together, so their next deliveries arrive together, and one
  unbounded batch took them all again: the process then idled for the whole statement (0.8 of a
  core under wrk). Small batches overlap the statement of one with the work on the next.
- `InboxWaker`: after a batch stored new rows, one `pg_notify` in its own transaction wakes the
  workers' claim loops; coalesced, so a burst costs a NOTIFY or two, not one per batch.
Nothing is handed to the workers: they claim pending rows themselves (`rappit.workers.inbox`, woken by
the waker's NOTIFY, polling meanwhile), so no Redis round trip is on this path.

Why the NOTIFY is not in the insert's transaction (it was a statement trigger on `webhook_events`
until migration 0018): a transaction that NOTIFYs takes a database-wide lock before its commit and
holds it until its commit record is flushed (PostgreSQL's `PreCommit_Notify`, "serialize writers"),
so every insert batch committed alone, one WAL flush each, and no two batches shared a flush.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy.engine import make_url

from rappit.integrations.channels.base import Delivery
from rappit.platform.batching import Batcher
from rappit.platform.crypto import InvalidToken, SecretBox
from rappit.platform.errors import DependencyUnavailable
from rappit.platform.settings import Settings

log = structlog.get_logger("rappit.webhooks")
DB_ERRORS = (
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
"""What a raw asyncpg call raises when PostgreSQL is down, restarting or stalled (InternalClientError:
a connection whose protocol state a dropped server left broken, seen in the chaos soak's restart)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A channel as ingress sees it. `secret` is None when it cannot be decrypted (a key dropped)."""

    channel_id: uuid.UUID
    org_id: uuid.UUID
    type: str
    status: str
    address: str
    secret: str | None
    version: int
    loaded_at: float
    org_text: str
    channel_text: str
    """The ids as text, once per load (every delivery's log context carries them)."""


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def open_pool(settings: Settings, *, size: int) -> asyncpg.Pool:
    """Raw asyncpg connections as the app role (RLS binds them; nothing here sets an org), opened on
    first use: the API starts, and answers 503 where it needs the database, while PostgreSQL is down."""
    if not settings.database_url:
        raise RuntimeError("no DATABASE_URL configured")
    statement_ms = settings.db_statement_timeout_ms
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url),
        min_size=0,
        max_size=size,
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=statement_ms / 1000 + 1,
        server_settings={"application_name": "rappit-ingress", "statement_timeout": str(statement_ms)},
    )
    return pool


_TARGET = (
    "SELECT org_id, type, status, address, webhook_secret, ingress_version FROM rappit_webhook_channel($1)"
)


class ChannelCache:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox, *, ttl: float = 60.0, max_entries: int = 10_000):
        self.pool, self.box, self.ttl, self.max_entries = pool, box, ttl, max_entries
        self._entries: dict[uuid.UUID, Target] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[Target | None]] = {}
        self.loads = 0

    async def get(self, channel_id: uuid.UUID) -> Target | None:
        """The channel, or None if there is no such channel (unknown ids are not cached)."""
        entry = self._entries.get(channel_id)
        if entry is not None and time.monotonic() - entry.loaded_at < self.ttl:
            return entry
        loading = self._loading.get(channel_id)
        if loading is not None:  # one look-up per channel however many requests miss at once
            return await asyncio.shield(loading)
        future: asyncio.Future[Target | None] = asyncio.get_running_loop().create_future()
        self._loading[channel_id] = future
        try:
            target = await self._load(channel_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else need
            raise
        finally:
            del self._loading[channel_id]
        future.set_result(target)
        return target

    async def _load(self, channel_id: uuid.UUID) -> Target | None:
        self.loads += 1
        try:
            row = await self.pool.fetchrow(_TARGET, channel_id)
        except DB_ERRORS as exc:
            log.warning("webhook.channel_lookup_failed", error_type=type(exc).__name__, error=str(exc))
            raise DependencyUnavailable("postgres") from exc
        if row is None:
            self._entries.pop(channel_id, None)
            return None
        try:
            secret: str | None = self.box.decrypt(row["webhook_secret"])
        except InvalidToken:  # a key was dropped from ENCRYPTION_KEY too early
            log.error("webhook.secret_undecryptable", channel_id=str(channel_id))
            secret = None
        target = Target(
            channel_id=channel_id,
            org_id=row["org_id"],
            type=row["type"],
            status=row["status"],
            address=row["address"],
            secret=secret,
            version=row["ingress_version"],
            loaded_at=time.monotonic(),
            org_text=str(row["org_id"]),
            channel_text=str(channel_id),
        )
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[channel_id] = target
        return target

    def forget(self, channel_id: uuid.UUID) -> None:
        self._entries.pop(channel_id, None)


@dataclass(frozen=True, slots=True)
class Item:
    target: Target
    event_id: str
    """A UUID's text (asyncpg encodes it as a uuid)."""
    delivery: Delivery
    payload: bytes
    request_id: str | None


class InboxWriter:
    """Stores deliveries in batches: `store` answers 'accepted', 'duplicate' or 'stale' once committed."""

    SQL = (
        "SELECT n, outcome FROM rappit_webhook_ingest("
        "$1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[], "
        "$8::timestamptz[], $9::text[])"
    )
    """One statement, its own transaction (autocommit): all rows committed when it returns, none if it
    fails. A test may wrap it to make a batch fail after its insert ran."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        concurrency: int = 4,
        max_batch: int = 8,
        linger: float = 0.0,
        waker: InboxWaker | None = None,
    ) -> None:
        self.pool = pool
        self.waker = waker
        self.batcher: Batcher[Item, str] = Batcher(
            self._write, concurrency=concurrency, linger=linger, max_batch=max_batch
        )

    async def store(self, item: Item) -> str:
        """The outcome: accepted, duplicate or stale.

        If the batch's statement fails, nothing of it was stored, and every caller in it gets 503
        DEPENDENCY_UNAVAILABLE: the sender retries, and the dedup key makes a retry safe."""
        try:
            return await self.batcher.submit(item)
        except DB_ERRORS as exc:
            log.warning("webhook.store_failed", error_type=type(exc).__name__, error=str(exc))
            raise DependencyUnavailable("postgres") from exc

    async def _write(self, items: list[Item]) -> Sequence[str]:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
        channel, version, ids, topic, delivery_id, dedup, payload, triggered, request = columns
        for item in items:
            d = item.delivery
            channel.append(item.target.channel_id)
            version.append(item.target.version)
            ids.append(item.event_id)
            topic.append(d.topic)
            delivery_id.append(d.delivery_id)
            dedup.append(d.dedup_key)
            payload.append(item.payload)
            triggered.append(d.triggered_at)
            request.append(item.request_id)
        conn = await self.pool.acquire()
        try:
            rows = await conn.fetch(self.SQL, *columns)
        finally:
            try:
                await self.pool.release(conn)
            except DB_ERRORS as exc:  # the statement's outcome stands (committed, or raised above);
                # asyncpg has terminated the connection whose reset failed, and frees its slot
                log.warning("webhook.connection_release_failed", error_type=type(exc).__name__)
        outcomes = [outcome for _, outcome in rows]
        if self.waker is not None and "accepted" in outcomes:
            self.waker.wake()
        return outcomes

    async def close(self) -> None:
        await self.batcher.close()


class InboxWaker:
    """Wakes the claim loops (LISTEN `rappit_inbox`) after rows were committed: `pg_notify` in a
    transaction of its own, which writes nothing else, so the database-wide NOTIFY lock is only ever
    held by these, never by an insert. At most one NOTIFY is in flight; wakes asked for meanwhile
    cause exactly one more after it. Its commit is asynchronous (`synchronous_commit` off for that
    transaction only): the listeners are signalled at commit, and a NOTIFY lost in a crash costs at
    most one poll interval. A failure is logged and dropped for the same reason: the loops poll."""

    SQL = "SELECT set_config('synchronous_commit', 'off', true), pg_notify('rappit_inbox', '')"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.sent = 0
        """NOTIFYs sent so far (for tests: coalescing)."""

    def wake(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.pool.execute(self.SQL)
            except DB_ERRORS as exc:
                log.warning("webhook.wake_failed", error_type=type(exc).__name__, error=str(exc))
                return
            self.sent += 1
            if not self._again:
                return

    async def close(self) -> None:
        """Waits for a NOTIFY in flight (shutdown: the last stored rows' wake is not cut off)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Ingress:
    """Everything the webhook route shares in one process (created at start-up, closed at shutdown)."""

    pool: asyncpg.Pool
    channels: ChannelCache
    writer: InboxWriter
    waker: InboxWaker

    @classmethod
    async def start(cls, settings: Settings, box: SecretBox) -> Ingress:
        # A connection per concurrent batch, one for channel look-ups, one for the waker's NOTIFY.
        pool = await open_pool(settings, size=settings.ingress_connections + 2)
        waker = InboxWaker(pool)
        writer = InboxWriter(
            pool, concurrency=settings.ingress_connections, max_batch=settings.ingress_batch_rows, waker=waker
        )
        return cls(pool=pool, channels=ChannelCache(pool, box), writer=writer, waker=waker)

    async def close(self) -> None:
        await self.writer.close()
        await self.waker.close()
        await self.pool.close()
