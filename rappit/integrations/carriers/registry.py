"""Carrier name -> adapter class. The one place that knows which carriers exist: adding one is a folder
under carriers/ and a line here (plus a migration for the CHECK list built from CARRIER_NAMES)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from rappit.integrations.carriers.base import CarrierAdapter, CarrierEvent
from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.carriers.dhl.adapter import DhlExpressAdapter
from rappit.integrations.carriers.fedex.adapter import FedExAdapter
from rappit.integrations.carriers.transport import Timeouts


class AdapterClass(Protocol):
    name: str
    can_void: bool
    display_name: str
    """The carrier's name as customers and channels know it (Shopify's tracking company)."""
    tracking_url_template: str
    """The carrier's public tracking page, `{number}` standing for the tracking number."""

    def for_account(
        self,
        credentials: Mapping[str, str],
        *,
        account_number: str,
        base_url: str | None,
        http: httpx.AsyncClient,
        breaker: Any,
        timeouts: Timeouts | None = None,
    ) -> CarrierAdapter: ...

    def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime
    ) -> CarrierEvent:
        """A class method: verifying a callback needs the account's callback secret, not its credentials."""
        ...


ADAPTERS: tuple[AdapterClass, ...] = (FedExAdapter, DhlExpressAdapter)

CARRIER_NAMES: tuple[str, ...] = tuple(a.name for a in ADAPTERS)
"""Every carrier, for CHECK constraints and input validation (a change needs a migration)."""

_BY_NAME = {a.name: a for a in ADAPTERS}


def adapter_class(carrier: str) -> AdapterClass:
    """KeyError for a carrier we do not know (validate input against CARRIER_NAMES first)."""
    return _BY_NAME[carrier]


def adapter_for(
    carrier: str,
    *,
    account_id: str,
    credentials: Mapping[str, str],
    account_number: str,
    base_url: str | None,
    http: httpx.AsyncClient,
    breakers: BreakerBoard,
    timeouts: Timeouts | None = None,
) -> CarrierAdapter:
    """The adapter of one carrier account: its breaker is the account's, shared by every process."""
    return adapter_class(carrier).for_account(
        credentials,
        account_number=account_number,
        base_url=base_url,
        http=http,
        breaker=breakers.for_account(carrier, account_id),
        timeouts=timeouts,
    )


@dataclass(frozen=True, slots=True)
class TrackingLink:
    company: str
    number: str
    url: str


def tracking_link(carrier: str, number: str) -> TrackingLink:
    """What a channel shows the customer for a tracking number of this carrier."""
    cls = adapter_class(carrier)
    return TrackingLink(
        cls.display_name, number, cls.tracking_url_template.format(number=quote(number, safe=""))
    )


def parse_callback(
    carrier: str, headers: Mapping[str, str], body: bytes, secret: str, *, now: datetime
) -> CarrierEvent:
    """Verify (signature, timestamp window) and parse a callback addressed to `carrier`: CallbackRefused
    if unusable, KeyError for a carrier we do not know."""
    return adapter_class(carrier).parse_callback(headers, body, secret, now=now)
