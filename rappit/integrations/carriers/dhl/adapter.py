"""DHL Express as a CarrierAdapter: mapper + client, one account."""

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
    OperationNotSupported,
    RateResult,
    ShipmentRequest,
    TrackResult,
    VoidResult,
)
from rappit.integrations.carriers.breaker import CarrierBreaker
from rappit.integrations.carriers.dhl import mapper
from rappit.integrations.carriers.dhl.client import DhlClient
from rappit.integrations.carriers.dhl.settings import DhlAccount
from rappit.integrations.carriers.transport import Timeouts

NO_VOID = (
    "the MyDHL API has no shipment cancel or void (only pickup cancellation); a label DHL never scans "
    "is not confirmed as voided by DHL"
)


class DhlExpressAdapter:
    name: ClassVar[str] = "dhl_express"
    can_void: ClassVar[bool] = False
    display_name: ClassVar[str] = "DHL Express"
    """As Shopify's tracking companies list spells it."""
    tracking_url_template: ClassVar[str] = (
        "https://www.dhl.com/global-en/home/tracking/tracking-express.html?submit=1&tracking-id={number}"
    )

    def __init__(self, account: DhlAccount, client: DhlClient) -> None:
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
    ) -> DhlExpressAdapter:
        account = DhlAccount.from_credentials(
            credentials, account_number=account_number, base_url=base_url, timeouts=timeouts
        )
        return cls(account, DhlClient(account, http, breaker))

    async def rate(self, request: ShipmentRequest) -> RateResult:
        return mapper.parse_rates(
            *await self.client.rate(mapper.rate_request(self.account.account_number, request))
        )

    async def buy_label(self, request: LabelRequest) -> LabelResult:
        status, body = await self.client.create_shipment(
            mapper.ship_request(self.account.account_number, request)
        )
        return mapper.parse_ship(status, body, request)

    async def void_label(self, label: Label) -> VoidResult:
        raise OperationNotSupported(self.name, "void", NO_VOID)

    async def track(self, tracking_number: str) -> TrackResult:
        return mapper.parse_track(*await self.client.track(tracking_number), tracking_number)

    async def find_label(self, reference: str, ship_date: date) -> LabelLookup:
        """GET /tracking by our customer reference (CU) for this shipper account. DHL documents that its
        test environment tracks only sample AWBs, so against DHL's test host this lookup cannot find a
        fresh label; in production it relies on DHL indexing the reference from label creation. The
        saga must treat `found=None` (no answer) as unknown, never as "no label"."""
        params = mapper.reference_params(self.account.account_number, reference, ship_date)
        return mapper.parse_reference(*await self.client.track_by_reference(params))

    @classmethod
    def parse_callback(
        cls, headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime
    ) -> CarrierEvent:
        """The relay's body: {eventId, shipmentTrackingNumber, customerReference?, event{date, time,
        typeCode, description}} (the event as GET /tracking spells it)."""
        data = callbacks.verified_json(headers, body, secret, now=now)
        if not isinstance(data, dict) or not isinstance(data.get("event"), dict):
            raise callbacks.CallbackRefused(400, "MISSING_FIELD", "callback has no event")
        event = data["event"]
        code = callbacks.text(event, "typeCode")
        return CarrierEvent(
            event_id=callbacks.text(data, "eventId"),
            tracking_number=callbacks.text(data, "shipmentTrackingNumber"),
            reference=str(data["customerReference"]) if data.get("customerReference") else None,
            status=mapper.status_of(code),
            code=code,
            description=str(event.get("description") or ""),
            occurred_at=mapper.event_time(event.get("date"), event.get("time")),
        )
