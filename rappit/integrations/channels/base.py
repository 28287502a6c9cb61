"""The seam every sales channel plugs into: one `ChannelAdapter` per channel type.

Ingress, the inbox job and reconciliation call these methods and never branch on a channel's type:
adding a channel is one adapter module, one registry entry and a migration for the CHECK lists.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from rappit.integrations.channels.canonical import CanonicalOrder
from rappit.platform.settings import Settings


class TopicKind(enum.Enum):
    """What a delivery's topic asks of Rappit."""

    ORDER = "order"
    """The payload is the whole order (create, update, cancel by status): upsert it."""
    CANCEL = "cancel"
    """The payload only identifies the order (a deletion): cancel it."""
    EDIT = "edit"
    """The payload is a delta: fetch the whole order from the channel, then upsert it."""
    IGNORED = "ignored"
    """A topic Rappit does not act on: stored, marked ignored."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What ingress stores of a verified delivery besides its raw body."""

    topic: str
    delivery_id: str
    """The channel's id of this delivery, kept for support (not unique: WooCommerce's repeat)."""
    dedup_key: str
    """What identifies the change itself: a second delivery with the same key is a duplicate."""
    triggered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChannelAccess:
    """Where and as whom to call a channel's API (the token decrypted for this call only)."""

    address: str
    token: str | None


class DeliveryRefused(Exception):
    """A delivery that is not acceptable: ingress answers `status` with `code` and stores nothing."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class OperationNotSupported(Exception):
    """The channel (or carrier) has no such operation."""


class ChannelActionNeeded(Exception):
    """The event cannot be applied until someone fixes the channel (for example adds API credentials)."""


class ChannelUnavailable(Exception):
    """The channel's API could not be asked or did not answer usably (connection failed, timed out, 5xx,
    429): the same call may succeed later, so the caller retries."""


class ChannelRejected(Exception):
    """The channel's API refused the call (a 4xx other than 429, or nothing on the channel matches what
    was asked): asking again unchanged will not help."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class FulfillmentLine:
    external_line_id: str | None
    """The channel's id of the order line (Shopify line item id, WooCommerce line item id)."""
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Fulfillment:
    """What the channel is told when a shipment is handed to the carrier."""

    order_external_id: str
    lines: tuple[FulfillmentLine, ...]
    """Only the shipment's lines: a partial shipment fulfils only what it carries."""
    tracking_number: str
    tracking_company: str
    tracking_url: str
    reference: str
    """Our push id, for the channel's logs where it keeps one."""


@dataclass(frozen=True, slots=True)
class PushResult:
    external_ref: str
    """The channel's id of what was created (Shopify fulfillment id; WooCommerce note id)."""
    already_there: bool = False
    """An earlier attempt had already reached the channel (found by its tracking number): nothing new
    was created."""


class ChannelAdapter(Protocol):
    type: str
    """The channel type as stored on channels.type and in URLs (/webhooks/{type}/{id})."""
    number_letter: str
    """The letter in this channel's order numbers (ORG-S-000001)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelAdapter: ...

    def normalize_address(self, address: str) -> str:
        """The canonical form of the shop address, or ValueError with a message for the merchant."""
        ...

    def is_ping(self, headers: Mapping[str, str], body: bytes) -> bool:
        """An unsigned liveness check the channel sends when a webhook is set up: answered, never stored."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """The delivery's signature over the raw body, checked in constant time."""
        ...

    def signature_present(self, headers: Mapping[str, str]) -> bool: ...

    def delivery(self, headers: Mapping[str, str], body: bytes, address: str) -> Delivery:
        """Topic, delivery id and dedup key of a verified delivery; DeliveryRefused if unusable."""
        ...

    def classify(self, topic: str) -> TopicKind: ...

    def map_order(self, data: Any, kind: TopicKind) -> CanonicalOrder:
        """The canonical order of an ORDER or CANCEL payload (or a fetched order); PayloadError if garbled."""
        ...

    def edited_order_id(self, data: Any) -> str:
        """The order an EDIT delivery is about."""
        ...

    async def fetch_order(self, access: ChannelAccess, order_id: str) -> dict[str, Any]:
        """The whole order from the channel's API; OperationNotSupported if it has none."""
        ...

    async def orders_page(
        self, access: ChannelAccess, since: datetime, until: datetime, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the orders updated in [since, until], oldest update first, and the cursor of the
        next page (None on the last); `cursor` None asks for the first page (reconciliation).
        OperationNotSupported if the channel cannot list orders."""
        ...

    async def push_fulfillment(
        self, access: ChannelAccess, fulfillment: Fulfillment, *, http: httpx.AsyncClient
    ) -> PushResult:
        """Tell the channel these lines shipped with this tracking. Idempotent: a second call for the
        same tracking number finds the first one's result instead of creating another. Raises
        ChannelUnavailable (retry), ChannelRejected or ChannelActionNeeded (do not)."""
        ...
