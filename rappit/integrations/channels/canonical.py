"""The channel-neutral order every channel payload is mapped to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

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


MAX_LINE_QUANTITY = 1_000_000_000
"""Units on one line: inside int4 with room for sums (the stock columns' own limit)."""
MAX_MINOR = 10**15
"""A unit price in minor units (ten trillion in a 2-decimal currency): inside bigint with room for sums."""
MAX_TEXT = {"external_id": 100, "name": 100, "sku": 100, "external_line_id": 100}
"""Column widths of what a canonical order carries (orders and order_lines)."""


class PayloadError(ValueError):
    """The payload lacks or garbles a field we need: the event fails (and dead-letters after retries)."""


def decode_json(body: bytes) -> Any:
    """A stored body as JSON. msgspec raises more than DecodeError on hostile input (UnicodeDecodeError
    for invalid UTF-8 in a string, RecursionError for deep nesting): all are the payload's fault."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError(f"body is not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def order_id(payload: Any, platform: str) -> str:
    """The platform's order id: a number or a non-empty string, nothing else."""
    value = payload.get("id") if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise PayloadError(f"not a {platform} order: no id")
    return str(value)


def line_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    items = payload.get("line_items") or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PayloadError("line_items is not a list of objects")
    return items


def _fits(what: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_TEXT[what]:
        raise PayloadError(f"{what} is longer than {MAX_TEXT[what]} characters")


@dataclass(frozen=True, slots=True)
class CanonicalLine:
    external_line_id: str | None
    sku: str | None
    title: str
    quantity: int
    unit_price_minor: int

    def __post_init__(self) -> None:
        """Every value must fit its column: a payload that cannot be stored is the payload's fault."""
        _fits("sku", self.sku)
        _fits("external_line_id", self.external_line_id)
        if isinstance(self.quantity, bool) or not 0 <= self.quantity <= MAX_LINE_QUANTITY:
            raise PayloadError(f"quantity {self.quantity!r} is not a whole number 0..{MAX_LINE_QUANTITY}")
        if not 0 <= self.unit_price_minor <= MAX_MINOR:
            raise PayloadError(f"unit price {self.unit_price_minor!r} (minor units) is out of range")


@dataclass(frozen=True, slots=True)
class CanonicalOrder:
    external_id: str
    name: str
    currency: str
    updated_at: datetime | None
    cancelled: bool
    lines: list[CanonicalLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        _fits("external_id", self.external_id)
        if len(self.currency) != 3 or not self.currency.isascii() or not self.currency.isalpha():
            raise PayloadError(f"currency {self.currency!r} is not a 3-letter code")
        object.__setattr__(self, "name", self.name[: MAX_TEXT["name"]])


def to_minor(amount: object, currency: str) -> int:
    """Money as integer minor units: "19.99" USD -> 1999, "500" JPY -> 500."""
    if isinstance(amount, bool):
        raise PayloadError(f"price {amount!r} is not a number")
    try:
        value = Decimal(str(amount if amount not in (None, "") else "0"))
    except InvalidOperation as exc:
        raise PayloadError(f"price {amount!r} is not a number") from exc
    # Refuse NaN, infinities and absurd exponents before any arithmetic ("1e999999999" would not fit
    # in memory as an integer).
    if not value.is_finite() or value.adjusted() > 18:
        raise PayloadError(f"price {amount!r} is out of range")
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
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 pushed past the calendar by its offset
        raise PayloadError(f"timestamp {value!r} is out of range") from exc


def quantity(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"quantity {value!r} is not a whole number >= 0")
    return value


def sku_of(value: object) -> str | None:
    sku = str(value).strip() if value is not None else ""
    return sku or None
