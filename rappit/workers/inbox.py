"""The webhook inbox's consumer: workers claim pending events themselves, fairly across orgs, and
apply them in batches (issue 11). No job per event: ingress only stores the row, then NOTIFYs
`rappit_inbox` in a transaction of its own (`rappit.channels.ingest.InboxWaker`), which wakes the
claim loops (a short poll is the fallback, and picks up retries whose backoff ran out).

A claim is one statement as the worker's system role: it visits every org with claimable events
(round-robin, a share of the batch each, so one org's backlog of thousands cannot starve another
org's fresh event), locks its picks with `FOR UPDATE SKIP LOCKED` (concurrent claimers never take
the same rows), leases them (`next_attempt_at` = now + the job timeout), and commits. A run is
counted when it starts, in its own committed statement before any work (the org's batch, then each
one-event run): a run that dies or hangs still counts, its lease runs out and the next claim takes
the event again, and once MAX_UNFINISHED runs died without recording an outcome the next run
dead-letters it untried. Events claimed but not started when their worker dies are not charged: the
30-minute chaos soak (a worker killed every few seconds) dead-lettered healthy events at the tail of
long per-order chains that were claimed ten times and never reached. The batch gives back the count
of the events it leaves to the one-event path, in its own transaction, since they are counted again
there.

The work, per org and as that org: one transaction locks the claimed rows that are still open and
applies what the set-based path can (`orders.jobs.apply_batch`: fresh creates with known SKUs and
enough stock, all orders, lines, reservations, ledger rows and events in one statement each); every
other event (updates, cancels, edits that fetch from the channel, short stock, poison) goes the
one-event path afterwards in its own transaction, in received order per (channel, external id).
A failure of the batch transaction sends all its events the one-event path, so a poison event
cannot sink its batch. A failed event is recorded in a fresh transaction: retried after a backoff
(`next_attempt_at`), or dead-lettered after MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels import inbox
from rappit.channels.models import WebhookEvent
from rappit.integrations.channels.base import ChannelActionNeeded
from rappit.integrations.channels.canonical import PayloadError
from rappit.orders.jobs import EventRow, apply_batch, apply_event
from rappit.platform.db import assert_bypasses_rls, provide_session, utcnow
from rappit.platform.logging import bind_request_id
from rappit.platform.settings import Settings
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.scoping import install_scoping
from rappit.workers import dead_letters
from rappit.workers.context import Ctx, Deps, deps

log = structlog.get_logger("rappit.workers.inbox")
MAX_ATTEMPTS = 3
"""Recorded failures (an error, a timeout inside the run) before an event is dead-lettered."""
MAX_UNFINISHED = 10
"""Runs that started and never recorded an outcome (their worker was killed, or the lease ran out)
before an event is dead-lettered untried: a worker killed during a batch costs every event in it a
run, so this is counted apart from real failures (the chaos soak dead-lettered healthy events
after three kills), yet an event that kills every worker that takes it still ends."""
EXPECTED = (PayloadError, ChannelActionNeeded)
"""Failures that need no stack trace in the log: the payload or the channel is at fault."""
UNFINISHED = "an earlier attempt did not finish (it timed out or its worker died)"
JOB = inbox.JOB
"""The name dead letters of webhook events carry (the work that failed)."""
CHANNEL = "rappit_inbox"
"""The NOTIFY channel ingress signals after storing events (and an operator's retry, at its commit)."""
ACTOR = Actor(kind="system", id="webhook-processor")


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    org_id: uuid.UUID


_ORGS = text(
    """WITH RECURSIVE o AS (
         (SELECT org_id FROM webhook_events WHERE status IN ('pending','failed') ORDER BY org_id LIMIT 1)
         UNION ALL
         SELECT (SELECT w.org_id FROM webhook_events w
                  WHERE w.status IN ('pending','failed') AND w.org_id > o.org_id
                  ORDER BY w.org_id LIMIT 1)
           FROM o WHERE o.org_id IS NOT NULL
       )
       SELECT org_id FROM o WHERE org_id IS NOT NULL"""
)
"""Every org with open events: a skip scan of the claim index, one probe per org."""

_CLAIM = text(
    """WITH picked AS (
         SELECT e.id FROM unnest(CAST(:orgs AS uuid[])) AS o(org_id)
         CROSS JOIN LATERAL (
           SELECT w.id FROM webhook_events w
            WHERE w.org_id = o.org_id AND w.status IN ('pending','failed')
              AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= now())
            ORDER BY w.received_at
            LIMIT :per_org
            FOR UPDATE SKIP LOCKED) e
       )
       UPDATE webhook_events w
          SET next_attempt_at = now() + make_interval(secs => :lease)
         FROM picked WHERE w.id = picked.id
       RETURNING w.id, w.org_id, w.received_at"""
)
_START = text(
    """UPDATE webhook_events
          SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
        WHERE id = ANY(CAST(:ids AS uuid[])) AND status IN ('pending','failed')
    RETURNING id, attempts, failures, last_error"""
)
"""A run starts: its attempt counted (and committed) before any work, its lease renewed (waiting for
a slot may have used some of the claim's)."""
_GIVE_BACK = text(
    "UPDATE webhook_events SET attempts = attempts - 1 WHERE id = ANY(CAST(:ids AS uuid[])) AND attempts > 0"
)
"""The batch's count of the events it left: their one-event run counts itself."""


class Claimer:
    """One process's claim state: where its round-robin over orgs resumes."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.after: uuid.UUID | None = None

    async def claim(self, d: Deps) -> list[Claimed]:
        """Claim up to `batch` events, a fair share from each org with claimable events (oldest first
        within an org), and commit their leases. Cross-org by nature, so on the
        system role; nothing here reads or writes a payload or an order."""
        async with d.system_engine.begin() as conn:
            orgs = [r[0] for r in (await conn.execute(_ORGS)).all()]
            if not orgs:
                return []
            # Round-robin: start after the org served first last time, and when there are more orgs
            # than the batch holds, serve the next `batch` of them.
            if self.after is not None:
                cut = next((i for i, o in enumerate(orgs) if o > self.after), 0)
                orgs = orgs[cut:] + orgs[:cut]
            orgs = orgs[: self.batch]
            self.after = orgs[0]
            per_org = max(1, math.ceil(self.batch / len(orgs)))
            rows = (
                await conn.execute(_CLAIM, {"orgs": orgs, "per_org": per_org, "lease": float(_lease(d))})
            ).all()
        rows = sorted(rows, key=lambda r: r.received_at)
        return [Claimed(r.id, r.org_id) for r in rows]


def unfinished(attempts: int, failures: int) -> int:
    """Earlier runs of an event (the current claim's is counted in `attempts`) that recorded nothing."""
    return attempts - 1 - failures


def _lease(d: Deps) -> int:
    """How long a claim keeps other claimers off: the job timeout (a run's work is bounded inside it)."""
    return max(1, d.settings.job_timeout_seconds)


def _budget(d: Deps) -> float:
    """The work's own deadline, inside the lease, so that a slow run is a counted failure with a
    retry before another claimer could take the event."""
    return max(d.settings.job_timeout_seconds * 0.8, d.settings.job_timeout_seconds - 5)


async def process_claimed(d: Deps, claimed: Sequence[Claimed]) -> dict[str, int]:
    """Apply claimed events: each org's share in its own transactions, orgs concurrently. Returns
    how many events ended how (created/updated/ignored/retry/dead...).

    Every unit of work that holds a connection (an org's batch transaction, a chain of one-event
    runs, a dead-lettering) first takes a slot of `d.inbox_gate`, one per process and below its pool,
    and uses one connection at a time inside it: however many orgs and loops, the pool is never
    asked for more than it has."""
    by_org: dict[uuid.UUID, list[Claimed]] = defaultdict(list)
    for c in claimed:
        by_org[c.org_id].append(c)
    tally: dict[str, int] = defaultdict(int)
    results = await asyncio.gather(*(_process_org(d, org, rows) for org, rows in by_org.items()))
    for outcomes in results:
        for outcome in outcomes:
            tally[outcome] += 1
    return dict(tally)


async def _process_org(d: Deps, org_id: uuid.UUID, rows: list[Claimed]) -> list[str]:
    outcomes: list[str] = []
    left: list[tuple[uuid.UUID, Any]] = []
    with org_context(org_id, ACTOR):
        async with d.inbox_gate:
            live: list[uuid.UUID] = []
            for event_id, attempts, failures, last_error in await _start(d, [c.id for c in rows]):
                if unfinished(attempts, failures) >= MAX_UNFINISHED:
                    outcomes.append(
                        await _failed(d, event_id, last_error or UNFINISHED, unfinished_runs=True)
                    )
                else:
                    live.append(event_id)
            if live:
                left = await _batch(d, org_id, live, outcomes)
    if left:
        outcomes.extend(await _one_by_one(d, org_id, left))
    return outcomes


async def _start(d: Deps, ids: list[uuid.UUID]) -> list[Any]:
    """Count a run of each still-open event, committed: (id, attempts, failures, last_error) rows."""
    async with provide_session(d.sessionmaker) as session:
        return list((await session.execute(_START, {"ids": ids, "lease": float(_lease(d))})).all())


async def _batch(
    d: Deps, org_id: uuid.UUID, live: list[uuid.UUID], outcomes: list[str]
) -> list[tuple[uuid.UUID, Any]]:
    """The set-based path over the org's started events; returns what it left for the one-event path
    (their counts given back), or all of them if the batch failed."""
    try:
        async with asyncio.timeout(_budget(d)):
            async with provide_session(d.sessionmaker) as session:
                events = await _lock_open(session, live)
                result = await apply_batch(session, d.channels, events)
                if result.left:
                    await session.execute(_GIVE_BACK, {"ids": [event_id for event_id, _ in result.left]})
        for done in result.done:
            structlog.contextvars.bind_contextvars(
                event_id=str(done.event_id), org_id=str(org_id), channel_id=str(done.channel_id)
            )
            log.info(
                "webhook.processed",
                outcome=done.outcome,
                topic=done.topic,
                external_id=done.external_id,
                order_id=str(done.order_id) if done.order_id else None,
                order_number=done.order_number,
                request_id=done.request_id,
            )
            outcomes.append(done.outcome)
        return result.left
    except Exception as exc:  # the batch as a whole failed: each event goes the one-event path,
        # one after another in arrival order (which events share an order is not known here)
        log.warning("webhook.batch_failed", events=len(live), error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):  # if this fails too, the batch's run stays counted
            async with provide_session(d.sessionmaker) as session:
                await session.execute(_GIVE_BACK, {"ids": live})
        return [(event_id, None) for event_id in live]
    finally:
        structlog.contextvars.unbind_contextvars("event_id", "channel_id")


async def _lock_open(session: AsyncSession, ids: list[uuid.UUID]) -> list[EventRow]:
    """The claimed events still open, row-locked to commit (another run may have finished one)."""
    rows = await session.execute(
        text(
            """SELECT id, channel_id, topic, payload, request_id FROM webhook_events
                WHERE id = ANY(CAST(:ids AS uuid[])) AND status IN ('pending','failed')
                ORDER BY received_at, id
                FOR UPDATE"""
        ),
        {"ids": ids},
    )
    return [EventRow(*r) for r in rows.all()]


async def _one_by_one(d: Deps, org_id: uuid.UUID, left: list[tuple[uuid.UUID, Any]]) -> list[str]:
    """The one-event path for what the batch left: in received order within a (channel, external
    id), different orders concurrently (bounded by the process's gate), each event in its own
    transaction."""
    chains: dict[Any, list[uuid.UUID]] = defaultdict(list)
    for event_id, key in left:
        chains[key].append(event_id)
    outcomes: list[str] = []

    async def chain(ids: list[uuid.UUID]) -> None:
        async with d.inbox_gate:  # taken before each event's deadline starts: waiting is not failing
            for event_id in ids:
                outcomes.append(await _count_and_run(d, org_id, event_id))

    await asyncio.gather(*(chain(ids) for ids in chains.values()))
    return outcomes


async def _run_one(d: Deps, org_id: uuid.UUID, event_id: uuid.UUID) -> str:
    """Apply one event whose run is counted; a failure is recorded, never raised."""
    structlog.contextvars.bind_contextvars(event_id=str(event_id), org_id=str(org_id))
    try:
        with org_context(org_id, ACTOR):
            try:
                async with asyncio.timeout(_budget(d)):
                    outcome = await _apply(d, event_id)
            except Exception as exc:  # any failure, a timeout included, is recorded: the others go on
                error = f"{type(exc).__name__}: {exc}"
                trace = None if isinstance(exc, EXPECTED) else traceback.format_exc(limit=5)
                log.warning("webhook.processing_failed", error=error, trace=trace)
                return await _failed(d, event_id, error)
        log.info("webhook.processed", outcome=outcome)
        return outcome
    finally:
        structlog.contextvars.unbind_contextvars(
            "event_id", "channel_id", "topic", "external_id", "order_id", "order_number", "request_id"
        )


async def process_webhook_event(ctx: Ctx, org_id: str, event_id: str) -> str:
    """One event end to end, as a claim would take it: count the attempt (and lease it), apply it,
    record the outcome. Returns the outcome, "retry" (failed, scheduled again) or "dead". For
    operators and tests; the claim loops do the same for batches."""
    d, eid, oid = deps(ctx), uuid.UUID(event_id), uuid.UUID(org_id)
    async with d.inbox_gate:
        return await _count_and_run(d, oid, eid)


async def _count_and_run(d: Deps, oid: uuid.UUID, eid: uuid.UUID) -> str:
    with org_context(oid, ACTOR):
        started = await _start(d, [eid])
        if not started:
            return "done"  # gone, or already applied by an earlier run
        _, attempts, failures, last_error = started[0]
        if unfinished(attempts, failures) >= MAX_UNFINISHED:
            return await _failed(d, eid, last_error or UNFINISHED, unfinished_runs=True)
    return await _run_one(d, oid, eid)


async def _apply(d: Deps, event_id: uuid.UUID) -> str:
    async with provide_session(d.sessionmaker) as session:
        event = await inbox.lock(session, event_id)
        if event is None or event.status in inbox.DONE:
            return "done"  # another run got here first
        bind_request_id(event.request_id)
        structlog.contextvars.bind_contextvars(channel_id=str(event.channel_id), topic=event.topic)
        order, outcome = await apply_event(session, d.channels, d.secret_box, event)
        inbox.mark_done(event, order.id if order else None)
        event.next_attempt_at = None
    if order is not None:  # committed: the later lines (and "processed") name the order
        structlog.contextvars.bind_contextvars(order_id=str(order.id), order_number=order.number)
    return outcome


async def _failed(d: Deps, event_id: uuid.UUID, error: str, *, unfinished_runs: bool = False) -> str:
    """Record the failure in a fresh transaction; retry after a backoff, or dead-letter after the last
    try (`unfinished_runs`: the event used up its budget of runs that died, dead-letter it untried).
    Returns "retry", "dead" or "done" (another run finished it meanwhile)."""
    async with provide_session(d.sessionmaker) as session:
        event = await inbox.lock(session, event_id)
        if event is None or event.status in inbox.DONE:
            return "done"
        event.last_error = error[:4000]
        if not unfinished_runs:  # a run that got to record its failure
            event.failures += 1
        if unfinished_runs or event.failures >= MAX_ATTEMPTS:
            await _dead(session, event, error)
            event.next_attempt_at = None
            return "dead"
        event.status = "failed"
        retry_in = d.webhook_backoff[min(event.failures - 1, len(d.webhook_backoff) - 1)]
        event.next_attempt_at = utcnow() + timedelta(seconds=retry_in)
    return "retry"


async def _dead(session: AsyncSession, event: WebhookEvent, error: str) -> None:
    event.status = "dead"
    await dead_letters.record(
        session,
        org_id=event.org_id,
        kind=dead_letters.WEBHOOK_EVENT,
        ref_id=event.id,
        job_name=JOB,
        payload={
            "channel_id": str(event.channel_id),
            "topic": event.topic,
            "delivery_id": event.delivery_id,
            "body": event.payload.decode("utf-8", "replace")[:100_000],
        },
        error=error,
        attempts=event.attempts,
    )


async def _open_events(d: Deps) -> tuple[int, float | None]:
    """(open events, seconds until the earliest one is claimable: 0 if now, None if there are none)."""
    async with d.system_engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    """SELECT count(*), EXTRACT(EPOCH FROM min(coalesce(next_attempt_at, now())) - now())
                         FROM webhook_events WHERE status IN ('pending','failed')"""
                )
            )
        ).one()
    return int(row[0]), (max(0.0, float(row[1])) if row[1] is not None else None)


async def drain(d: Deps, *, max_seconds: float = 60.0, horizon: float | None = None) -> dict[str, int]:
    """Claim and apply until no open event is due within `horizon` seconds (default: the longest
    backoff or lease, so retries and a dead worker's leases are waited for). For tests, the CLI and
    benchmarks; the serving loop is `serve`."""
    horizon = horizon if horizon is not None else max(max(d.webhook_backoff), _lease(d)) + 1
    claimer = Claimer(d.inbox_batch)
    tally: dict[str, int] = defaultdict(int)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        claimed = await claimer.claim(d)
        if claimed:
            for k, v in (await process_claimed(d, claimed)).items():
                tally[k] += v
            continue
        count, wait = await _open_events(d)
        if not count or wait is None or wait > horizon:
            break
        await asyncio.sleep(min(max(wait, 0.02), 0.5))
    return dict(tally)


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN asyncpg.connect takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def serve(d: Deps, stop: asyncio.Event | None = None) -> None:
    """The claim loops of one worker process, until `stop` (or cancellation): `inbox_loops` loops
    share one LISTEN connection; each claims and applies, and when a claim comes back empty waits for
    a NOTIFY or the poll interval. A lost LISTEN connection is retried; polling goes on meanwhile."""
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    claimer = Claimer(d.inbox_batch)
    claiming = asyncio.Lock()  # the loops claim in turn: a wake-up is not claimed twice over

    async def listen() -> None:
        url = d.settings.system_database_url or d.settings.database_url or ""
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
                await conn.add_listener(CHANNEL, lambda *_: wake.set())
                wake.set()  # anything stored while we were not listening
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=5)
                    if not stop.is_set():
                        await conn.execute("SELECT 1", timeout=5)  # raises once the connection is gone
            except Exception as exc:  # the database is away: the loops poll meanwhile; retry later
                log.warning("inbox.listen_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)

    async def loop() -> None:
        full = False
        while not stop.is_set():
            try:
                async with claiming:
                    if not full:  # woken (or polled) after an idle spell: let a trickle gather
                        await asyncio.sleep(d.inbox_gather_seconds)
                    wake.clear()  # before the claim: a NOTIFY during it makes the wait below return
                    claimed = await claimer.claim(d)
                full = len(claimed) >= max(1, d.inbox_batch // 4)  # a backlog: claim again at once
                if claimed:
                    tally = await process_claimed(d, claimed)
                    log.debug("inbox.batch", claimed=len(claimed), **tally)
                    continue
            except Exception as exc:  # the database went away mid-claim: back off, then go on
                log.warning("inbox.claim_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=d.inbox_poll_seconds)

    tasks = [asyncio.create_task(listen())] + [asyncio.create_task(loop()) for _ in range(d.inbox_loops)]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_inbox(settings: Settings, stop: asyncio.Event, **tuning: Any) -> None:
    """`rappit worker`'s inbox side, beside its arq worker and independent of Redis: the claim loops
    with their own engines, until `stop`."""
    install_scoping()
    d = Deps.build(settings, **tuning)
    try:
        while True:  # the database may not be up yet: the arq side starts meanwhile
            try:
                await assert_bypasses_rls(d.system_engine)
                break
            except RuntimeError:
                raise  # the role is wrong: a configuration error, not an outage
            except Exception as exc:
                log.warning("inbox.database_unavailable", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2)
                if stop.is_set():
                    return
        log.info("inbox.started", loops=d.inbox_loops, batch=d.inbox_batch)
        await serve(d, stop)
    finally:
        await d.close()
