"""Imports every models module so `metadata` is complete (alembic, the drift test)."""

from __future__ import annotations

from rappit.platform.db import Base
from rappit.tenancy import models as _tenancy  # noqa: F401

metadata = Base.metadata
