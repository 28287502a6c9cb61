"""A DHL Express (MyDHL API) account's credentials and where its API lives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rappit.integrations.carriers.base import require_credentials
from rappit.integrations.carriers.transport import Timeouts

PRODUCTION_URL = "https://express.api.dhl.com/mydhlapi"
TEST_URL = "https://express.api.dhl.com/mydhlapi/test"
CREDENTIAL_KEYS = ("username", "password")
API_VERSION = "3.1.0"
"""Sent as x-version, the interface version the mapper speaks."""


@dataclass(frozen=True, slots=True)
class DhlAccount:
    username: str
    """MyDHL API key (the HTTP Basic user)."""
    password: str = field(repr=False)
    account_number: str
    """The shipper account billed for labels (9 digits)."""
    base_url: str = PRODUCTION_URL
    timeouts: Timeouts = field(default_factory=Timeouts)

    @classmethod
    def from_credentials(
        cls,
        credentials: Mapping[str, str],
        *,
        account_number: str,
        base_url: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> DhlAccount:
        require_credentials("DHL Express", credentials, CREDENTIAL_KEYS, account_number)
        return cls(
            username=credentials["username"],
            password=credentials["password"],
            account_number=account_number.strip(),
            base_url=(base_url or PRODUCTION_URL).rstrip("/"),
            timeouts=timeouts or Timeouts(),
        )
