"""MyDHL API JSON, both ways, with no I/O (shapes from DHL's MyDHL API 3.1.1 spec, as vendored in Karrio,
and CARRIERS.md §2)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rappit.integrations.carriers.base import (
    Address,
    CarrierMessage,
    ContentsType,
    CustomsDeclaration,
    Label,
    LabelFormat,
    LabelLookup,
    LabelRequest,
    LabelResult,
    Rate,
    RateResult,
    ShipmentRequest,
    TrackingEvent,
    TrackingStatus,
    TrackResult,
    major_units,
)
from rappit.integrations.channels.canonical import to_minor

REFERENCE_TYPE = "CU"
"""Customer reference: what create shipment stores and GET /tracking searches by."""
PAPERLESS_TRADE = "WY"
ENCODINGS = {LabelFormat.PDF: "pdf", LabelFormat.ZPL: "zpl"}
STATUSES = {
    "SA": TrackingStatus.LABEL_CREATED,
    "PU": TrackingStatus.IN_TRANSIT,
    "PL": TrackingStatus.IN_TRANSIT,
    "DF": TrackingStatus.IN_TRANSIT,
    "AF": TrackingStatus.IN_TRANSIT,
    "AR": TrackingStatus.IN_TRANSIT,
    "CC": TrackingStatus.IN_TRANSIT,
    "WC": TrackingStatus.OUT_FOR_DELIVERY,
    "OK": TrackingStatus.DELIVERED,
    "DD": TrackingStatus.DELIVERED,
    "OH": TrackingStatus.EXCEPTION,
    "CA": TrackingStatus.EXCEPTION,
    "RT": TrackingStatus.RETURNED,
}
_DETAIL_CODE = re.compile(r"^\s*(\d{2,5})\s*:\s*(.*)$", re.S)


def status_of(code: str | None) -> TrackingStatus:
    return STATUSES.get((code or "").upper(), TrackingStatus.UNKNOWN)


def planned_time(day: date) -> str:
    """DHL's own timestamp format: 2019-08-04T14:00:31GMT+01:00 (we ship at noon UTC on the day)."""
    return f"{day.isoformat()}T12:00:00GMT+00:00"


def _registration(number: str | None, type_code: str, country: str) -> list[dict[str, str]]:
    if not number:
        return []
    issuer = number[:2].upper() if number[:2].isalpha() else country.upper()
    return [{"typeCode": type_code, "number": number, "issuerCountryCode": issuer}]


def _party(address: Address, registrations: list[dict[str, str]]) -> dict[str, Any]:
    lines = list(address.street_lines) or [""]
    postal: dict[str, Any] = {
        "postalCode": address.postal_code,
        "cityName": address.city,
        "countryCode": address.country_code.upper(),
        "addressLine1": lines[0],
    }
    for n, line in enumerate(lines[1:3], start=2):
        postal[f"addressLine{n}"] = line
    if address.state_code:
        postal["provinceCode"] = address.state_code
    party: dict[str, Any] = {
        "postalAddress": postal,
        "contactInformation": {
            "phone": address.phone,
            "companyName": address.company or address.name,
            "fullName": address.name,
        },
    }
    if address.email:
        party["contactInformation"]["email"] = address.email
    if registrations:
        party["registrationNumbers"] = registrations
    return party


def _packages(request: ShipmentRequest, reference: str = "") -> list[dict[str, Any]]:
    packages = []
    for parcel in request.parcels:
        package: dict[str, Any] = {"weight": parcel.weight_kg}
        if parcel.length_cm and parcel.width_cm and parcel.height_cm:
            package["dimensions"] = {
                "length": parcel.length_cm,
                "width": parcel.width_cm,
                "height": parcel.height_cm,
            }
        if reference:
            package["customerReferences"] = [{"value": reference, "typeCode": REFERENCE_TYPE}]
        packages.append(package)
    return packages


def _product(request: ShipmentRequest) -> str:
    """P (Express Worldwide, non-documents) across borders, N (domestic express) within one."""
    return request.service or ("P" if request.is_international else "N")


def export_declaration(customs: CustomsDeclaration) -> dict[str, Any]:
    currency = next((line.currency for line in customs.lines if line.currency), "EUR")
    declaration: dict[str, Any] = {
        "lineItems": [
            {
                "number": n,
                "description": line.description,
                "price": major_units((line.value_minor or 0) // max(line.quantity, 1), currency),
                "quantity": {"value": line.quantity, "unitOfMeasurement": "PCS"},
                "commodityCodes": [{"typeCode": "outbound", "value": (line.hs_code or "").replace(".", "")}],
                "exportReasonType": "permanent",
                "manufacturerCountry": line.origin_country,
                "weight": {
                    "netValue": round((line.weight_grams or 0) / 1000, 3),
                    "grossValue": round((line.weight_grams or 0) / 1000, 3),
                },
            }
            for n, line in enumerate(customs.lines, start=1)
        ],
        "exportReason": (customs.contents_type or ContentsType.MERCHANDISE).value,
    }
    if customs.invoice_number:
        declaration["invoice"] = {
            "number": customs.invoice_number,
            "date": (customs.invoice_date or date.today()).isoformat(),
        }
    return declaration


def _customs_totals(customs: CustomsDeclaration) -> tuple[float, str]:
    currency = next((line.currency for line in customs.lines if line.currency), "EUR")
    return major_units(sum(line.value_minor or 0 for line in customs.lines), currency), currency


def rate_request(account_number: str, request: ShipmentRequest) -> dict[str, Any]:
    def place(address: Address) -> dict[str, str]:
        return {
            "postalCode": address.postal_code,
            "cityName": address.city,
            "countryCode": address.country_code.upper(),
        }

    payload: dict[str, Any] = {
        "customerDetails": {
            "shipperDetails": place(request.shipper),
            "receiverDetails": place(request.recipient),
        },
        "accounts": [{"typeCode": "shipper", "number": account_number}],
        "plannedShippingDateAndTime": planned_time(request.ship_date),
        "unitOfMeasurement": "metric",
        "isCustomsDeclarable": request.is_international,
        "packages": _packages(request),
    }
    if request.service:
        payload["productCode"] = request.service
    if request.is_international and request.customs:
        value, currency = _customs_totals(request.customs)
        payload["monetaryAmount"] = [{"typeCode": "declaredValue", "value": value, "currency": currency}]
    return payload


def ship_request(account_number: str, request: LabelRequest) -> dict[str, Any]:
    customs = request.customs if request.is_international else None
    shipper_reg = receiver_reg = []
    if customs:
        country = request.shipper.country_code
        shipper_reg = _registration(customs.exporter_eori, "EOR", country) + _registration(
            customs.exporter_vat, "VAT", country
        )
        country = request.recipient.country_code
        receiver_reg = _registration(customs.importer_eori, "EOR", country) + _registration(
            customs.importer_vat, "VAT", country
        )
    content: dict[str, Any] = {
        "packages": _packages(request, request.reference),
        # Goods crossing a border are dutiable whether or not we hold a declaration: DHL then refuses a
        # shipment without one instead of carrying undeclared goods.
        "isCustomsDeclarable": request.is_international
        and not (customs is not None and customs.contents_type is ContentsType.DOCUMENTS),
        "description": "Merchandise",
        "incoterm": (customs.incoterm.value if customs and customs.incoterm else "DAP"),
        "unitOfMeasurement": "metric",
    }
    if customs:
        value, currency = _customs_totals(customs)
        content.update(
            {
                "declaredValue": value,
                "declaredValueCurrency": currency,
                "description": "; ".join(sorted({line.description or "" for line in customs.lines}))[:70],
                "exportDeclaration": export_declaration(customs),
            }
        )
    payload: dict[str, Any] = {
        "plannedShippingDateAndTime": planned_time(request.ship_date),
        "pickup": {"isRequested": False},
        "productCode": _product(request),
        "accounts": [{"typeCode": "shipper", "number": account_number}],
        "customerReferences": [{"value": request.reference, "typeCode": REFERENCE_TYPE}],
        "outputImageProperties": {"encodingFormat": ENCODINGS[request.label_format]},
        "customerDetails": {
            "shipperDetails": _party(request.shipper, shipper_reg),
            "receiverDetails": _party(request.recipient, receiver_reg),
        },
        "content": content,
    }
    if customs and customs.paperless_trade:
        payload["valueAddedServices"] = [{"serviceCode": PAPERLESS_TRADE}]
    return payload


def reference_params(account_number: str, reference: str, ship_date: date) -> dict[str, str]:
    """GET /tracking by shipment reference, which needs the shipper account and a date range."""
    return {
        "shipmentReference": reference,
        "shipmentReferenceType": REFERENCE_TYPE,
        "shipperAccountNumber": account_number,
        "dateRangeFrom": (ship_date - timedelta(days=2)).isoformat(),
        "dateRangeTo": (ship_date + timedelta(days=2)).isoformat(),
        "trackingView": "shipment-details-only",
    }


def messages(status: int, body: Any) -> tuple[CarrierMessage, ...]:
    """The problem+json error `{instance, detail, title, message, status, additionalDetails[]}`: the code
    is the number `detail` starts with ("7008: ..."), else the HTTP status DHL repeats as a string."""
    if not isinstance(body, dict):
        return (CarrierMessage(str(status), "DHL Express answered without a JSON body"),)
    detail = str(body.get("detail") or body.get("message") or body.get("title") or "")
    code = str(body.get("status") or status)
    if m := _DETAIL_CODE.match(detail):
        code, detail = m.group(1), m.group(2)
    context = {k: body[k] for k in ("instance", "title") if body.get(k)}
    found = [CarrierMessage(code, detail or "DHL Express refused the request", "error", context)]
    for extra in body.get("additionalDetails") or []:
        found.append(CarrierMessage(code, str(extra), "error", context))
    return tuple(found)


def _money(prices: Any) -> tuple[int, str] | None:
    """The billing-currency price (BILLC) of a totalPrice / shipmentCharges list."""
    entries = [p for p in prices or [] if isinstance(p, dict) and p.get("price") is not None]
    chosen = next((p for p in entries if p.get("currencyType") == "BILLC"), entries[0] if entries else None)
    if not chosen or not chosen.get("priceCurrency"):
        return None
    currency = str(chosen["priceCurrency"])
    return to_minor(chosen["price"], currency), currency


def parse_rates(status: int, body: Any) -> RateResult:
    if status != 200 or not isinstance(body, dict):
        return RateResult(rates=(), messages=messages(status, body))
    rates = []
    for product in body.get("products") or []:
        money = _money(product.get("totalPrice"))
        if money is None:
            continue
        transit = (product.get("deliveryCapabilities") or {}).get("totalTransitDays")
        rates.append(
            Rate(
                service=str(product.get("productCode")),
                service_name=str(product.get("productName") or product.get("productCode")),
                amount_minor=money[0],
                currency=money[1],
                transit_days=int(str(transit)) if str(transit or "").isdigit() else None,
            )
        )
    return RateResult(rates=tuple(rates))


def parse_ship(status: int, body: Any, request: LabelRequest) -> LabelResult:
    if status not in (200, 201) or not isinstance(body, dict) or not body.get("shipmentTrackingNumber"):
        return LabelResult(label=None, messages=messages(status, body))
    number = str(body["shipmentTrackingNumber"])
    pieces = [str(p["trackingNumber"]) for p in body.get("packages") or [] if p.get("trackingNumber")]
    labels = [d for d in body.get("documents") or [] if d.get("typeCode") == "label" and d.get("content")]
    warnings: tuple[CarrierMessage, ...] = ()
    try:
        document = b"".join(base64.b64decode(d["content"], validate=True) for d in labels)
    except (binascii.Error, ValueError):
        document = b""
    if not document:
        warnings = (
            CarrierMessage("RAPPIT.LABEL.MISSING", "DHL Express returned no label document", "warning"),
        )
    money = _money(body.get("shipmentCharges"))
    return LabelResult(
        label=Label(
            carrier_shipment_id=number,
            tracking_numbers=(number, *pieces),
            document=document,
            format=request.label_format,
            cost_minor=money[0] if money else None,
            currency=money[1] if money else None,
            reference=request.reference,
        ),
        messages=warnings,
    )


def event_time(day: Any, time: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(f"{day}T{time or '00:00:00'}")
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_track(status: int, body: Any, tracking_number: str) -> TrackResult:
    shipments = body.get("shipments") if status == 200 and isinstance(body, dict) else None
    if not shipments:
        return TrackResult(tracking_number, TrackingStatus.UNKNOWN, messages=messages(status, body))
    events = tuple(
        TrackingEvent(
            occurred_at=event_time(e.get("date"), e.get("time")),
            code=str(e.get("typeCode") or ""),
            status=status_of(e.get("typeCode")),
            description=str(e.get("description") or ""),
        )
        for e in shipments[0].get("events") or []
    )
    latest = max(events, key=lambda e: e.occurred_at or datetime.min.replace(tzinfo=UTC), default=None)
    return TrackResult(
        tracking_number, latest.status if latest else TrackingStatus.LABEL_CREATED, events=events
    )


def parse_reference(status: int, body: Any) -> LabelLookup:
    if status == 404:
        return LabelLookup(found=False, messages=messages(status, body))
    if status != 200 or not isinstance(body, dict):
        return LabelLookup(found=None, messages=messages(status, body))
    numbers = tuple(
        str(s["shipmentTrackingNumber"])
        for s in body.get("shipments") or []
        if s.get("shipmentTrackingNumber")
    )
    return LabelLookup(found=bool(numbers), tracking_numbers=numbers)
