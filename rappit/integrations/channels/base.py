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
