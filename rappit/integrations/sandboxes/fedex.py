"""A loopback FedEx (OAuth, Rate, Ship, Cancel, Track, Track by References) for tests, benchmarks and the
demo. Paths, bearer auth, bodies and the error envelope `{transactionId, errors[{code, message}]}` follow
FedEx's API specs (CARRIERS.md §1). Codes FedEx does not document (customs missing, address rejected)
are this sandbox's choice: CUSTOMS.COMMODITIES.REQUIRED and RECIPIENT.ADDRESS.INVALID."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from rappit.integrations.sandboxes._loopback import Drop, LoopbackServer, Reply, pdf_label, zpl_label


@dataclass
class SoldLabel:
    tracking_number: str
    account_number: str
    reference: str
    ship_date: str
    cancelled: bool = False


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"transactionId": str(uuid.uuid4()), "errors": [{"code": code, "message": message}]})


class FakeFedEx(LoopbackServer):
    def __init__(self, client_id: str = "fedex-client", client_secret: str = "fedex-secret") -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: dict[str, bool] = {}
        """Issued tokens -> still valid (expire_tokens() invalidates them, as an hour passing would)."""
        self.token_requests = 0
        self.labels: dict[str, SoldLabel] = {}
        self._seq = 794_000_000_000
        self._seq_lock = threading.Lock()
        self.postal_city_mismatch = False
        """Sell, with FedEx's soft 200 alert SHIP.RECIPIENT.POSTALCITY.MISMATCH."""

    def expire_tokens(self) -> None:
        self.tokens = dict.fromkeys(self.tokens, False)

    def sold_for(self, reference: str) -> list[SoldLabel]:
        return [label for label in self.labels.values() if label.reference == reference]

    def _next_tracking(self) -> str:
        with self._seq_lock:
            self._seq += 1
            return str(self._seq)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path == "/oauth/token" and method == "POST":
            return self._token(body)
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not self.tokens.get(token):
            return _error(
                401, "NOT.AUTHORIZED.ERROR", "Access token expired. Please modify your request and try again."
            )
        if self.faults.hang:
            self.stall()
            raise Drop
        self.wait(self.faults.delay)
        if self.take_server_error():
            return _error(503, "SERVICE.UNAVAILABLE.ERROR", "The service is currently unavailable.")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "INVALID.INPUT.EXCEPTION", "Invalid field value in the input")
        routes = {
            ("POST", "/rate/v1/rates/quotes"): self._rate,
            ("POST", "/ship/v1/shipments"): self._ship,
            ("PUT", "/ship/v1/shipments/cancel"): self._cancel,
            ("POST", "/track/v1/trackingnumbers"): self._track,
            ("POST", "/track/v1/referencenumbers"): self._by_reference,
        }
        route = routes.get((method, path))
        if route is None:
            return _error(404, "NOT.FOUND.ERROR", "The resource you requested is no longer available.")
        return route(data)

    def _token(self, body: bytes) -> Reply:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return _error(401, "NOT.AUTHORIZED.ERROR", "The given client credentials were not valid.")
        token = secrets.token_urlsafe(24)
        self.tokens[token] = True
        return Reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 3599, "scope": "CXS"})

    def _address_problem(self, shipment: dict[str, Any]) -> Reply | None:
        if self.faults.reject_address:
            return _error(
                400, "RECIPIENT.ADDRESS.INVALID", "Recipient address is invalid. Please correct it."
            )
        return None

    def _customs_problem(self, shipment: dict[str, Any]) -> Reply | None:
        shipper = (shipment.get("shipper") or {}).get("address") or {}
        recipients = shipment.get("recipients") or [shipment.get("recipient") or {}]
        recipient = (recipients[0] or {}).get("address") or {}
        if shipper.get("countryCode") == recipient.get("countryCode"):
            return None
        commodities = (shipment.get("customsClearanceDetail") or {}).get("commodities") or []
        if not commodities:
            return _error(
                400, "CUSTOMS.COMMODITIES.REQUIRED", "Commodities are required for international shipments."
            )
        for n, item in enumerate(commodities):
            for key in ("description", "countryOfManufacture", "harmonizedCode", "customsValue", "weight"):
                if not item.get(key):
                    return _error(400, "CUSTOMS.COMMODITY.INVALID", f"commodities[{n}].{key} is required.")
        return None

    def _rate(self, data: dict[str, Any]) -> Reply:
        shipment = data.get("requestedShipment") or {}
        if problem := self._address_problem(shipment):
            return problem
        weight = sum(
            float((p.get("weight") or {}).get("value") or 0)
            for p in shipment.get("requestedPackageLineItems") or []
        )
        services = [("FEDEX_GROUND", "FedEx Ground", 8.5), ("FEDEX_2_DAY", "FedEx 2Day", 19.0)]
        if shipment.get("serviceType"):
            services = [s for s in services if s[0] == shipment["serviceType"]]
        details = [
            {
                "serviceType": code,
                "serviceName": name,
                "ratedShipmentDetails": [
                    {
                        "rateType": "ACCOUNT",
                        "totalNetCharge": round(base + 1.25 * weight, 2),
                        "currency": "USD",
                    }
                ],
            }
            for code, name, base in services
        ]
        return Reply(200, {"transactionId": str(uuid.uuid4()), "output": {"rateReplyDetails": details}})

    def _ship(self, data: dict[str, Any]) -> Reply:
        shipment = data.get("requestedShipment") or {}
        for key in (
            "shipper",
            "recipients",
            "serviceType",
            "labelSpecification",
            "requestedPackageLineItems",
        ):
            if not shipment.get(key):
                return _error(400, "INVALID.INPUT.EXCEPTION", f"requestedShipment.{key} is required.")
        if problem := self._address_problem(shipment) or self._customs_problem(shipment):
            return problem
        account = str((data.get("accountNumber") or {}).get("value") or "")
        packages = shipment["requestedPackageLineItems"]
        refs = [r.get("value") for p in packages for r in p.get("customerReferences") or []]
        master = self._next_tracking()
        numbers = [master] + [self._next_tracking() for _ in packages[1:]]
        image = (shipment.get("labelSpecification") or {}).get("imageType", "PDF")
        self.labels[master] = SoldLabel(
            master, account, str(refs[0] if refs else ""), str(shipment.get("shipDatestamp"))
        )
        if self.faults.sell_then_drop:
            raise Drop
        if self.faults.sell_then_hang:
            self.stall()
            raise Drop
        pieces = []
        for number in numbers:
            lines = ["FedEx", f"TRK {number}", f"REF {refs[0] if refs else ''}"]
            doc = zpl_label(lines, number) if image == "ZPLII" else pdf_label(lines)
            pieces.append(
                {
                    "trackingNumber": number,
                    "packageDocuments": [
                        {
                            "contentType": "LABEL",
                            "copiesToPrint": 1,
                            "docType": image,
                            "encodedLabel": base64.b64encode(doc).decode(),
                        }
                    ],
                }
            )
        output: dict[str, Any] = {
            "transactionShipments": [
                {
                    "masterTrackingNumber": master,
                    "serviceType": shipment["serviceType"],
                    "pieceResponses": pieces,
                    "completedShipmentDetail": {
                        "shipmentRating": {
                            "shipmentRateDetails": [{"totalNetCharge": 12.34, "currency": "USD"}]
                        }
                    },
                }
            ]
        }
        if self.postal_city_mismatch:
            output["alerts"] = [
                {
                    "code": "SHIP.RECIPIENT.POSTALCITY.MISMATCH",
                    "alertType": "NOTE",
                    "message": "Recipient Postal-City Mismatch.",
                }
            ]
        return Reply(200, {"transactionId": str(uuid.uuid4()), "output": output})

    def _cancel(self, data: dict[str, Any]) -> Reply:
        label = self.labels.get(str(data.get("trackingNumber")))
        account = str((data.get("accountNumber") or {}).get("value") or "")
        if label is None or label.account_number != account:
            return _error(
                404, "TRACKING.TRACKINGNUMBER.NOTFOUND", "Tracking number cannot be found for this account."
            )
        if self.faults.refuse_void:
            alert = {
                "code": "SHIPMENT.CANCELLATION.NOTALLOWED",
                "alertType": "WARNING",
                "message": "Shipment already tendered to FedEx; it cannot be cancelled.",
            }
            return Reply(
                200,
                {
                    "transactionId": str(uuid.uuid4()),
                    "output": {"cancelledShipment": False, "alerts": [alert]},
                },
            )
        label.cancelled = True
        return Reply(
            200,
            {
                "transactionId": str(uuid.uuid4()),
                "output": {"cancelledShipment": True, "successMessage": "Success"},
            },
        )

    def _result(self, label: SoldLabel) -> dict[str, Any]:
        code = "CA" if label.cancelled else "OC"
        return {
            "trackingNumberInfo": {"trackingNumber": label.tracking_number},
            "latestStatusDetail": {
                "code": code,
                "description": "Label created" if code == "OC" else "Cancelled",
            },
            "scanEvents": [
                {
                    "date": f"{label.ship_date}T09:00:00+00:00",
                    "eventType": code,
                    "eventDescription": "Shipment information sent to FedEx",
                }
            ],
        }

    def _track(self, data: dict[str, Any]) -> Reply:
        results = []
        for info in data.get("trackingInfo") or []:
            number = str((info.get("trackingNumberInfo") or {}).get("trackingNumber"))
            label = self.labels.get(number)
            if label is None:
                results.append(
                    {
                        "trackingNumber": number,
                        "trackResults": [
                            {
                                "trackingNumberInfo": {"trackingNumber": number},
                                "error": {
                                    "code": "TRACKING.TRACKINGNUMBER.NOTFOUND",
                                    "message": "Tracking number cannot be found.",
                                },
                            }
                        ],
                    }
                )
            else:
                results.append({"trackingNumber": number, "trackResults": [self._result(label)]})
        return Reply(200, {"transactionId": str(uuid.uuid4()), "output": {"completeTrackResults": results}})

    def _by_reference(self, data: dict[str, Any]) -> Reply:
        info = data.get("referencesInformation") or {}
        found = [
            label
            for label in self.labels.values()
            if label.reference == info.get("value") and label.account_number == str(info.get("accountNumber"))
        ]
        if not found:
            error = {
                "code": "TRACKING.REFERENCENUMBER.NOTFOUND",
                "message": "Reference number cannot be found.",
            }
            results = [{"trackingNumber": "", "trackResults": [{"error": error}]}]
        else:
            results = [
                {"trackingNumber": label.tracking_number, "trackResults": [self._result(label)]}
                for label in found
            ]
        return Reply(200, {"transactionId": str(uuid.uuid4()), "output": {"completeTrackResults": results}})
