"""The one way carrier clients send a request: through the account's breaker, with explicit timeouts,
retried (boundedly) only where the caller says the request is idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rappit.integrations.carriers.base import CarrierMessage, CarrierUnavailable
from rappit.integrations.carriers.breaker import CarrierBreaker


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per carrier account; the defaults suit a label call (FedEx answers ship requests in 1-5 s)."""

    connect: float = 5.0
    read: float = 20.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.read, pool=self.connect)


class _ServerError(Exception):
    """A 5xx inside the breaker: counted as a failure, then turned into CarrierUnavailable."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


RETRY_DELAYS = (0.2, 0.5)
"""Bounded retries for idempotent calls: two more attempts after short pauses, each through the breaker."""


async def send(
    http: httpx.AsyncClient,
    breaker: CarrierBreaker,
    method: str,
    url: str,
    *,
    timeouts: Timeouts,
    idempotent: bool,
    server_messages: Callable[[httpx.Response], tuple[CarrierMessage, ...]],
    **kwargs: Any,
) -> httpx.Response:
    """The carrier's answer for anything below 500; CarrierUnavailable for an open breaker, a
    transport failure or a 5xx (after the retries, if idempotent)."""
    delays = RETRY_DELAYS if idempotent else ()
    attempt = 0
    while True:
        try:
            async with breaker.guard():
                response = await http.request(method, url, timeout=timeouts.httpx(), **kwargs)
                if response.status_code >= 500:
                    raise _ServerError(response)
            return response
        except CarrierUnavailable:
            raise  # the breaker is open: retrying now would only wait for nothing
        except (httpx.TransportError, _ServerError) as exc:
            if attempt < len(delays):
                await asyncio.sleep(delays[attempt])
                attempt += 1
                continue
            raise _unavailable(breaker, exc, server_messages) from exc


def _unavailable(
    breaker: CarrierBreaker,
    exc: Exception,
    server_messages: Callable[[httpx.Response], tuple[CarrierMessage, ...]],
) -> CarrierUnavailable:
    state = breaker.cb.current_state
    retry_after = max(breaker.snapshot().retry_after_seconds, 1.0)
    if isinstance(exc, _ServerError):
        messages = server_messages(exc.response)
        detail = "; ".join(f"{m.code}: {m.text}" for m in messages) or str(exc)
        return CarrierUnavailable(
            breaker.carrier,
            "server_error",
            breaker_state=state,
            retry_after_seconds=retry_after,
            maybe_processed=True,
            detail=detail,
            carrier_messages=messages,
        )
    # Nothing was sent if the connection never opened; anything later may have reached the carrier.
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    return CarrierUnavailable(
        breaker.carrier,
        reason,
        breaker_state=state,
        retry_after_seconds=retry_after,
        maybe_processed=sent,
        detail=type(exc).__name__,
    )


def json_body(response: httpx.Response) -> Any:
    """The JSON of an answer, or None if it has none (a proxy's HTML error page)."""
    try:
        return response.json()
    except ValueError:
        return None
