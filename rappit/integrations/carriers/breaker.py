"""Circuit breakers per carrier account (pybreaker), their state shared through Redis.

Every API process and worker sees one state per account: five consecutive transport failures anywhere
open it for everyone, and after the reset timeout exactly one caller (in any process) makes the trial
call. pybreaker is synchronous and decorating an `async def` counts nothing, so a call is wrapped as
`async with breaker.guard(): await ...`, which runs pybreaker's `calling()` context around the await.

Storage: pybreaker asks its storage synchronously, so the storage below uses the blocking redis client
with short socket timeouts. On a local Redis each question is one ~0.1 ms round trip, 3-5 per carrier
call (measured in tests/integrations/test_breaker.py: the event loop's worst stall stays in the
low milliseconds). pybreaker's own `CircuitRedisStorage` was not used because it swallows Redis errors
(it cannot tell us to fall back) and raises from its constructor when Redis is down. When Redis fails,
every breaker of the process falls back to its per-process state for `retry_redis_after` seconds (one
log line per outage), so a dead or stalled Redis costs one short timeout now and then, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker
import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from rappit.integrations.carriers.base import CarrierUnavailable

log = structlog.get_logger("rappit.carriers.breaker")
T = TypeVar("T")
CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
KEY_PREFIX = "rappit:breaker"


class _RedisLink:
    """One process's view of whether Redis answers: shared by all its breakers, so an outage is
    noticed (and logged) once, and nobody waits on Redis again until `retry_after` has passed."""

    def __init__(self, client: redis.Redis | None, retry_after: float) -> None:
        self.client = client
        self.retry_after = retry_after
        self.down_until = 0.0 if client is not None else float("inf")
        self.outage_logged = False

    @property
    def shared(self) -> bool:
        return self.client is not None and time.monotonic() >= self.down_until

    def run(self, op: Callable[[redis.Redis], T]) -> T | None:
        """`op` on Redis, or None when Redis is (recently) down: the caller then uses its own state."""
        if not self.shared or self.client is None:
            return None
        try:
            result = op(self.client)
        except (redis.RedisError, OSError) as exc:
            self.down_until = time.monotonic() + self.retry_after
            if not self.outage_logged:
                self.outage_logged = True
                log.warning(
                    "breaker_state_per_process",
                    reason=type(exc).__name__,
                    retry_redis_after_seconds=self.retry_after,
                )
            return None
        if self.outage_logged:
            self.outage_logged = False
            log.info("breaker_state_shared_again")
        return result


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage in Redis, mirrored in memory: the mirror answers while Redis is down."""

    def __init__(self, name: str, link: _RedisLink) -> None:
        super().__init__(name)
        self._link = link
        self._memory = pybreaker.CircuitMemoryStorage(CLOSED)
        self._key = f"{KEY_PREFIX}:{name}"
        self._local_trial_until = 0.0

    def _k(self, field: str) -> str:
        return f"{self._key}:{field}"

    @property
    def state(self) -> str:
        raw = self._link.run(lambda r: r.get(self._k("state")))
        if raw is None:
            return self._memory.state if not self._link.shared else CLOSED
        state = raw.decode() if isinstance(raw, bytes) else str(raw)
        self._memory.state = state
        return state

    @state.setter
    def state(self, state: str) -> None:
        self._memory.state = state
        self._link.run(lambda r: r.set(self._k("state"), state))

    def increment_counter(self) -> None:
        self._memory.increment_counter()
        self._link.run(lambda r: r.incr(self._k("fails")))

    def reset_counter(self) -> None:
        self._memory.reset_counter()
        self._link.run(lambda r: r.set(self._k("fails"), 0))

    def increment_success_counter(self) -> None:
        self._memory.increment_success_counter()
        self._link.run(lambda r: r.incr(self._k("successes")))

    def reset_success_counter(self) -> None:
        self._memory.reset_success_counter()
        self._link.run(lambda r: r.set(self._k("successes"), 0))

    def _int(self, field: str, fallback: int) -> int:
        raw: Any = self._link.run(lambda r: r.get(self._k(field)))
        return fallback if raw is None else int(raw)

    @property
    def counter(self) -> int:
        return self._int("fails", self._memory.counter if not self._link.shared else 0)

    @property
    def success_counter(self) -> int:
        return self._int("successes", self._memory.success_counter if not self._link.shared else 0)

    @property
    def opened_at(self) -> datetime | None:
        raw: Any = self._link.run(lambda r: r.get(self._k("opened_at")))
        if raw is None:
            return self._memory.opened_at if not self._link.shared else None
        return datetime.fromtimestamp(float(raw), UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._memory.opened_at = now
        self._link.run(lambda r: r.set(self._k("opened_at"), repr(now.timestamp())))

    def claim_trial(self, ttl: float) -> bool:
        """The one trial call after the reset timeout: the first caller (in any process) gets it."""
        claimed = self._link.run(lambda r: r.set(self._k("trial"), b"1", nx=True, px=int(ttl * 1000)))
        if claimed is not None or self._link.shared:
            return bool(claimed)
        if time.monotonic() < self._local_trial_until:
            return False
        self._local_trial_until = time.monotonic() + ttl
        return True

    def release_trial(self) -> None:
        self._local_trial_until = 0.0
        self._link.run(lambda r: r.delete(self._k("trial")))


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One account's breaker as GET /api/v1/carriers/breakers shows it."""

    name: str
    state: str
    consecutive_failures: int
    retry_after_seconds: float
    shared: bool
    """False while Redis is down: this is the process's own view."""


class CarrierBreaker:
    """One carrier account's breaker in this process (its state lives in Redis)."""

    def __init__(
        self,
        carrier: str,
        account_id: str,
        link: _RedisLink,
        *,
        fail_max: int,
        reset_timeout: float,
        trial_ttl: float,
    ) -> None:
        self.carrier = carrier
        self.name = f"{carrier}:{account_id}"
        self._link = link
        self.storage = SharedStorage(self.name, link)
        self.trial_ttl = trial_ttl
        # throw_new_error_on_trip=False: the call that trips it raises its own error (a timeout, a 5xx),
        # which says more than "breaker opened"; the next call gets CarrierUnavailable.
        self.cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self.storage,
            name=self.name,
            throw_new_error_on_trip=False,
        )

    def _retry_after(self) -> float:
        opened = self.storage.opened_at
        if opened is None:
            return 0.0
        return max(0.0, opened.timestamp() + self.cb.reset_timeout - time.time())

    def unavailable(self, state: str, retry_after: float) -> CarrierUnavailable:
        return CarrierUnavailable(
            self.carrier,
            "breaker_open" if state == OPEN else "breaker_trial_in_progress",
            breaker_state=state,
            retry_after_seconds=retry_after,
        )

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the body as one call through the breaker: failures raised in it are counted (every
        exception is a failure: callers raise only for transport failures and 5xx); while open it
        raises CarrierUnavailable before the body runs, so nothing touches the network."""
        trial = False
        state = self.cb.current_state
        if state != CLOSED:
            retry_after = self._retry_after()
            if state == OPEN and retry_after > 0:
                raise self.unavailable(OPEN, retry_after)
            if not self.storage.claim_trial(self.trial_ttl):
                raise self.unavailable(HALF_OPEN, min(self.trial_ttl, 5.0))
            trial = True
        try:
            try:
                context = self.cb.calling()
                context.__enter__()
            except pybreaker.CircuitBreakerError:
                raise self.unavailable(OPEN, self._retry_after()) from None
            try:
                yield
            except BaseException as exc:
                # pybreaker counts it (or opens again on a failed trial) and re-raises it.
                if not context.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                context.__exit__(None, None, None)
        finally:
            if trial:
                self.storage.release_trial()

    def snapshot(self) -> BreakerSnapshot:
        state = self.cb.current_state
        return BreakerSnapshot(
            name=self.name,
            state=state,
            consecutive_failures=self.storage.counter,
            retry_after_seconds=round(self._retry_after(), 3) if state != CLOSED else 0.0,
            shared=self._link.shared,
        )


class BreakerBoard:
    """The breakers of one process, one per carrier account, made on first use."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        redis_timeout: float = 0.25,
        retry_redis_after: float = 5.0,
        trial_ttl: float = 60.0,
    ) -> None:
        """`redis_timeout` bounds every Redis question (connect and read); `trial_ttl` is how long one
        caller holds the trial call (longer than the carrier's connect + read timeouts)."""
        client = None
        if redis_url:
            client = redis.Redis.from_url(
                redis_url,
                socket_timeout=redis_timeout,
                socket_connect_timeout=redis_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        self._link = _RedisLink(client, retry_redis_after)
        self.fail_max, self.reset_timeout, self.trial_ttl = fail_max, reset_timeout, trial_ttl
        self._breakers: dict[str, CarrierBreaker] = {}

    @property
    def shared(self) -> bool:
        return self._link.shared

    def for_account(self, carrier: str, account_id: str) -> CarrierBreaker:
        key = f"{carrier}:{account_id}"
        if key not in self._breakers:
            self._breakers[key] = CarrierBreaker(
                carrier,
                account_id,
                self._link,
                fail_max=self.fail_max,
                reset_timeout=self.reset_timeout,
                trial_ttl=self.trial_ttl,
            )
        return self._breakers[key]

    def close(self) -> None:
        if self._link.client is not None:
            self._link.client.close()  # type: ignore[no-untyped-call]
