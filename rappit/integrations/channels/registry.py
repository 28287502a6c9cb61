"""Channel type -> adapter. The one place that knows which channels exist: adding one is a line here."""

from __future__ import annotations

from collections.abc import Iterator

from rappit.integrations.channels.base import ChannelAdapter
from rappit.integrations.channels.shopify import ShopifyAdapter
from rappit.integrations.channels.woocommerce import WooCommerceAdapter
from rappit.platform.settings import Settings

ADAPTERS = (ShopifyAdapter, WooCommerceAdapter)

CHANNEL_TYPES = tuple(a.type for a in ADAPTERS)
"""Every channel type, for CHECK constraints and input validation (a change needs a migration)."""
MANUAL = "manual"
ORDER_SOURCES = {**{a.type: a.number_letter for a in ADAPTERS}, MANUAL: "M"}
"""Where an order came from -> the letter in its number (ORG-S-000001; M for orders entered by hand)."""


class ChannelRegistry:
    """The adapters of one process, configured from its settings (tests build one on a sandbox)."""

    def __init__(self, adapters: list[ChannelAdapter]) -> None:
        self._by_type = {a.type: a for a in adapters}

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelRegistry:
        return cls([a.from_settings(settings) for a in ADAPTERS])

    def get(self, channel_type: str) -> ChannelAdapter | None:
        return self._by_type.get(channel_type)

    def __getitem__(self, channel_type: str) -> ChannelAdapter:
        return self._by_type[channel_type]

    def __iter__(self) -> Iterator[ChannelAdapter]:
        return iter(self._by_type.values())
