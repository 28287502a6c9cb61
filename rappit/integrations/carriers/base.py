"""The seam every carrier plugs into: one `CarrierAdapter` per carrier, the types it speaks, its errors.

The shipping domain calls these methods and never branches on a carrier's name. A carrier's business
answer (address invalid, service not on this lane) comes back as `CarrierMessage`s with the carrier's own
code and text; exceptions are for what the caller cannot read an answer from: the transport failed
(`CarrierUnavailable`), the breaker is open (`CarrierUnavailable`), or the carrier has no such operation
(`OperationNotSupported`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Protocol

from rappit.integrations.channels.base import OperationNotSupported as _NotSupported
from rappit.platform.errors import ServiceUnavailable


class LabelFormat(enum.StrEnum):
    PDF = "pdf"
    ZPL = "zpl"

    @property
    def content_type(self) -> str:
        return "application/pdf" if self is LabelFormat.PDF else "application/x-zpl"


class TrackingStatus(enum.StrEnum):
    """The carrier's event codes folded into what the shipment state machine acts on."""

    LABEL_CREATED = "label_created"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    RETURNED = "returned"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class Incoterm(enum.StrEnum):
    DAP = "DAP"
    """Delivered at place: the receiver pays duties and taxes."""
    DDP = "DDP"
    """Delivered duty paid: the shipper pays them (the importer's registration number is then needed)."""


class ContentsType(enum.StrEnum):
    MERCHANDISE = "merchandise"
    DOCUMENTS = "documents"
    GIFT = "gift"
    SAMPLE = "sample"
    RETURN = "return"


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    street_lines: tuple[str, ...]
    city: str
    postal_code: str
    country_code: str
    """ISO 3166-1 alpha-2."""
    phone: str
    company: str | None = None
    state_code: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Parcel:
    weight_grams: int
    length_cm: int | None = None
    width_cm: int | None = None
    height_cm: int | None = None

    @property
    def weight_kg(self) -> float:
        return round(self.weight_grams / 1000, 3)


@dataclass(frozen=True, slots=True)
class CustomsLine:
    """One order line as customs sees it. None means "not known": the validator names it."""

    sku: str
    description: str | None
    hs_code: str | None
    origin_country: str | None
    """Where the goods were made (ISO alpha-2), not where they ship from."""
    value_minor: int | None
    """Customs value of the whole line (unit value x quantity), minor units of `currency`."""
    currency: str | None
    weight_grams: int | None
    """Net weight of the whole line."""
    quantity: int


@dataclass(frozen=True, slots=True)
class CustomsDeclaration:
    lines: tuple[CustomsLine, ...]
    contents_type: ContentsType | None = ContentsType.MERCHANDISE
    incoterm: Incoterm | None = Incoterm.DAP
    exporter_eori: str | None = None
    exporter_vat: str | None = None
    importer_eori: str | None = None
    importer_vat: str | None = None
    invoice_number: str | None = None
    invoice_date: date | None = None
    paperless_trade: bool = False
    """Ask the carrier to send the invoice electronically (DHL service WY) instead of on paper."""


@dataclass(frozen=True, slots=True)
class ShipmentRequest:
    """What a rate quote and a label purchase both need."""

    shipper: Address
    recipient: Address
    parcels: tuple[Parcel, ...]
    ship_date: date
    service: str | None = None
    """The carrier's service code (FEDEX_GROUND, P); None to quote every service."""
    customs: CustomsDeclaration | None = None

    @property
    def is_international(self) -> bool:
        return self.shipper.country_code.upper() != self.recipient.country_code.upper()


@dataclass(frozen=True, slots=True)
class LabelRequest(ShipmentRequest):
    reference: str = ""
    """Our shipment id: sent as the carrier's customer reference, so a lost answer can be found again."""
    label_format: LabelFormat = LabelFormat.PDF


@dataclass(frozen=True, slots=True)
class CarrierMessage:
    """A carrier's business answer in its own words (never an exception)."""

    code: str
    text: str
    severity: str = "error"
    """error: the operation did not happen; warning: it did, with a remark (FedEx alerts)."""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rate:
    service: str
    service_name: str
    amount_minor: int
    currency: str
    transit_days: int | None = None


@dataclass(frozen=True, slots=True)
class RateResult:
    rates: tuple[Rate, ...]
    messages: tuple[CarrierMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class Label:
    carrier_shipment_id: str
    tracking_numbers: tuple[str, ...]
    """Master (or shipment) number first, then one per parcel where the carrier has them."""
    document: bytes
    format: LabelFormat
    cost_minor: int | None
    currency: str | None
    reference: str = ""


@dataclass(frozen=True, slots=True)
class LabelResult:
    label: Label | None
    """None when the carrier refused; `messages` say why."""
    messages: tuple[CarrierMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class VoidResult:
    voided: bool
    """True only when the carrier confirmed the cancellation."""
    messages: tuple[CarrierMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    occurred_at: datetime | None
    code: str
    status: TrackingStatus
    description: str


@dataclass(frozen=True, slots=True)
class TrackResult:
    tracking_number: str
    status: TrackingStatus
    events: tuple[TrackingEvent, ...] = ()
    messages: tuple[CarrierMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelLookup:
    """The saga's question "was a label sold for this reference?" and the carrier's answer."""

    found: bool | None
    """True: sold (numbers below); False: the carrier says none; None: it did not say (an error in
    `messages`): never treat that as "none", or a sold label is left unvoided."""
    tracking_numbers: tuple[str, ...] = ()
    messages: tuple[CarrierMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class CarrierEvent:
    """A verified carrier callback, parsed."""

    event_id: str
    """The carrier's id of the event: the inbox deduplicates on it."""
    tracking_number: str
    reference: str | None
    status: TrackingStatus
    code: str
    description: str
    occurred_at: datetime | None


class OperationNotSupported(_NotSupported):
    """The carrier's API has no such operation (DHL Express cannot void a shipment)."""

    def __init__(self, carrier: str, operation: str, why: str) -> None:
        super().__init__(f"{carrier} does not support {operation}: {why}")
        self.carrier, self.operation, self.why = carrier, operation, why


class CarrierUnavailable(ServiceUnavailable):
    """The carrier could not be asked or did not answer: the breaker is open, the call timed out, the
    connection failed, or the carrier answered 5xx. 503 with Retry-After at the HTTP edge."""

    code = "CARRIER_UNAVAILABLE"

    def __init__(
        self,
        carrier: str,
        reason: str,
        *,
        breaker_state: str,
        retry_after_seconds: float,
        maybe_processed: bool = False,
        detail: str = "",
        carrier_messages: tuple[CarrierMessage, ...] = (),
    ) -> None:
        retry = max(1, int(retry_after_seconds + 0.999))
        super().__init__(
            f"{carrier} is unavailable ({reason}){': ' + detail if detail else ''}; retry in {retry} s",
            details={
                "carrier": carrier,
                "reason": reason,
                "breaker_state": breaker_state,
                "retry_after_seconds": retry,
            },
        )
        self.carrier, self.reason, self.breaker_state = carrier, reason, breaker_state
        self.retry_after_seconds = retry_after_seconds
        self.maybe_processed = maybe_processed
        """The request may have reached the carrier and been acted on (a read timeout, a dropped
        answer, a 5xx): after a label purchase, ask `find_label` before buying again."""
        self.carrier_messages = carrier_messages
        self.headers = {"Retry-After": str(retry)}


class CallbackRefused(Exception):
    """A callback that is not acceptable: answer `status` with `code`, store nothing."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CarrierAdapter(Protocol):
    name: ClassVar[str]
    """The carrier as stored on carrier_accounts.carrier and in callback URLs."""
    can_void: ClassVar[bool]
    """False: void_label raises OperationNotSupported (the shipping domain marks void_requested)."""

    async def rate(self, request: ShipmentRequest) -> RateResult:
        """Quotes for the shipment (retried on transport failures: it changes nothing)."""
        ...

    async def buy_label(self, request: LabelRequest) -> LabelResult:
        """Buy one label, never retried here: a lost answer may still have sold it (`find_label`)."""
        ...

    async def void_label(self, label: Label) -> VoidResult:
        """Ask the carrier to cancel; `voided` only on its confirmation."""
        ...

    async def track(self, tracking_number: str) -> TrackResult: ...

    async def find_label(self, reference: str, ship_date: date) -> LabelLookup:
        """Whether a label was sold for our reference on or around `ship_date` (saga recovery)."""
        ...

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime
    ) -> CarrierEvent:
        """Verify the signature and timestamp window, then parse; CallbackRefused if unusable."""
        ...


def require_credentials(
    carrier: str, credentials: Mapping[str, str], keys: tuple[str, ...], account_number: str
) -> None:
    """ValueError naming every missing credential at once (the account form shows them all)."""
    missing = [k for k in keys if not str(credentials.get(k) or "").strip()]
    if not account_number.strip():
        missing.append("account_number")
    if missing:
        raise ValueError(f"{carrier} needs {', '.join(missing)}")


def major_units(minor: int, currency: str) -> float:
    """Minor units as the decimal amount carriers' JSON carries (1999 USD -> 19.99, 500 JPY -> 500)."""
    from rappit.integrations.channels.canonical import to_minor

    exponent = len(str(to_minor("1", currency))) - 1
    amount: float = round(minor / 10**exponent, exponent)
    return amount
