"""A loopback DHL Express MyDHL API (rates, shipments, tracking) for tests, benchmarks and the demo.
HTTP Basic on every call, x-version header, problem+json errors `{instance, detail, title, message,
status (a string), additionalDetails[]}` (CARRIERS.md §2). There is no shipment void route, as in DHL's
API: DELETE /shipments/... answers 404 like any unknown path. The 401 body is this sandbox's choice."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rappit.integrations.sandboxes._loopback import Drop, LoopbackServer, Reply, pdf_label, zpl_label

PROBLEM = "application/problem+json"


@dataclass
class SoldShipment:
    tracking_number: str
    account_number: str
    reference: str
    planned: str


def problem(status: int, detail: str, title: str, instance: str, extra: list[str] | None = None) -> Reply:
    body: dict[str, Any] = {
        "instance": instance,
        "detail": detail,
        "title": title,
        "message": title,
        "status": str(status),
    }
    if extra:
        body["additionalDetails"] = extra
    return Reply(status, body, PROBLEM)


class FakeDhlExpress(LoopbackServer):
    BASE = "/mydhlapi"

    def __init__(self, username: str = "dhl-user", password: str = "dhl-pass") -> None:
        super().__init__()
        self.expected_auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.shipments: dict[str, SoldShipment] = {}
        self._seq = 1_234_500_000
        self._seq_lock = threading.Lock()

    @property
    def api_url(self) -> str:
        """What an account's base URL override points at."""
        return self.url + self.BASE

    def sold_for(self, reference: str) -> list[SoldShipment]:
        return [s for s in self.shipments.values() if s.reference == reference]

    def _next(self) -> str:
        with self._seq_lock:
            self._seq += 1
            return str(self._seq)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = urlsplit(path)
        route = parts.path.removeprefix(self.BASE)
        if headers.get("authorization") != self.expected_auth:
            return problem(401, "Invalid credentials", "Unauthorized", parts.path)
        if self.faults.hang:
            self.stall()
            raise Drop
        self.wait(self.faults.delay)
        if self.take_server_error():
            return problem(
                500,
                "999: Process failure occurred. Process ID associated for that transaction",
                "Internal Server Error",
                parts.path,
            )
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if method == "POST" and route in ("/rates", "/shipments"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return problem(400, "Invalid JSON", "Bad request", parts.path)
            return self._rates(data, parts.path) if route == "/rates" else self._create(data, parts.path)
        if method == "GET" and route.startswith("/shipments/") and route.endswith("/tracking"):
            number = route.split("/")[2]
            found = [self.shipments[number]] if number in self.shipments else []
            return self._tracking(found, parts.path)
        if method == "GET" and route == "/tracking":
            return self._by_reference(query, parts.path)
        return problem(404, "Not Found", "Not Found", parts.path)

    def _rates(self, data: dict[str, Any], instance: str) -> Reply:
        if self.faults.reject_address:
            return problem(
                400,
                "420505: The postal code is not valid for the destination country",
                "Bad request",
                instance,
            )
        weight = sum(float(p.get("weight") or 0) for p in data.get("packages") or [])
        products = [("P", "EXPRESS WORLDWIDE", 45.0, 2), ("U", "EXPRESS WORLDWIDE EU", 39.0, 3)]
        if data.get("productCode"):
            products = [p for p in products if p[0] == data["productCode"]]
            if not products:
                return problem(
                    400,
                    "7008: Requested product(s) not available based on your search criteria.",
                    "Product not found",
                    instance,
                )
        return Reply(
            200,
            {
                "products": [
                    {
                        "productCode": code,
                        "productName": name,
                        "totalPrice": [
                            {
                                "currencyType": "BILLC",
                                "priceCurrency": "EUR",
                                "price": round(base + 4 * weight, 2),
                            }
                        ],
                        "deliveryCapabilities": {"totalTransitDays": str(days)},
                    }
                    for code, name, base, days in products
                ]
            },
        )

    def _create(self, data: dict[str, Any], instance: str) -> Reply:
        missing = [
            key
            for key in (
                "plannedShippingDateAndTime",
                "pickup",
                "productCode",
                "accounts",
                "customerDetails",
                "content",
            )
            if key not in data
        ]
        if missing:
            return problem(
                422,
                "Multiple problems found, see Additional Details",
                "Validation error",
                instance,
                [f"required key [{k}] not found" for k in missing],
            )
        if self.faults.reject_address:
            return problem(
                400,
                "1001: The requested product(s) (P) not available based on your search criteria.",
                "Bad request",
                instance,
                ["Receiver postal code / city combination is invalid"],
            )
        content = data["content"]
        if content.get("isCustomsDeclarable"):
            declaration = content.get("exportDeclaration")
            if not declaration:
                return problem(
                    422,
                    "Multiple problems found, see Additional Details",
                    "Validation error",
                    instance,
                    ["required key [exportDeclaration] not found"],
                )
            problems = []
            for n, item in enumerate(declaration.get("lineItems") or [], start=1):
                for key in ("description", "price", "quantity", "manufacturerCountry", "weight"):
                    if item.get(key) in (None, "", {}):
                        problems.append(
                            f"#/content/exportDeclaration/lineItems/{n}: required key [{key}] not found"
                        )
                if not any(c.get("value") for c in item.get("commodityCodes") or []):
                    problems.append(
                        f"#/content/exportDeclaration/lineItems/{n}: required key [commodityCodes] not found"
                    )
            if not declaration.get("lineItems"):
                problems.append("#/content/exportDeclaration: required key [lineItems] not found")
            if problems:
                return problem(
                    422,
                    "Multiple problems found, see Additional Details",
                    "Validation error",
                    instance,
                    problems,
                )
        account = next((a.get("number") for a in data["accounts"] if a.get("typeCode") == "shipper"), "")
        reference = next((r.get("value") for r in data.get("customerReferences") or []), "")
        number = self._next()
        self.shipments[number] = SoldShipment(
            number, str(account), str(reference), str(data["plannedShippingDateAndTime"])
        )
        if self.faults.sell_then_drop:
            raise Drop
        if self.faults.sell_then_hang:
            self.stall()
            raise Drop
        encoding = (data.get("outputImageProperties") or {}).get("encodingFormat", "pdf")
        lines = ["DHL EXPRESS", f"WAYBILL {number}", f"REF {reference}"]
        doc = zpl_label(lines, number) if encoding == "zpl" else pdf_label(lines)
        documents = [
            {"imageFormat": encoding.upper(), "content": base64.b64encode(doc).decode(), "typeCode": "label"}
        ]
        if any(s.get("serviceCode") == "WY" for s in data.get("valueAddedServices") or []):
            invoice = pdf_label(["COMMERCIAL INVOICE", f"WAYBILL {number}"])
            documents.append(
                {"imageFormat": "PDF", "content": base64.b64encode(invoice).decode(), "typeCode": "invoice"}
            )
        packages = [
            {"referenceNumber": n, "trackingNumber": f"JD01460000{self._next()}"}
            for n, _ in enumerate(content.get("packages") or [], start=1)
        ]
        return Reply(
            201,
            {
                "shipmentTrackingNumber": number,
                "packages": packages,
                "documents": documents,
                "shipmentCharges": [{"currencyType": "BILLC", "priceCurrency": "EUR", "price": 52.1}],
            },
        )

    def _tracking(self, found: list[SoldShipment], instance: str) -> Reply:
        if not found:
            return problem(404, "221: Shipment not found", "Not Found", instance)
        return Reply(
            200,
            {
                "shipments": [
                    {
                        "shipmentTrackingNumber": s.tracking_number,
                        "status": "Success",
                        "events": [
                            {
                                "date": s.planned[:10],
                                "time": "12:00:00",
                                "typeCode": "SA",
                                "description": "Shipment information received",
                            }
                        ],
                    }
                    for s in found
                ]
            },
        )

    def _by_reference(self, query: dict[str, str], instance: str) -> Reply:
        if not query.get("shipmentReference") or not query.get("shipperAccountNumber"):
            return problem(
                400,
                "shipperAccountNumber is required when tracking by shipmentReference",
                "Bad request",
                instance,
            )
        found = [
            s
            for s in self.shipments.values()
            if s.reference == query["shipmentReference"] and s.account_number == query["shipperAccountNumber"]
        ]
        return self._tracking(found, instance)
