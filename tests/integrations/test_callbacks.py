"""Signed carrier callbacks: the signature covers timestamp and body; a stale one is a replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rappit.integrations.carriers.base import CallbackRefused, TrackingStatus
from rappit.integrations.carriers.callbacks import signed_headers
from rappit.integrations.carriers.dhl.adapter import DhlExpressAdapter
from rappit.integrations.carriers.fedex.adapter import FedExAdapter

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FEDEX_BODY = json.dumps(
    {
        "eventId": "ev-1",
        "trackingNumber": "794000000001",
        "customerReference": "shp-1",
        "scanEvent": {
            "date": "2026-11-20T11:00:00+00:00",
            "eventType": "PU",
            "eventDescription": "Picked up",
        },
    }
).encode()


def test_fedex_callback_parsed_when_signed(fedex: FedExAdapter) -> None:
    event = fedex.parse_callback(signed_headers("s3cret", FEDEX_BODY, now=NOW), FEDEX_BODY, "s3cret", now=NOW)
    assert (event.event_id, event.tracking_number, event.reference) == ("ev-1", "794000000001", "shp-1")
    assert event.status is TrackingStatus.IN_TRANSIT and event.occurred_at == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("headers_at", "secret", "body", "code"),
    [
        (NOW, "wrong", FEDEX_BODY, "SIGNATURE_INVALID"),
        (NOW, "s3cret", FEDEX_BODY + b" ", "SIGNATURE_INVALID"),
        (NOW - timedelta(minutes=6), "s3cret", FEDEX_BODY, "STALE_CALLBACK"),
    ],
)
def test_fedex_callback_refused(
    fedex: FedExAdapter, headers_at: datetime, secret: str, body: bytes, code: str
) -> None:
    headers = signed_headers(secret, FEDEX_BODY, now=headers_at)
    with pytest.raises(CallbackRefused) as refused:
        fedex.parse_callback(headers, body, "s3cret", now=NOW)
    assert (refused.value.status, refused.value.code) == (401, code)


def test_dhl_callback_delivered(dhl: DhlExpressAdapter) -> None:
    body = json.dumps(
        {
            "eventId": "d-9",
            "shipmentTrackingNumber": "1234500001",
            "event": {"date": "2026-11-21", "time": "09:30:00", "typeCode": "OK", "description": "Delivered"},
        }
    ).encode()
    event = dhl.parse_callback(signed_headers("k", body, now=NOW), body, "k", now=NOW)
    assert event.status is TrackingStatus.DELIVERED and event.reference is None
    with pytest.raises(CallbackRefused) as refused:
        dhl.parse_callback({}, body, "k", now=NOW)
    assert refused.value.code == "SIGNATURE_MISSING"
