"""Imports every models module so `metadata` is complete (alembic, the drift test)."""

from __future__ import annotations

from rappit.channels import models as _channels  # noqa: F401
from rappit.inventory import models as _inventory  # noqa: F401
from rappit.orders import models as _orders  # noqa: F401
from rappit.platform.db import Base
from rappit.shipping import models as _shipping  # noqa: F401
from rappit.tenancy import idempotency as _idempotency  # noqa: F401
from rappit.tenancy import models as _tenancy  # noqa: F401
from rappit.workers import models as _workers  # noqa: F401

metadata = Base.metadata
