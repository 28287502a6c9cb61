"""FedEx JSON, both ways, with no I/O: our request -> their body, their body -> our result and messages.

Shapes from FedEx's Rate, Ship and Track API specifications (as vendored in Karrio) and CARRIERS.md §1.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rappit.integrations.carriers.base import (
    Address,
    CarrierMessage,
    ContentsType,
    CustomsDeclaration,
    Incoterm,
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
    VoidResult,
    major_units,
)
from rappit.integrations.channels.canonical import to_minor

REFERENCE_TYPE = "CUSTOMER_REFERENCE"
IMAGE_TYPES = {LabelFormat.PDF: "PDF", LabelFormat.ZPL: "ZPLII"}
STOCK_TYPES = {LabelFormat.PDF: "PAPER_4X6", LabelFormat.ZPL: "STOCK_4X6"}
PURPOSES = {
    ContentsType.MERCHANDISE: "SOLD",
    ContentsType.GIFT: "GIFT",
    ContentsType.SAMPLE: "SAMPLE",
    ContentsType.RETURN: "RETURN_AND_REPAIR",
    ContentsType.DOCUMENTS: "NOT_SOLD",
}
STATUSES = {
    "OC": TrackingStatus.LABEL_CREATED,
    "PU": TrackingStatus.IN_TRANSIT,
    "IT": TrackingStatus.IN_TRANSIT,
    "AR": TrackingStatus.IN_TRANSIT,
    "DP": TrackingStatus.IN_TRANSIT,
    "AF": TrackingStatus.IN_TRANSIT,
    "OD": TrackingStatus.OUT_FOR_DELIVERY,
    "DL": TrackingStatus.DELIVERED,
    "DE": TrackingStatus.EXCEPTION,
    "SE": TrackingStatus.EXCEPTION,
    "CA": TrackingStatus.CANCELLED,
    "RS": TrackingStatus.RETURNED,
}


def status_of(code: str | None) -> TrackingStatus:
    return STATUSES.get((code or "").upper(), TrackingStatus.UNKNOWN)


# ---- our request -> their JSON -------------------------------------------------------------------------


def _party(address: Address, tins: list[dict[str, str]] | None = None) -> dict[str, Any]:
    party: dict[str, Any] = {
        "contact": {"personName": address.name, "phoneNumber": address.phone},
        "address": {
            "streetLines": list(address.street_lines),
            "city": address.city,
            "postalCode": address.postal_code,
            "countryCode": address.country_code.upper(),
        },
    }
    if address.company:
        party["contact"]["companyName"] = address.company
    if address.email:
        party["contact"]["emailAddress"] = address.email
    if address.state_code:
        party["address"]["stateOrProvinceCode"] = address.state_code
    if tins:
        party["tins"] = tins
    return party


def _packages(request: ShipmentRequest, reference: str = "") -> list[dict[str, Any]]:
    packages = []
    for n, parcel in enumerate(request.parcels, start=1):
        package: dict[str, Any] = {
            "sequenceNumber": n,
            "weight": {"units": "KG", "value": parcel.weight_kg},
        }
        if parcel.length_cm and parcel.width_cm and parcel.height_cm:
            package["dimensions"] = {
                "length": parcel.length_cm,
                "width": parcel.width_cm,
                "height": parcel.height_cm,
                "units": "CM",
            }
        if reference:
            package["customerReferences"] = [{"customerReferenceType": REFERENCE_TYPE, "value": reference}]
        packages.append(package)
    return packages


def _tins(eori: str | None, vat: str | None) -> list[dict[str, str]]:
    tins = []
    if eori:
        tins.append({"number": eori, "tinType": "BUSINESS_UNION"})
    if vat:
        tins.append({"number": vat, "tinType": "BUSINESS_NATIONAL"})
    return tins


def customs_detail(customs: CustomsDeclaration) -> dict[str, Any]:
    """customsClearanceDetail; the validator has run, so required values are present."""
    currency = next((line.currency for line in customs.lines if line.currency), "USD")
    total = sum(line.value_minor or 0 for line in customs.lines)
    commodities = []
    for line in customs.lines:
        value = line.value_minor or 0
        commodities.append(
            {
                "description": line.description,
                "countryOfManufacture": line.origin_country,
                "harmonizedCode": (line.hs_code or "").replace(".", ""),
                "quantity": line.quantity,
                "quantityUnits": "PCS",
                "weight": {"units": "KG", "value": round((line.weight_grams or 0) / 1000, 3)},
                "customsValue": {"amount": major_units(value, currency), "currency": currency},
                "unitPrice": {
                    "amount": major_units(value // max(line.quantity, 1), currency),
                    "currency": currency,
                },
            }
        )
    purpose = PURPOSES.get(customs.contents_type or ContentsType.MERCHANDISE, "SOLD")
    return {
        "dutiesPayment": {"paymentType": "SENDER" if customs.incoterm is Incoterm.DDP else "RECIPIENT"},
        "isDocumentOnly": customs.contents_type is ContentsType.DOCUMENTS,
        "commercialInvoice": {
            "shipmentPurpose": purpose,
            "termsOfSale": (customs.incoterm or Incoterm.DAP).value,
        },
        "totalCustomsValue": {"amount": major_units(total, currency), "currency": currency},
        "commodities": commodities,
    }


def _shipment(request: ShipmentRequest, reference: str = "") -> dict[str, Any]:
    customs = request.customs if request.is_international else None
    shipment: dict[str, Any] = {
        "shipper": _party(
            request.shipper, _tins(customs.exporter_eori, customs.exporter_vat) if customs else None
        ),
        "pickupType": "DROPOFF_AT_FEDEX_LOCATION",
        "shipDatestamp": request.ship_date.isoformat(),
        "requestedPackageLineItems": _packages(request, reference),
    }
    if request.service:
        shipment["serviceType"] = request.service
    if customs:
        shipment["customsClearanceDetail"] = customs_detail(customs)
    return shipment


def rate_request(account_number: str, request: ShipmentRequest) -> dict[str, Any]:
    shipment = _shipment(request)
    shipment["recipient"] = {"address": _party(request.recipient)["address"]}
    shipment["shipper"] = {"address": shipment["shipper"]["address"]}
    shipment["rateRequestType"] = ["ACCOUNT"]
    return {"accountNumber": {"value": account_number}, "requestedShipment": shipment}


def ship_request(account_number: str, request: LabelRequest) -> dict[str, Any]:
    customs = request.customs if request.is_international else None
    shipment = _shipment(request, request.reference)
    recipient_tins = _tins(customs.importer_eori, customs.importer_vat) if customs else None
    shipment.update(
        {
            "recipients": [_party(request.recipient, recipient_tins)],
            "packagingType": "YOUR_PACKAGING",
            "totalWeight": round(sum(p.weight_grams for p in request.parcels) / 1000, 3),
            "shippingChargesPayment": {"paymentType": "SENDER"},
            "labelSpecification": {
                "imageType": IMAGE_TYPES[request.label_format],
                "labelStockType": STOCK_TYPES[request.label_format],
            },
        }
    )
    if customs and customs.paperless_trade:
        shipment["shipmentSpecialServices"] = {
            "specialServiceTypes": ["ELECTRONIC_TRADE_DOCUMENTS"],
            "etdDetail": {"requestedDocumentTypes": ["COMMERCIAL_INVOICE"]},
        }
    return {
        "labelResponseOptions": "LABEL",
        "accountNumber": {"value": account_number},
        "requestedShipment": shipment,
    }


def cancel_request(account_number: str, tracking_number: str) -> dict[str, Any]:
    return {
        "accountNumber": {"value": account_number},
        "trackingNumber": tracking_number,
        "deletionControl": "DELETE_ALL_PACKAGES",
        "emailShipment": False,
    }


def track_request(tracking_number: str) -> dict[str, Any]:
    return {
        "includeDetailedScans": True,
        "trackingInfo": [{"trackingNumberInfo": {"trackingNumber": tracking_number}}],
    }


def reference_request(account_number: str, reference: str, ship_date: date) -> dict[str, Any]:
    """Track by our customer reference, within a few days of the ship date (FedEx caps the range)."""
    return {
        "includeDetailedScans": False,
        "referencesInformation": {
            "type": REFERENCE_TYPE,
            "value": reference,
            "accountNumber": account_number,
            "shipDateBegin": (ship_date - timedelta(days=2)).isoformat(),
            "shipDateEnd": (ship_date + timedelta(days=2)).isoformat(),
        },
    }


# ---- their JSON -> our result ------------------------------------------------------------------------


def messages(body: Any) -> tuple[CarrierMessage, ...]:
    """The error envelope `{transactionId, errors[{code, message}]}` as messages."""
    if not isinstance(body, dict):
        return (CarrierMessage("FEDEX.UNREADABLE", "FedEx answered without a JSON body"),)
    found = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            details = {"transactionId": body.get("transactionId")} if body.get("transactionId") else {}
            found.append(
                CarrierMessage(
                    str(error.get("code") or "FEDEX.ERROR"), str(error.get("message") or ""), "error", details
                )
            )
    return tuple(found) or (CarrierMessage("FEDEX.ERROR", "FedEx refused the request without a reason"),)


def _alerts(output: Any) -> tuple[CarrierMessage, ...]:
    """Soft alerts on a 200 (SHIP.RECIPIENT.POSTALCITY.MISMATCH): the label exists, with a remark."""
    alerts = output.get("alerts") if isinstance(output, dict) else None
    return tuple(
        CarrierMessage(str(a.get("code") or ""), str(a.get("message") or ""), "warning")
        for a in alerts or []
        if isinstance(a, dict)
    )


def _output(status: int, body: Any) -> dict[str, Any] | None:
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("output"), dict):
        return None
    output: dict[str, Any] = body["output"]
    return output


def parse_rates(status: int, body: Any) -> RateResult:
    output = _output(status, body)
    if output is None:
        return RateResult(rates=(), messages=messages(body))
    rates = []
    for detail in output.get("rateReplyDetails") or []:
        rated = detail.get("ratedShipmentDetails") or []
        chosen = next((r for r in rated if r.get("rateType") == "ACCOUNT"), rated[0] if rated else None)
        if not chosen or chosen.get("totalNetCharge") is None:
            continue
        currency = str(
            chosen.get("currency") or (chosen.get("shipmentRateDetail") or {}).get("currency") or ""
        )
        rates.append(
            Rate(
                service=str(detail.get("serviceType")),
                service_name=str(detail.get("serviceName") or detail.get("serviceType")),
                amount_minor=to_minor(chosen["totalNetCharge"], currency),
                currency=currency,
            )
        )
    return RateResult(rates=tuple(rates), messages=_alerts(output))


def parse_ship(status: int, body: Any, request: LabelRequest) -> LabelResult:
    output = _output(status, body)
    shipments = (output or {}).get("transactionShipments") or []
    if output is None or not shipments:
        return LabelResult(label=None, messages=messages(body))
    shipment = shipments[0]
    pieces = shipment.get("pieceResponses") or []
    master = str(shipment.get("masterTrackingNumber") or (pieces[0].get("trackingNumber") if pieces else ""))
    numbers = [master] + [
        str(p["trackingNumber"]) for p in pieces if p.get("trackingNumber") not in (None, master)
    ]
    documents = [d for p in pieces for d in p.get("packageDocuments") or [] if d.get("encodedLabel")]
    try:
        document = b"".join(base64.b64decode(d["encodedLabel"], validate=True) for d in documents)
    except (binascii.Error, ValueError):
        document = b""
    rating = ((shipment.get("completedShipmentDetail") or {}).get("shipmentRating") or {}).get(
        "shipmentRateDetails"
    ) or []
    cost = currency = None
    if rating and rating[0].get("totalNetCharge") is not None:
        currency = str(rating[0].get("currency") or "")
        cost = to_minor(rating[0]["totalNetCharge"], currency)
    warnings = _alerts(output) + _alerts(shipment)
    if not master or not document:
        # Sold without a usable document: the label exists at FedEx, so report it (voidable), not drop it.
        warnings += (CarrierMessage("RAPPIT.LABEL.MISSING", "FedEx returned no label document", "warning"),)
    return LabelResult(
        label=Label(
            carrier_shipment_id=master,
            tracking_numbers=tuple(numbers),
            document=document,
            format=request.label_format,
            cost_minor=cost,
            currency=currency,
            reference=request.reference,
        ),
        messages=warnings,
    )


def parse_cancel(status: int, body: Any) -> VoidResult:
    output = _output(status, body)
    if output is None:
        return VoidResult(voided=False, messages=messages(body))
    if output.get("cancelledShipment") is True:
        return VoidResult(voided=True, messages=_alerts(output))
    refused = _alerts(output) or (
        CarrierMessage("FEDEX.CANCEL.REFUSED", "FedEx did not cancel the shipment"),
    )
    return VoidResult(voided=False, messages=tuple(CarrierMessage(m.code, m.text, "error") for m in refused))


def _track_results(body: Any) -> list[dict[str, Any]]:
    output = body.get("output") if isinstance(body, dict) else None
    results: list[dict[str, Any]] = []
    for complete in (output or {}).get("completeTrackResults") or []:
        results.extend(r for r in complete.get("trackResults") or [] if isinstance(r, dict))
    return results


def event_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_track(status: int, body: Any, tracking_number: str) -> TrackResult:
    results = _track_results(body) if status == 200 else []
    if not results:
        return TrackResult(tracking_number, TrackingStatus.UNKNOWN, messages=messages(body))
    result = results[0]
    error = result.get("error")
    if isinstance(error, dict):
        message = CarrierMessage(str(error.get("code") or "TRACKING.ERROR"), str(error.get("message") or ""))
        return TrackResult(tracking_number, TrackingStatus.UNKNOWN, messages=(message,))
    latest = result.get("latestStatusDetail") or {}
    events = tuple(
        TrackingEvent(
            occurred_at=event_time(e.get("date")),
            code=str(e.get("eventType") or ""),
            status=status_of(e.get("eventType")),
            description=str(e.get("eventDescription") or ""),
        )
        for e in result.get("scanEvents") or []
    )
    return TrackResult(tracking_number, status_of(latest.get("code")), events=events)


def parse_reference(status: int, body: Any) -> LabelLookup:
    """Found when any result carries a tracking number and no error (not found is a per-result error)."""
    found = []
    errors = []
    for result in _track_results(body) if status == 200 else []:
        error = result.get("error")
        number = (result.get("trackingNumberInfo") or {}).get("trackingNumber")
        if isinstance(error, dict):
            errors.append(
                CarrierMessage(str(error.get("code") or ""), str(error.get("message") or ""), "warning")
            )
        elif number:
            found.append(str(number))
    if status != 200:
        return LabelLookup(found=False if status == 404 else None, messages=messages(body))
    return LabelLookup(found=bool(found), tracking_numbers=tuple(found), messages=tuple(errors))
