"""The channel-neutral order every channel payload is mapped to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENTS = {
    "JPY": 0,
    "KRW": 0,
    "VND": 0,
    "CLP": 0,
    "ISK": 0,
    "UGX": 0,
    "XAF": 0,
    "XOF": 0,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
    "IQD": 3,
    "LYD": 3,
}


class PayloadError(ValueError):
    """The payload lacks or garbles a field we need: the event fails (and dead-letters after retries)."""


@dataclass(frozen=True, slots=True)
class CanonicalLine:
    external_line_id: str | None
    sku: str | None
    title: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True, slots=True)
class CanonicalOrder:
    external_id: str
    name: str
    currency: str
    updated_at: datetime | None
    cancelled: bool
    lines: list[CanonicalLine] = field(default_factory=list)


def to_minor(amount: object, currency: str) -> int:
    """Money as integer minor units: "19.99" USD -> 1999, "500" JPY -> 500."""
    try:
        value = Decimal(str(amount if amount not in (None, "") else "0"))
    except InvalidOperation as exc:
        raise PayloadError(f"price {amount!r} is not a number") from exc
    return int((value * (10 ** _EXPONENTS.get(currency.upper(), 2))).to_integral_value())


def parse_time(value: object, *, naive_is_utc: bool = True) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(f"timestamp {value!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        if not naive_is_utc:
            raise PayloadError(f"timestamp {value!r} has no time zone")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def quantity(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"quantity {value!r} is not a whole number >= 0")
    return value


def sku_of(value: object) -> str | None:
    sku = str(value).strip() if value is not None else ""
    return sku or None
