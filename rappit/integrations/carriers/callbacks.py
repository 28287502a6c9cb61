"""Signed carrier callbacks: HMAC-SHA256 over "<timestamp>.<raw body>" with the account's callback
secret. The timestamp is signed too, so a captured callback cannot be replayed later with a new one,
and one outside the window (5 minutes) is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rappit.integrations.carriers.base import CallbackRefused

__all__ = ["CallbackRefused", "signature", "signed_headers", "verified_json", "text"]

SIGNATURE_HEADER = "x-rappit-signature"
TIMESTAMP_HEADER = "x-rappit-timestamp"
WINDOW_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, now: datetime) -> dict[str, str]:
    """What a carrier relay (or a sandbox) sends with a callback."""
    timestamp = int(now.timestamp())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verified_json(headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime) -> Any:
    """The body as JSON once signature and window check out; CallbackRefused otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    sent, stamp = lowered.get(SIGNATURE_HEADER), lowered.get(TIMESTAMP_HEADER)
    if not sent or not stamp:
        raise CallbackRefused(401, "SIGNATURE_MISSING", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} required")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise CallbackRefused(401, "SIGNATURE_INVALID", "timestamp is not an integer") from None
    if not hmac.compare_digest(signature(secret, timestamp, body), sent.strip().lower()):
        raise CallbackRefused(401, "SIGNATURE_INVALID", "signature does not match the body")
    if abs(now.timestamp() - timestamp) > WINDOW_SECONDS:
        raise CallbackRefused(401, "STALE_CALLBACK", "timestamp outside the 5-minute window (replay?)")
    try:
        return json.loads(body)
    except ValueError:
        raise CallbackRefused(400, "MALFORMED_JSON", "callback body is not JSON") from None


def text(data: Mapping[str, Any], key: str) -> str:
    """A required string field of a callback body."""
    value = data.get(key)
    if value is None or isinstance(value, dict | list) or str(value).strip() == "":
        raise CallbackRefused(400, "MISSING_FIELD", f"callback has no {key}")
    return str(value)
