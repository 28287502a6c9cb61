"""Customs data checked before any carrier call: a missing field is our 422 naming the SKU and the
field, never a carrier rejection after a round trip (or, worse, a label that stalls at the border)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rappit.integrations.carriers.base import CustomsDeclaration, Incoterm

_HS_CODE = re.compile(r"^\d{6,10}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class MissingCustomsField:
    sku: str | None
    """None for a field of the declaration itself (incoterm, exporter's registration)."""
    field: str
    problem: str = "missing"

    def __str__(self) -> str:
        where = f"SKU {self.sku}" if self.sku else "the declaration"
        return f"{where}: {self.field} {self.problem}"


def needs_customs(origin_country: str, destination_country: str) -> bool:
    """Crossing a border needs a declaration (EU-internal exemptions are the carrier's call, not ours)."""
    return origin_country.strip().upper() != destination_country.strip().upper()


def missing_customs_fields(
    origin_country: str, destination_country: str, customs: CustomsDeclaration | None
) -> list[MissingCustomsField]:
    """Every required customs field that is missing or malformed, all at once (not the first one)."""
    if not needs_customs(origin_country, destination_country):
        return []
    if customs is None:
        return [MissingCustomsField(None, "customs_declaration")]
    problems: list[MissingCustomsField] = []
    if customs.contents_type is None:
        problems.append(MissingCustomsField(None, "contents_type"))
    if customs.incoterm is None:
        problems.append(MissingCustomsField(None, "incoterm"))
    if not (customs.exporter_eori or customs.exporter_vat):
        problems.append(MissingCustomsField(None, "exporter_registration_number (EORI or VAT)"))
    if customs.incoterm is Incoterm.DDP and not (customs.importer_eori or customs.importer_vat):
        # Duties paid by the shipper: the carrier clears in the importer's name and needs its number.
        problems.append(MissingCustomsField(None, "importer_registration_number (EORI or VAT)"))
    if not customs.lines:
        problems.append(MissingCustomsField(None, "lines"))
    currencies = set()
    for line in customs.lines:
        sku = line.sku

        def bad(name: str, problem: str = "missing", *, sku: str = sku) -> None:
            problems.append(MissingCustomsField(sku, name, problem))

        if not (line.description or "").strip():
            bad("description")
        if not line.hs_code:
            bad("hs_code")
        elif not _HS_CODE.match(line.hs_code.replace(".", "")):
            bad("hs_code", "must be 6 to 10 digits")
        if not line.origin_country:
            bad("origin_country")
        elif not _COUNTRY.match(line.origin_country):
            bad("origin_country", "must be an ISO 3166 alpha-2 code")
        if line.value_minor is None:
            bad("customs_value")
        elif line.value_minor <= 0:
            bad("customs_value", "must be positive")
        if not line.currency:
            bad("customs_currency")
        elif not _CURRENCY.match(line.currency):
            bad("customs_currency", "must be an ISO 4217 code")
        else:
            currencies.add(line.currency)
        if line.weight_grams is None:
            bad("weight")
        elif line.weight_grams <= 0:
            bad("weight", "must be positive")
        if line.quantity <= 0:
            bad("quantity", "must be positive")
    if len(currencies) > 1:
        problems.append(MissingCustomsField(None, "customs_currency", "must be one currency per invoice"))
    return problems
