"""Fixed-window rate limits kept in Redis, shared by every API process.

Litestar's own RateLimitMiddleware reads and rewrites a JSON history under a process-local lock,
so two API processes can both let the 60th request through; here one atomic INCR (with the
window's expiry set in the same round trip) decides, whichever process asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from rappit.platform.batching import Batcher
from rappit.platform.errors import envelope

log = structlog.get_logger("rappit.ratelimit")

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}
"""
# Give back a slot taken by INCR (the outcome was not one the limit counts); never resurrect an
# expired key (a DECR on it would leave -1 with no expiry).
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def window_key(name: str, ident: str, window_seconds: int) -> str:
    return f"rappit:rl:{name}:{ident}:{int(time.time()) // window_seconds}"


async def take(redis: Redis, key: str, window_seconds: int) -> tuple[int, int]:
    """Count one against `key` (atomically, expiry set with the first): (count so far, seconds left)."""
    count, ttl = await redis.eval(_INCR, 1, key, str(window_seconds))  # type: ignore[misc]
    return int(count), int(ttl)


async def refund(redis: Redis, key: str) -> None:
    await redis.eval(_REFUND, 1, key)  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class FailureLimit:
    """At most `limit` failures per identity per fixed window, whatever address they come from (failed
    logins per account). A slot is taken before the attempt, so concurrent attempts cannot overshoot,
    and given back when the attempt did not fail; past the limit every attempt is refused, right or
    wrong, until the window ends. Fails open (logged) when Redis is down, as the request limits do."""

    name: str
    limit: int
    window_seconds: int

    async def attempt(self, redis: Redis, ident: str) -> tuple[str | None, int]:
        """(the slot's key, to `give_back` unless the attempt failed; seconds to wait if over, else 0)."""
        key = window_key(self.name, ident, self.window_seconds)
        try:
            count, ttl = await take(redis, key, self.window_seconds)
        except RedisError as exc:
            log.warning("ratelimit.redis_unavailable", policy=self.name, error=str(exc))
            return None, 0
        if count > self.limit:
            return None, max(ttl, 1)
        return key, 0

    async def give_back(self, redis: Redis, key: str | None) -> None:
        if key is None:
            return
        try:
            await refund(redis, key)
        except RedisError as exc:
            log.warning("ratelimit.redis_unavailable", policy=self.name, error=str(exc))


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    path_prefix: str
    limit: int
    window_seconds: int
    identify: Callable[[Request[Any, Any, Any]], str]
    counts_only: frozenset[int] = frozenset()
    """If set, only responses with these statuses count (the slot is given back otherwise): e.g.
    401s per address before authentication, so invented credentials cannot each get a bucket."""


def client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def channel_of_path(request: Request[Any, Any, Any]) -> str:
    """/webhooks/{type}/{channel_id}: one bucket per channel, whoever sends."""
    return request.url.path.rstrip("/").rsplit("/", 1)[-1][:64]


class RateLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, redis: Callable[[], Redis], policies: list[Policy]) -> None:
        self._redis = redis
        self._policies = policies

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope["path"]
        conditional: list[tuple[Policy, str]] = []
        for policy in self._policies:
            if not path.startswith(policy.path_prefix):
                continue
            request: Request[Any, Any, Any] = Request(scope)
            key = window_key(policy.name, policy.identify(request), policy.window_seconds)
            try:
                count, ttl = await take(self._redis(), key, policy.window_seconds)
            except RedisError as exc:
                # Fail open: losing Redis must not take ingestion down; the event is logged.
                log.warning("ratelimit.redis_unavailable", policy=policy.name, error=str(exc))
                continue
            if int(count) > policy.limit:
                retry_after = max(int(ttl), 1)
                response = envelope(
                    request,
                    status=429,
                    code="RATE_LIMITED",
                    message=f"too many requests; retry in {retry_after} s",
                    details={
                        "limit": policy.limit,
                        "window_seconds": policy.window_seconds,
                        "policy": policy.name,
                    },
                    headers={"Retry-After": str(retry_after)},
                )
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)
                return
            if policy.counts_only:
                conditional.append((policy, key))
        if not conditional:
            await next_app(scope, receive, send)
            return
        status = 500

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, watch)
        except Exception as exc:  # handled further out (auth failures arrive here as exceptions)
            status = getattr(exc, "status_code", 500)
            raise
        finally:
            for policy, key in conditional:
                if status not in policy.counts_only:
                    try:
                        await refund(self._redis(), key)
                    except RedisError as exc:
                        log.warning("ratelimit.redis_unavailable", policy=policy.name, error=str(exc))


# Per delivery, in order: refused deliveries of its address so far (over the limit: -1, blocked, and
# the channel is not counted), else the channel's count after this one (with the window's expiry set
# by the first); the seconds left of whichever window refused it (0 if none did).
_WEBHOOK_BATCH = """
local window, refused_limit, channel_limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS, 2 do
  local refused = tonumber(redis.call('GET', KEYS[i]) or '0')
  if refused >= refused_limit then
    out[#out + 1] = -1
    out[#out + 1] = redis.call('TTL', KEYS[i])
  else
    local n = redis.call('INCR', KEYS[i + 1])
    if n == 1 then redis.call('EXPIRE', KEYS[i + 1], window) end
    out[#out + 1] = n
    if n > channel_limit then out[#out + 1] = redis.call('TTL', KEYS[i + 1]) else out[#out + 1] = 0 end
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Limited:
    policy: Policy
    retry_after: int


class WebhookLimits:
    """The webhook route's two limits, decided for a whole batch of deliveries in one Redis call.

    - `refused` (per client address): only refused deliveries count (`counts_only`), so a flash sale
      from a shop's few addresses is never throttled while an unsigned flood is stopped before the
      channel look-up. A delivery is let through while its address has fewer refusals than the limit
      in the window; each refusal is counted after it (`count_refusal`). Concurrent refusals of one
      address in flight when it reaches the limit all finish: the overshoot is bounded by the
      concurrency, not by time.
    - `channel` (per channel id from the path): every delivery counts, as the middleware counted it.

    Same keys and windows as `RateLimitMiddleware` (`window_key`); fails open when Redis is down.
    """

    def __init__(self, redis: Callable[[], Redis], refused: Policy, channel: Policy) -> None:
        self._redis = redis
        self.refused, self.channel = refused, channel
        if refused.window_seconds != channel.window_seconds:
            raise ValueError("both webhook limits share one window")
        self._batcher: Batcher[tuple[str, str], Limited | None] = Batcher(self._decide, concurrency=1)

    async def check(self, ip: str, channel: str) -> Limited | None:
        try:
            return await self._batcher.submit((ip, channel))
        except RedisError as exc:  # fail open: losing Redis must not take ingestion down
            log.warning("ratelimit.redis_unavailable", policy=self.channel.name, error=str(exc))
            return None

    async def _decide(self, items: list[tuple[str, str]]) -> list[Limited | None]:
        window = self.channel.window_seconds
        keys: list[str] = []
        for ip, channel in items:
            keys.append(window_key(self.refused.name, ip, window))
            keys.append(window_key(self.channel.name, channel, window))
        out = await self._redis().eval(  # type: ignore[misc]
            _WEBHOOK_BATCH, len(keys), *keys, str(window), str(self.refused.limit), str(self.channel.limit)
        )
        answers: list[Limited | None] = []
        for i in range(len(items)):
            count, ttl = int(out[2 * i]), int(out[2 * i + 1])
            if count < 0:
                answers.append(Limited(self.refused, max(ttl, 1)))
            elif count > self.channel.limit:
                answers.append(Limited(self.channel, max(ttl, 1)))
            else:
                answers.append(None)
        return answers

    async def count_refusal(self, ip: str) -> None:
        key = window_key(self.refused.name, ip, self.refused.window_seconds)
        try:
            await take(self._redis(), key, self.refused.window_seconds)
        except RedisError as exc:
            log.warning("ratelimit.redis_unavailable", policy=self.refused.name, error=str(exc))
