"""A FedEx account's credentials and where its API lives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rappit.integrations.carriers.base import require_credentials
from rappit.integrations.carriers.transport import Timeouts

PRODUCTION_URL = "https://apis.fedex.com"
SANDBOX_URL = "https://apis-sandbox.fedex.com"
CREDENTIAL_KEYS = ("client_id", "client_secret")


@dataclass(frozen=True, slots=True)
class FedExAccount:
    client_id: str
    """The project's API key (OAuth client id)."""
    client_secret: str = field(repr=False)
    account_number: str
    """The 9-digit shipping account billed for labels."""
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
    ) -> FedExAccount:
        require_credentials("FedEx", credentials, CREDENTIAL_KEYS, account_number)
        return cls(
            client_id=credentials["client_id"],
            client_secret=credentials["client_secret"],
            account_number=account_number.strip(),
            base_url=(base_url or PRODUCTION_URL).rstrip("/"),
            timeouts=timeouts or Timeouts(),
        )
