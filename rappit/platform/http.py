"""Type aliases shared by every controller (explicit Litestar markers; inference is deprecated)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

DbSession = NamedDependency[AsyncSession]
"""The request's session, inside the request's one transaction."""
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size")]
Offset = Annotated[int, QueryParameter(ge=0, description="rows to skip")]
Id = Annotated[uuid.UUID, PathParameter()]
