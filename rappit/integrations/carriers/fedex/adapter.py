"""FedEx as a CarrierAdapter: mapper + client, one account."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import ClassVar

import httpx

from rappit.integrations.carriers import callbacks
from rappit.integrations.carriers.base import (
    CarrierEvent,
    Label,
    LabelLookup,
    LabelRequest,
    LabelResult,
    RateResult,
    ShipmentRequest,
    TrackResult,
    VoidResult,
)
from rappit.integrations.carriers.breaker import CarrierBreaker
from rappit.integrations.carriers.fedex import mapper
from rappit.integrations.carriers.fedex.client import FedExClient, TokenCache
from rappit.integrations.carriers.fedex.settings import FedExAccount
from rappit.integrations.carriers.transport import Timeouts


class FedExAdapter:
    name: ClassVar[str] = "fedex"
    can_void: ClassVar[bool] = True
    display_name: ClassVar[str] = "FedEx"
    """As Shopify's tracking companies list spells it."""
    tracking_url_template: ClassVar[str] = "https://www.fedex.com/fedextrack/?trknbr={number}"

    def __init__(self, account: FedExAccount, client: FedExClient) -> None:
        self.account, self.client = account, client

    @classmethod
    def for_account(
        cls,
        credentials: Mapping[str, str],
        *,
        account_number: str,
        base_url: str | None,
        http: httpx.AsyncClient,
        breaker: CarrierBreaker,
        timeouts: Timeouts | None = None,
        tokens: TokenCache | None = None,
    ) -> FedExAdapter:
        account = FedExAccount.from_credentials(
            credentials, account_number=account_number, base_url=base_url, timeouts=timeouts
        )
        return cls(account, FedExClient(account, http, breaker, tokens))

    async def rate(self, request: ShipmentRequest) -> RateResult:
        return mapper.parse_rates(
            *await self.client.rate(mapper.rate_request(self.account.account_number, request))
        )

    async def buy_label(self, request: LabelRequest) -> LabelResult:
        status, body = await self.client.ship(mapper.ship_request(self.account.account_number, request))
        return mapper.parse_ship(status, body, request)

    async def void_label(self, label: Label) -> VoidResult:
        """FedEx cancels only a shipment not yet tendered; a refusal comes back as a message."""
        payload = mapper.cancel_request(self.account.account_number, label.carrier_shipment_id)
        return mapper.parse_cancel(*await self.client.cancel(payload))

    async def track(self, tracking_number: str) -> TrackResult:
        status, body = await self.client.track(mapper.track_request(tracking_number))
        return mapper.parse_track(status, body, tracking_number)

    async def find_label(self, reference: str, ship_date: date) -> LabelLookup:
        """FedEx's Track by References (CUSTOMER_REFERENCE, our shipment id, this account)."""
        payload = mapper.reference_request(self.account.account_number, reference, ship_date)
        return mapper.parse_reference(*await self.client.track_by_reference(payload))

    @classmethod
    def parse_callback(
        cls, headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime
    ) -> CarrierEvent:
        """The relay's body: {eventId, trackingNumber, customerReference?, scanEvent{date, eventType,
        eventDescription}} (the scan event as the Track API spells it)."""
        data = callbacks.verified_json(headers, body, secret, now=now)
        if not isinstance(data, dict) or not isinstance(data.get("scanEvent"), dict):
            raise callbacks.CallbackRefused(400, "MISSING_FIELD", "callback has no scanEvent")
        scan = data["scanEvent"]
        code = callbacks.text(scan, "eventType")
        return CarrierEvent(
            event_id=callbacks.text(data, "eventId"),
            tracking_number=callbacks.text(data, "trackingNumber"),
            reference=str(data["customerReference"]) if data.get("customerReference") else None,
            status=mapper.status_of(code),
            code=code,
            description=str(scan.get("eventDescription") or ""),
            occurred_at=mapper.event_time(scan.get("date")),
        )
