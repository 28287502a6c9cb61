"""Requests the carrier tests share: a domestic US shipment and a dutiable DE -> US one."""

from __future__ import annotations

from datetime import date

from rappit.integrations.carriers.base import (
    Address,
    CustomsDeclaration,
    CustomsLine,
    Incoterm,
    LabelFormat,
    LabelRequest,
    Parcel,
)

SHIPPER_US = Address("Ann Shipper", ("1 Dock St",), "Memphis", "38118", "US", "9015550100", company="Acme")
RECIPIENT_US = Address("Bo Buyer", ("2 Main St",), "Austin", "78701", "US", "5125550100")
SHIPPER_DE = Address(
    "Ann Versand", ("Hafenstr. 1",), "Hamburg", "20457", "DE", "+494055501", company="Acme GmbH"
)
PARCEL = Parcel(weight_grams=1500, length_cm=30, width_cm=20, height_cm=10)


def customs_line(sku: str = "MUG-1", **overrides: object) -> CustomsLine:
    values: dict[str, object] = dict(
        sku=sku,
        description="Ceramic mug",
        hs_code="691200",
        origin_country="PT",
        value_minor=2400,
        currency="EUR",
        weight_grams=700,
        quantity=2,
    )
    values.update(overrides)
    return CustomsLine(**values)  # type: ignore[arg-type]


def customs(*lines: CustomsLine, **overrides: object) -> CustomsDeclaration:
    values: dict[str, object] = dict(
        lines=lines or (customs_line(),), incoterm=Incoterm.DAP, exporter_eori="DE123456789012345"
    )
    values.update(overrides)
    return CustomsDeclaration(**values)  # type: ignore[arg-type]


def domestic(
    reference: str, service: str = "FEDEX_GROUND", fmt: LabelFormat = LabelFormat.PDF
) -> LabelRequest:
    return LabelRequest(
        shipper=SHIPPER_US,
        recipient=RECIPIENT_US,
        parcels=(PARCEL,),
        ship_date=date(2026, 11, 20),
        service=service,
        reference=reference,
        label_format=fmt,
    )


def international(
    reference: str, declaration: CustomsDeclaration | None, service: str | None = None
) -> LabelRequest:
    return LabelRequest(
        shipper=SHIPPER_DE,
        recipient=RECIPIENT_US,
        parcels=(PARCEL,),
        ship_date=date(2026, 11, 20),
        service=service,
        customs=declaration,
        reference=reference,
    )
