"""Webhook signatures of the sales channels: base64(HMAC-SHA256(secret, raw body)), compared in constant time.

Shopify sends it in X-Shopify-Hmac-Sha256, WooCommerce in X-WC-Webhook-Signature; both sign the raw
request body, so verification happens before anything parses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.digest(secret.encode(), body, hashlib.sha256)).decode()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())
