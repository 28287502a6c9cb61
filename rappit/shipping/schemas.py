"""Shapes at the HTTP edge for carrier accounts and shipments. No response carries a stored secret."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

import msgspec

from rappit.integrations.carriers.base import Address, CarrierMessage, Parcel, Rate
from rappit.integrations.carriers.breaker import BreakerSnapshot
from rappit.integrations.carriers.registry import CARRIER_NAMES
from rappit.shipping.models import SHIPMENT_STATUSES, CarrierAccount, Shipment, ShipmentEvent
from rappit.shipping.service import AccountQuote, CustomsInput, ShipmentInput, SkuCustoms

Country = Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CarrierAccountIn(msgspec.Struct, forbid_unknown_fields=True):
    carrier: Annotated[
        str, msgspec.Meta(pattern=f"^({'|'.join(CARRIER_NAMES)})$", description=" | ".join(CARRIER_NAMES))
    ]
    name: Text
    credentials: dict[
        Annotated[str, msgspec.Meta(max_length=100)], Annotated[str, msgspec.Meta(max_length=2000)]
    ]
    account_number: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    base_url: Annotated[str, msgspec.Meta(pattern="^https?://", max_length=500)] | None = None


class CarrierAccountOut(msgspec.Struct):
    id: uuid.UUID
    carrier: str
    name: str
    account_number: str
    base_url: str | None
    status: str
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, a: CarrierAccount) -> CarrierAccountOut:
        return cls(
            id=a.id,
            carrier=a.carrier,
            name=a.name,
            account_number=a.account_number,
            base_url=a.base_url,
            status=a.status,
            created_at=a.created_at,
            disabled_at=a.disabled_at,
        )


class CarrierAccountWithSecretOut(msgspec.Struct):
    account: CarrierAccountOut
    callback_secret: str
    """Shown once: configure the carrier relay's callback signing with it now."""


class BreakerOut(msgspec.Struct):
    account_id: uuid.UUID
    carrier: str
    name: str
    state: str
    consecutive_failures: int
    retry_after_seconds: float
    shared: bool

    @classmethod
    def of(cls, a: CarrierAccount, s: BreakerSnapshot) -> BreakerOut:
        return cls(a.id, a.carrier, a.name, s.state, s.consecutive_failures, s.retry_after_seconds, s.shared)


class AddressIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    street_lines: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=3)]
    city: Text
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country_code: Country
    phone: Annotated[str, msgspec.Meta(min_length=3, max_length=30)]
    company: Text | None = None
    state_code: Annotated[str, msgspec.Meta(max_length=10)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None

    def to_address(self) -> Address:
        return Address(
            self.name,
            tuple(self.street_lines),
            self.city,
            self.postal_code,
            self.country_code,
            self.phone,
            self.company,
            self.state_code,
            self.email,
        )


class ParcelIn(msgspec.Struct, forbid_unknown_fields=True):
    weight_grams: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    length_cm: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    width_cm: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    height_cm: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None


class SkuCustomsIn(msgspec.Struct, forbid_unknown_fields=True):
    hs_code: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    origin_country: Annotated[str, msgspec.Meta(max_length=2)] | None = None
    weight_grams: Annotated[int, msgspec.Meta(ge=0)] | None = None
    unit_value_minor: Annotated[int, msgspec.Meta(ge=0)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=300)] | None = None


class CustomsIn(msgspec.Struct, forbid_unknown_fields=True):
    """Customs facts for a cross-border shipment. Per SKU until SKUs store them (not yet)."""

    skus: dict[str, SkuCustomsIn] = {}
    incoterm: Annotated[str, msgspec.Meta(pattern="^(DAP|DDP)$")] | None = "DAP"
    contents_type: (
        Annotated[str, msgspec.Meta(pattern="^(merchandise|documents|gift|sample|return)$")] | None
    ) = "merchandise"
    exporter_eori: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    exporter_vat: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    importer_eori: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    importer_vat: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    paperless_trade: bool = False


class LineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class _ShipmentBase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    order_id: uuid.UUID
    ship_from: AddressIn
    ship_to: AddressIn
    parcels: Annotated[list[ParcelIn], msgspec.Meta(min_length=1, max_length=40)]
    customs: CustomsIn | None = None
    ship_date: date | None = None

    def _input(self, lines: list[LineIn] | None) -> ShipmentInput:
        customs = None
        if self.customs is not None:
            c = self.customs
            customs = CustomsInput(
                items={k: SkuCustoms(**msgspec.structs.asdict(v)) for k, v in c.skus.items()},
                incoterm=c.incoterm,
                contents_type=c.contents_type,
                exporter_eori=c.exporter_eori,
                exporter_vat=c.exporter_vat,
                importer_eori=c.importer_eori,
                importer_vat=c.importer_vat,
                paperless_trade=c.paperless_trade,
            )
        return ShipmentInput(
            ship_from=self.ship_from.to_address(),
            ship_to=self.ship_to.to_address(),
            parcels=tuple(Parcel(**msgspec.structs.asdict(p)) for p in self.parcels),
            customs=customs,
            lines=tuple((line.sku, line.quantity) for line in lines) if lines is not None else None,
            ship_date=self.ship_date,
        )


class RatesIn(_ShipmentBase, kw_only=True):
    def to_input(self) -> ShipmentInput:
        return self._input(None)


class ShipmentIn(_ShipmentBase, kw_only=True):
    carrier_account_id: uuid.UUID
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    lines: list[LineIn] | None = None
    label_format: Annotated[str, msgspec.Meta(pattern="^(pdf|zpl)$")] = "pdf"

    def to_input(self) -> ShipmentInput:
        return self._input(self.lines)


class MessageOut(msgspec.Struct):
    code: str
    text: str
    severity: str

    @classmethod
    def of(cls, m: CarrierMessage) -> MessageOut:
        return cls(m.code, m.text, m.severity)


class RateOut(msgspec.Struct):
    service: str
    service_name: str
    amount_minor: int
    currency: str
    transit_days: int | None

    @classmethod
    def of(cls, r: Rate) -> RateOut:
        return cls(r.service, r.service_name, r.amount_minor, r.currency, r.transit_days)


class AccountQuoteOut(msgspec.Struct):
    account_id: uuid.UUID
    carrier: str
    name: str
    available: bool
    rates: list[RateOut]
    messages: list[MessageOut]
    reason: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, q: AccountQuote) -> AccountQuoteOut:
        return cls(
            q.account_id,
            q.carrier,
            q.name,
            q.available,
            [RateOut.of(r) for r in q.rates],
            [MessageOut.of(m) for m in q.messages],
            q.reason,
            dict(q.details),
        )


class RatesOut(msgspec.Struct):
    quotes: list[AccountQuoteOut]


class ShipmentOut(msgspec.Struct):
    id: uuid.UUID
    order_id: uuid.UUID
    carrier_account_id: uuid.UUID
    carrier: str
    service: str
    status: str
    ship_date: date
    lines: list[Any]
    carrier_shipment_id: str | None
    tracking_numbers: list[Any] | None
    has_label: bool
    label_format: str | None
    cost_minor: int | None
    currency: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: Shipment) -> ShipmentOut:
        return cls(
            id=s.id,
            order_id=s.order_id,
            carrier_account_id=s.carrier_account_id,
            carrier=s.carrier,
            service=s.service,
            status=s.status,
            ship_date=s.ship_date,
            lines=list(s.lines),
            carrier_shipment_id=s.carrier_shipment_id,
            tracking_numbers=s.tracking_numbers,
            has_label=bool(s.label_document),
            label_format=s.label_format,
            cost_minor=s.cost_minor,
            currency=s.currency,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class ShipmentEventOut(msgspec.Struct):
    kind: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, e: ShipmentEvent) -> ShipmentEventOut:
        return cls(e.kind, e.from_status, e.to_status, e.detail, e.created_at)


class ShipmentDetailOut(msgspec.Struct):
    shipment: ShipmentOut
    timeline: list[ShipmentEventOut]


StatusFilter = Annotated[str, msgspec.Meta(pattern=f"^({'|'.join(SHIPMENT_STATUSES)})$")]
