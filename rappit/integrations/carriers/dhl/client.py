"""MyDHL API over HTTP (Basic auth on every call); bodies are the mapper's business."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from rappit.integrations.carriers.breaker import CarrierBreaker
from rappit.integrations.carriers.dhl import mapper
from rappit.integrations.carriers.dhl.settings import API_VERSION, DhlAccount
from rappit.integrations.carriers.transport import json_body, send


class DhlClient:
    def __init__(self, account: DhlAccount, http: httpx.AsyncClient, breaker: CarrierBreaker) -> None:
        self.account, self.http, self.breaker = account, http, breaker

    async def _call(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> tuple[int, Any]:
        response = await send(
            self.http,
            self.breaker,
            method,
            f"{self.account.base_url}{path}",
            timeouts=self.account.timeouts,
            idempotent=idempotent,
            server_messages=lambda r: mapper.messages(r.status_code, json_body(r)),
            auth=httpx.BasicAuth(self.account.username, self.account.password),
            headers={"x-version": API_VERSION, "accept": "application/json"},
            **kwargs,
        )
        return response.status_code, json_body(response)

    async def rate(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/rates", idempotent=True, json=payload)

    async def create_shipment(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self._call("POST", "/shipments", idempotent=False, json=payload)

    async def track(self, tracking_number: str) -> tuple[int, Any]:
        path = f"/shipments/{quote(tracking_number, safe='')}/tracking"
        return await self._call("GET", path, idempotent=True, params={"trackingView": "all-checkpoints"})

    async def track_by_reference(self, params: dict[str, str]) -> tuple[int, Any]:
        return await self._call("GET", "/tracking", idempotent=True, params=params)
