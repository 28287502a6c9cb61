"""FedEx over HTTP: the OAuth token and the five calls, nothing else (the mapper builds and reads bodies).

The token is cached per client id until a minute before it expires and fetched again once when FedEx
answers 401 (expired early, revoked): one retry, then the 401 is the answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from rappit.integrations.carriers.breaker import CarrierBreaker
from rappit.integrations.carriers.fedex import mapper
from rappit.integrations.carriers.fedex.settings import FedExAccount
from rappit.integrations.carriers.transport import json_body, send

EXPIRY_MARGIN_SECONDS = 60


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class TokenCache:
    """Tokens of one process, per (API host, client id): FedEx limits token requests, and one token
    serves every call of that project for an hour."""

    _tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    fetched: int = 0
    """How many tokens this cache has asked FedEx for (tests and metrics)."""

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


TOKENS = TokenCache()
"""The process's cache, used unless a client is given its own."""


class FedExClient:
    def __init__(
        self,
        account: FedExAccount,
        http: httpx.AsyncClient,
        breaker: CarrierBreaker,
        tokens: TokenCache | None = None,
    ) -> None:
        self.account, self.http, self.breaker = account, http, breaker
        self.tokens = tokens if tokens is not None else TOKENS
        self._key = (account.base_url, account.client_id)

    async def _fetch_token(self) -> _Token:
        response = await send(
            self.http,
            self.breaker,
            "POST",
            f"{self.account.base_url}/oauth/token",
            timeouts=self.account.timeouts,
            idempotent=True,
            server_messages=lambda r: mapper.messages(json_body(r)),
            data={
                "grant_type": "client_credentials",
                "client_id": self.account.client_id,
                "client_secret": self.account.client_secret,
            },
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        body = json_body(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise TokenRefused(response.status_code, body)
        self.tokens.fetched += 1
        expires_in = float(body.get("expires_in") or 3599)
        return _Token(str(body["access_token"]), time.monotonic() + expires_in - EXPIRY_MARGIN_SECONDS)

    async def _token(self, *, stale: str | None = None) -> str:
        """A valid token; `stale` is one FedEx just refused, replaced unless someone already did."""
        async with self.tokens.lock(self._key):
            token = self.tokens._tokens.get(self._key)
            if token is None or token.value == stale or time.monotonic() >= token.expires_at:
                token = await self._fetch_token()
                self.tokens._tokens[self._key] = token
            return token.value

    async def _call(
        self, method: str, path: str, payload: dict[str, Any], *, idempotent: bool
    ) -> tuple[int, Any]:
        """(status, JSON) of a call; a 401 refreshes the token and tries once more."""
        token: str | None = None
        for attempt in range(2):
            try:
                token = await self._token(stale=token if attempt else None)
            except TokenRefused as refused:
                return refused.status, refused.body
            response = await send(
                self.http,
                self.breaker,
                method,
                f"{self.account.base_url}{path}",
                timeouts=self.account.timeouts,
                idempotent=idempotent,
                server_messages=lambda r: mapper.messages(json_body(r)),
                json=payload,
                headers={"authorization": f"Bearer {token}", "x-locale": "en_US"},
            )
            if response.status_code != 401:
                break
        return response.status_code, json_body(response)

    async def rate(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/rate/v1/rates/quotes", payload, idempotent=True)

    async def ship(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/ship/v1/shipments", payload, idempotent=False)

    async def cancel(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("PUT", "/ship/v1/shipments/cancel", payload, idempotent=False)

    async def track(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/track/v1/trackingnumbers", payload, idempotent=True)

    async def track_by_reference(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/track/v1/referencenumbers", payload, idempotent=True)


class TokenRefused(Exception):
    """FedEx would not issue a token (wrong client id or secret): an answer, not an outage."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"token refused ({status})")
        self.status, self.body = status, body
