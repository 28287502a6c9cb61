"""The demo organization `rappit up` gives a newcomer, made idempotently on every start.

Two phases, because the orders must arrive the way a shop's do (signed webhooks through the API and
the worker, so they have timelines) and those only run once the API is up:

1. `ensure_base` (before the API starts, straight through the services, one transaction): the org
   and its owner, a warehouse, SKUs with stock (one with customs facts, for an international label),
   a Shopify channel, a FedEx and a DHL Express account pointed at the sandboxes this `up` runs.
2. `ensure_orders` (once the API answers): a few Shopify `orders/create` webhooks, signed with the
   channel's secret, each with a fixed event id, so a second start is a duplicate the inbox ignores;
   then wait for the worker to turn them into orders (one of them on hold: not enough stock).

Everything is looked up before it is made, so a second `up` on the same data folder adds nothing.
The demo token and password are kept (0600) in the data folder so every start can print them; they
are printed only while still valid (a revoked token is replaced, a changed password is not shown).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.channels import service as channels
from rappit.channels.models import Channel
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.integrations.channels.signatures import sign
from rappit.integrations.sandboxes.dhl import FakeDhlExpress
from rappit.integrations.sandboxes.fedex import FakeFedEx
from rappit.integrations.sandboxes.shopify import FakeShopify
from rappit.inventory import catalogue, stock
from rappit.inventory.models import Sku, Warehouse
from rappit.orders.models import Order
from rappit.platform.crypto import SecretBox
from rappit.platform.db import make_engine, make_sessionmaker, provide_session, utcnow
from rappit.platform.errors import NotFound
from rappit.platform.settings import Settings
from rappit.shipping import accounts
from rappit.shipping.models import CarrierAccount
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.models import ApiToken, User
from rappit.tenancy.scoping import set_transaction_org
from rappit.tenancy.service import (
    create_organization,
    create_token,
    get_org_by_code,
    hash_token,
    verify_password,
)

CODE = "DEMO"
OWNER_EMAIL = "admin@demo.rappit.test"
SHOP = "demo-shop.myshopify.com"
WAREHOUSE = "MAIN"

# The sandboxes' credentials: they exist only on this machine's loopback.
SHOPIFY_TOKEN = "shpat_demo_sandbox_token"
FEDEX_CREDENTIALS = {"client_id": "demo-fedex-client", "client_secret": "demo-fedex-secret"}
DHL_CREDENTIALS = {"username": "demo-dhl-user", "password": "demo-dhl-pass"}
FEDEX_ACCOUNT, DHL_ACCOUNT = "510087020", "123456789"
FEDEX_NAME, DHL_NAME = "FedEx (sandbox)", "DHL Express (sandbox)"

SANDBOX_PORTS = {"shopify": 8100, "fedex": 8101, "dhl": 8102}
"""Tried first, so the URLs stay the same from one start to the next; a taken port falls back to a
free one (and the demo accounts are pointed at it)."""

ORDERS_DEADLINE_SECONDS = 45.0


@dataclass(frozen=True)
class SkuSpec:
    code: str
    name: str
    on_hand: int
    customs: dict[str, Any] = field(default_factory=dict)


SKUS = (
    SkuSpec("TEE-M", "T-shirt, medium", 40),
    SkuSpec(
        "MUG",
        "Ceramic mug",
        25,
        # Every customs fact on the SKU: an international label needs only the exporter's number.
        {
            "hs_code": "691200",
            "country_of_origin": "PT",
            "customs_value_minor": 900,
            "customs_currency": "USD",
            "weight_grams": 350,
        },
    ),
    SkuSpec("POSTER", "Poster, A2", 3),
)


@dataclass(frozen=True)
class OrderSpec:
    shopify_id: int
    name: str
    lines: tuple[tuple[str, int, str], ...]
    """(sku, quantity, unit price)"""


ORDERS = (
    OrderSpec(5_550_001_001, "#1001", (("MUG", 2, "12.00"),)),
    OrderSpec(5_550_001_002, "#1002", (("TEE-M", 1, "19.00"), ("POSTER", 1, "8.50"))),
    OrderSpec(5_550_001_003, "#1003", (("TEE-M", 3, "19.00"),)),
    OrderSpec(5_550_001_004, "#1004", (("POSTER", 10, "8.50"),)),  # 10 wanted, 2 left: on hold
)
DOMESTIC_ORDER, INTERNATIONAL_ORDER = ORDERS[1], ORDERS[0]

WAREHOUSE_ADDRESS = {
    "name": "Demo Merchant shipping",
    "company": "Demo Merchant",
    "street_lines": ["3900 Shelby Dr"],
    "city": "Memphis",
    "state_code": "TN",
    "postal_code": "38118",
    "country_code": "US",
    "phone": "9015550100",
}
US_CUSTOMER = {
    "name": "Bo Buyer",
    "street_lines": ["2 Main St"],
    "city": "Austin",
    "state_code": "TX",
    "postal_code": "78701",
    "country_code": "US",
    "phone": "5125550100",
}
UK_CUSTOMER = {
    "name": "Cat Customer",
    "street_lines": ["10 Baker St"],
    "city": "London",
    "postal_code": "W1U 3BW",
    "country_code": "GB",
    "phone": "+442075550100",
}
PARCEL = {"weight_grams": 1200, "length_cm": 30, "width_cm": 20, "height_cm": 10}
EXPORTER_VAT = "US123456789"


# ---- sandboxes -------------------------------------------------------------------------------------


@dataclass
class Sandboxes:
    """The loopback Shopify Admin API, FedEx and DHL Express that `up` runs for the demo (threads of
    the `up` process: they live and die with it)."""

    shopify: FakeShopify
    fedex: FakeFedEx
    dhl: FakeDhlExpress

    @classmethod
    def start(cls, ports: dict[str, int] | None = None) -> Sandboxes:
        ports = ports or SANDBOX_PORTS
        shopify = FakeShopify(SHOPIFY_TOKEN)
        fedex = FakeFedEx(**FEDEX_CREDENTIALS)
        dhl = FakeDhlExpress(**DHL_CREDENTIALS)
        for name, server in (("shopify", shopify), ("fedex", fedex), ("dhl", dhl)):
            try:
                server.start(ports.get(name, 0))
            except OSError:  # taken (another `up`, another program): any free port will do
                server.start(0)
        return cls(shopify, fedex, dhl)

    def stop(self) -> None:
        for server in (self.shopify, self.fedex, self.dhl):
            server.stop()


# ---- what is kept between starts -------------------------------------------------------------------


def secrets_file(settings: Settings) -> Path:
    return settings.data_dir / "demo.json"


def _read_kept(settings: Settings) -> dict[str, str]:
    try:
        kept = json.loads(secrets_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in kept.items() if isinstance(v, str)} if isinstance(kept, dict) else {}


def _keep(settings: Settings, values: dict[str, str]) -> None:
    path = secrets_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)


# ---- phase 1: the organization and what it owns --------------------------------------------------


@dataclass(frozen=True)
class DemoBase:
    org_id: uuid.UUID
    token: str
    password: str | None
    """None: changed since `up` set it (only `rappit user reset-password` shows a new one)."""
    channel_id: uuid.UUID
    webhook_secret: str
    fedex_account_id: uuid.UUID
    dhl_account_id: uuid.UUID
    created: bool
    """The organization was made by this start."""


async def _token_valid(session: AsyncSession, token: str) -> bool:
    found = await session.execute(
        select(ApiToken.id).where(
            ApiToken.token_hash == hash_token(token),
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > utcnow()),
        )
    )
    return found.scalar_one_or_none() is not None


async def _ensure_catalogue(session: AsyncSession) -> None:
    if (await catalogue.warehouse_ids(session, [WAREHOUSE])).get(WAREHOUSE) is None:
        await catalogue.create_warehouse(session, code=WAREHOUSE, name="Main warehouse (Memphis)")
    existing = set(await catalogue.sku_ids(session, [s.code for s in SKUS]))
    for spec in SKUS:
        if spec.code in existing:
            continue  # made by an earlier start, with its receipt: never received twice
        await catalogue.create_sku(session, code=spec.code, name=spec.name, reorder_point=5, **spec.customs)
        await stock.adjust(
            session, sku=spec.code, warehouse=WAREHOUSE, quantity=spec.on_hand, reason="receive", note="demo"
        )


async def _ensure_channel(
    session: AsyncSession, box: SecretBox, registry: ChannelRegistry
) -> tuple[uuid.UUID, str]:
    found = (
        await session.execute(select(Channel).where(Channel.type == "shopify", Channel.address == SHOP))
    ).scalar_one_or_none()
    if found is not None:
        return found.id, box.decrypt(found.webhook_secret)
    made = await channels.create_channel(
        session,
        box,
        registry["shopify"],
        name="Demo shop (Shopify sandbox)",
        address=SHOP,
        api_access_token=SHOPIFY_TOKEN,
        warehouse_code=WAREHOUSE,
    )
    return made.channel.id, made.webhook_secret


async def _ensure_account(
    session: AsyncSession,
    box: SecretBox,
    *,
    carrier: str,
    name: str,
    credentials: dict[str, str],
    number: str,
    base_url: str,
) -> uuid.UUID:
    found = (
        await session.execute(select(CarrierAccount).where(CarrierAccount.name == name))
    ).scalar_one_or_none()
    if found is None:
        made = await accounts.create_account(
            session,
            box,
            carrier=carrier,
            name=name,
            credentials=credentials,
            account_number=number,
            base_url=base_url,
        )
        return made.account.id
    if found.base_url != base_url.rstrip("/"):  # this start's sandbox runs on another port
        await accounts.set_base_url(session, found.id, base_url)
    return found.id


async def ensure_base(settings: Settings, sandboxes: Sandboxes) -> DemoBase:
    """Phase 1, one transaction: make what is missing, point the carrier accounts at this run's sandboxes."""
    import secrets

    from rappit.tenancy.scoping import install_scoping

    install_scoping()
    kept = _read_kept(settings)
    box = SecretBox(settings.encryption_keys)
    registry = ChannelRegistry.from_settings(settings)
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with provide_session(make_sessionmaker(engine)) as session:
            created = False
            try:
                org_id, _ = await get_org_by_code(session, CODE)
            except NotFound:
                first_password = secrets.token_urlsafe(12)
                new = await create_organization(
                    session, name="Demo Merchant", code=CODE, admin_email=OWNER_EMAIL, password=first_password
                )
                org_id, created = new.org.id, True
                kept = {"token": new.token.plaintext, "password": first_password}
            await set_transaction_org(session, org_id)
            with org_context(org_id, Actor(kind="system", label="rappit up: demo")):
                owner = (
                    await session.execute(select(User).where(User.email == OWNER_EMAIL))
                ).scalar_one_or_none()
                token: str | None = kept.get("token")
                if not token or not await _token_valid(session, token):
                    issued = await create_token(
                        session, name="demo (rappit up)", role="owner", user_id=owner.id if owner else None
                    )
                    token = issued.plaintext
                password: str | None = kept.get("password")
                if password and (
                    owner is None
                    or not await asyncio.to_thread(verify_password, owner.password_hash, password)
                ):
                    password = None
                await _ensure_catalogue(session)
                channel_id, secret = await _ensure_channel(session, box, registry)
                fedex = await _ensure_account(
                    session,
                    box,
                    carrier="fedex",
                    name=FEDEX_NAME,
                    credentials=FEDEX_CREDENTIALS,
                    number=FEDEX_ACCOUNT,
                    base_url=sandboxes.fedex.url,
                )
                dhl = await _ensure_account(
                    session,
                    box,
                    carrier="dhl_express",
                    name=DHL_NAME,
                    credentials=DHL_CREDENTIALS,
                    number=DHL_ACCOUNT,
                    base_url=sandboxes.dhl.api_url,
                )
    finally:
        await engine.dispose()
    _keep(settings, {"token": token, **({"password": password} if password else {})})
    return DemoBase(org_id, token, password, channel_id, secret, fedex, dhl, created)


# ---- phase 2: orders through the real webhook path ------------------------------------------------


def shopify_order(spec: OrderSpec, at: datetime) -> dict[str, Any]:
    """The parts of a Shopify order Rappit reads; `at` is fixed per organization, so a re-sent order
    is byte-for-byte the one sent before."""
    stamp = at.astimezone(UTC).isoformat(timespec="seconds")
    return {
        "id": spec.shopify_id,
        "name": spec.name,
        "currency": "USD",
        "created_at": stamp,
        "updated_at": stamp,
        "cancelled_at": None,
        "email": "bo.buyer@example.com",
        "line_items": [
            {"id": spec.shopify_id * 10 + n, "sku": sku, "title": sku, "quantity": qty, "price": price}
            for n, (sku, qty, price) in enumerate(spec.lines)
        ],
    }


def event_id(channel_id: uuid.UUID, spec: OrderSpec) -> str:
    """The same X-Shopify-Event-Id on every start: the second delivery is a duplicate, stored once."""
    return str(uuid.uuid5(channel_id, f"demo orders/create {spec.shopify_id}"))


@dataclass(frozen=True)
class DemoOrder:
    spec: OrderSpec
    id: uuid.UUID
    number: str
    status: str


async def _orders(session: AsyncSession, channel_id: uuid.UUID) -> dict[str, Order]:
    rows = await session.execute(
        select(Order).where(
            Order.channel_id == channel_id, Order.external_id.in_([str(s.shopify_id) for s in ORDERS])
        )
    )
    return {o.external_id or "": o for o in rows.scalars()}


async def ensure_orders(
    settings: Settings,
    api: str,
    base: DemoBase,
    sandboxes: Sandboxes,
    *,
    tick: Callable[[], None] = lambda: None,
    keep_going: Callable[[], bool] = lambda: True,
    deadline_seconds: float = ORDERS_DEADLINE_SECONDS,
) -> list[DemoOrder]:
    """Phase 2: send the demo orders as signed webhooks (a duplicate on later starts), put them in the
    Shopify sandbox too (reconciliation finds the same orders), wait for the worker to make them."""
    from rappit.tenancy.scoping import install_scoping

    install_scoping()
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    sessionmaker = make_sessionmaker(engine)

    async def read() -> dict[str, Order]:
        with org_context(base.org_id, Actor(kind="system", label="rappit up: demo")):
            async with provide_session(sessionmaker) as session:
                await set_transaction_org(session, base.org_id)
                return await _orders(session, base.channel_id)

    try:
        async with provide_session(sessionmaker) as session:
            await set_transaction_org(session, base.org_id)
            with org_context(base.org_id):
                channel_made = (
                    await session.execute(select(Channel.created_at).where(Channel.id == base.channel_id))
                ).scalar_one()
        at = channel_made.replace(microsecond=0)
        async with httpx.AsyncClient(timeout=10) as http:
            for n, spec in enumerate(ORDERS):
                order = shopify_order(spec, at + timedelta(minutes=n))
                sandboxes.shopify.put_order(order)
                body = json.dumps(order).encode()
                resp = await http.post(
                    f"{api}/webhooks/shopify/{base.channel_id}",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Shopify-Hmac-Sha256": sign(base.webhook_secret, body),
                        "X-Shopify-Topic": "orders/create",
                        "X-Shopify-Shop-Domain": SHOP,
                        "X-Shopify-Event-Id": event_id(base.channel_id, spec),
                        "X-Shopify-Triggered-At": order["updated_at"],
                    },
                )
                if resp.status_code != 200:
                    raise RuntimeError(f"the demo webhook for {spec.name} was refused: {resp.text}")
        deadline = time.monotonic() + deadline_seconds
        found = await read()
        while len(found) < len(ORDERS) and time.monotonic() < deadline and keep_going():
            tick()
            await asyncio.sleep(0.2)
            found = await read()
        return [
            DemoOrder(spec, o.id, o.number, o.status)
            for spec in ORDERS
            if (o := found.get(str(spec.shopify_id))) is not None
        ]
    finally:
        await engine.dispose()


async def count_rows(settings: Settings, org_id: uuid.UUID) -> dict[str, int]:
    """How many of each demo thing the org has (the idempotency test compares two starts)."""
    from rappit.tenancy.scoping import install_scoping

    install_scoping()
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with provide_session(make_sessionmaker(engine)) as session:
            await set_transaction_org(session, org_id)
            with org_context(org_id):
                out = {}
                for name, model in (
                    ("warehouses", Warehouse),
                    ("skus", Sku),
                    ("channels", Channel),
                    ("carrier_accounts", CarrierAccount),
                    ("orders", Order),
                ):
                    out[name] = (await session.execute(select(func.count()).select_from(model))).scalar_one()
                return out
    finally:
        await engine.dispose()


# ---- what the banner shows -------------------------------------------------------------------------


def curl(method: str, url: str, token: str, body: dict[str, Any] | None = None, **headers: str) -> str:
    """A ready-to-paste one-line curl command (each part shell-quoted)."""
    parts = ["curl", "-s", "-X", method, url, "-H", f"Authorization: Bearer {token}"]
    for name, value in headers.items():
        parts += ["-H", f"{name.replace('_', '-')}: {value}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body, separators=(",", ":"))]
    return " ".join(shlex.quote(p) for p in parts)


def label_body(order_id: uuid.UUID, account_id: uuid.UUID, *, international: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": str(order_id),
        "carrier_account_id": str(account_id),
        "service": "P" if international else "FEDEX_GROUND",
        "ship_from": WAREHOUSE_ADDRESS,
        "ship_to": UK_CUSTOMER if international else US_CUSTOMER,
        "parcels": [PARCEL],
    }
    if international:  # the SKU holds every customs fact; the declaration needs the exporter's number
        body["customs"] = {"exporter_vat": EXPORTER_VAT, "incoterm": "DAP"}
    return body


def banner(
    *,
    api: str,
    base: DemoBase,
    orders: list[DemoOrder],
    sandboxes: Sandboxes,
    command: str,
) -> list[str]:
    """The lines `up` prints once the demo is ready."""
    reset = f"{command} user reset-password --org {CODE} --email {OWNER_EMAIL}"
    sign_in = (
        f"org {CODE}, {OWNER_EMAIL}, password {base.password}"
        if base.password
        else (f"org {CODE}, {OWNER_EMAIL} (password not shown: changed since `up` set it, or set before)")
    )
    out = [
        f"  Demo organization {CODE}" + (" (created now)" if base.created else " (from an earlier start)"),
        f"    API          {api}/api/v1   (docs: {api}/schema)",
        f"    Demo token   {base.token}",
        f"    Dashboard    {api}/dashboard/",
        f"    Sign in      {sign_in}",
        f"                 a new password: {reset}",
        f"    Sandboxes    Shopify Admin API {sandboxes.shopify.url}, FedEx {sandboxes.fedex.url}, "
        f"DHL Express {sandboxes.dhl.api_url}",
    ]
    if orders:
        shown = ", ".join(f"{o.number} ({o.spec.name}) {o.status}" for o in orders)
        out.append(f"    Orders       {shown}")
    by_spec = {o.spec.shopify_id: o for o in orders}
    domestic, international = (
        by_spec.get(DOMESTIC_ORDER.shopify_id),
        by_spec.get(INTERNATIONAL_ORDER.shopify_id),
    )
    if domestic is None or international is None:
        out.append(
            "    The demo orders are not there yet (is the worker running?): "
            f"curl -s -H 'Authorization: Bearer {base.token}' {api}/api/v1/orders"
        )
        return out
    key = uuid.uuid4().hex[:12]
    rates = {k: v for k, v in label_body(domestic.id, base.fedex_account_id, international=False).items()
             if k in ("order_id", "ship_from", "ship_to", "parcels")}  # fmt: skip
    out += [
        "",
        f"  Rates for {domestic.number} from every carrier account:",
        "    " + curl("POST", f"{api}/api/v1/shipments/rates", base.token, rates),
        f"  Buy a FedEx label for {domestic.number} (201, with the tracking number; the same",
        "  Idempotency-Key again answers the same shipment):",
        "    "
        + curl(
            "POST",
            f"{api}/api/v1/shipments",
            base.token,
            label_body(domestic.id, base.fedex_account_id, international=False),
            Idempotency_Key=f"demo-fedex-{key}",
        ),
        f"  An international DHL Express label for {international.number} (to London; customs facts "
        "from the SKU):",
        "    "
        + curl(
            "POST",
            f"{api}/api/v1/shipments",
            base.token,
            label_body(international.id, base.dhl_account_id, international=True),
            Idempotency_Key=f"demo-dhl-{key}",
        ),
        "  Then: GET /api/v1/shipments/{id}/label (the PDF); DHL Express has no void in its API, so a",
        "  DHL label can only be marked void_requested: void it with DHL yourself.",
    ]
    return out
