from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import text

from rappit.channels import service
from rappit.integrations.channels.shopify import ShopifyAdapter
from rappit.integrations.channels.signatures import sign, verify
from rappit.platform.crypto import SecretBox
from rappit.platform.db import provide_session
from rappit.tenancy.context import org_context


async def test_secret_is_shown_once_and_stored_only_encrypted(client, make_org, admin_engine) -> None:
    org = await make_org()
    resp = await client.post(
        "/api/v1/channels",
        json={
            "type": "shopify",
            "name": "Main store",
            "address": "https://Acme-Outdoor.myshopify.com/",
            "api_access_token": "shpat_secret_admin_token",
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    secret, channel = body["webhook_secret"], body["channel"]
    assert len(secret) >= 32 and channel["address"] == "acme-outdoor.myshopify.com"
    assert (
        channel["webhook_url"].endswith(f"/webhooks/shopify/{channel['id']}")
        and channel["has_api_credentials"]
    )
    shown = await client.get(f"/api/v1/channels/{channel['id']}", headers=org.headers)
    listed = await client.get("/api/v1/channels", headers=org.headers)
    for later in (shown, listed):
        assert secret not in later.text and "shpat_secret_admin_token" not in later.text
    async with admin_engine.connect() as conn:
        row = (
            (await conn.execute(text("select * from channels where id = :i"), {"i": channel["id"]}))
            .mappings()
            .one()
        )
    dumped = repr(dict(row))
    assert secret not in dumped and "shpat_secret_admin_token" not in dumped


async def test_rotation_returns_a_new_secret_and_disable_is_idempotent(client, make_org, app) -> None:
    org = await make_org()
    made = (
        await client.post(
            "/api/v1/channels",
            json={"type": "woocommerce", "name": "Woo", "address": "https://shop.example.test"},
            headers=org.headers,
        )
    ).json()
    cid = made["channel"]["id"]
    rotated = await client.post(f"/api/v1/channels/{cid}/rotate-secret", headers=org.headers)
    assert rotated.status_code == 200 and rotated.json()["webhook_secret"] != made["webhook_secret"]
    assert rotated.json()["channel"]["secret_rotated_at"]
    raw = b'{"id": 700, "currency": "EUR", "date_modified_gmt": "2026-11-01T10:00:00", "line_items": []}'

    async def deliver(secret: str, delivery: str) -> int:
        headers = {
            "X-WC-Webhook-Signature": sign(secret, raw),
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Delivery-ID": delivery,
            "content-type": "application/json",
        }
        return (await client.post(f"/webhooks/woocommerce/{cid}", content=raw, headers=headers)).status_code

    assert await deliver(made["webhook_secret"], "old") == 401  # the old secret is dead at once
    assert await deliver(rotated.json()["webhook_secret"], "new") == 200
    for _ in range(2):
        disabled = await client.post(f"/api/v1/channels/{cid}/disable", headers=org.headers)
        assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    dup = await client.post(
        "/api/v1/channels",
        json={"type": "woocommerce", "name": "Again", "address": "https://shop.example.test/"},
        headers=org.headers,
    )
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "CHANNEL_EXISTS"
    bad = await client.post(
        "/api/v1/channels",
        json={"type": "shopify", "name": "x", "address": "evil.example.com"},
        headers=org.headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ADDRESS"


async def test_key_rotation_keeps_old_secrets_readable_and_reencrypts(sessionmaker, make_org) -> None:
    org = await make_org()
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_box = SecretBox((old_key,))
    with org_context(org.id):
        async with provide_session(sessionmaker) as session:
            made = await service.create_channel(
                session,
                old_box,
                ShopifyAdapter("https://{shop}"),
                name="s",
                address="rot.myshopify.com",
                webhook_secret="x" * 32,
            )
        rotated_box = SecretBox((new_key, old_key))  # new key first, old still listed
        async with provide_session(sessionmaker) as session:
            channel = await service.get_channel(session, made.channel.id)
            assert rotated_box.decrypt(channel.webhook_secret) == "x" * 32
            assert await service.reencrypt_all(session, rotated_box) == 1
        async with provide_session(sessionmaker) as session:
            channel = await service.get_channel(session, made.channel.id)
            assert (
                SecretBox((new_key,)).decrypt(channel.webhook_secret) == "x" * 32
            )  # old key no longer needed


def test_signature_is_base64_hmac_sha256_of_the_raw_body_per_rfc_4231() -> None:
    """RFC 4231 test case 2 (key "Jefe"): the published HMAC-SHA256, base64-encoded as Shopify and
    WooCommerce send it, so the signer is checked against the standard, not against itself."""
    import base64

    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    vector = base64.b64encode(bytes.fromhex(expected)).decode()
    assert sign("Jefe", b"what do ya want for nothing?") == vector
    assert verify("Jefe", b"what do ya want for nothing?", vector)
    assert not verify("Jefe", b"what do ya want for nothing!", vector)
    body = b'{"id": 1}'
    signature = sign("topsecret", body)
    assert verify("topsecret", body, signature)
    assert not verify("topsecret", body + b" ", signature)
    assert not verify("wrong", body, signature)
    assert not verify("topsecret", body, None) and not verify("topsecret", body, "")
