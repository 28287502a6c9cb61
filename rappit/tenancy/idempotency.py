"""`Idempotency-Key` for mutating POSTs, stored in PostgreSQL per org for 24 hours.

The stored response is written in the same transaction as the operation it answers, so a
committed operation always has its replay and a rolled-back one never does. While one request
holds a key (a transaction-scoped advisory lock), a concurrent one with the same key gets 409.
A failed request (any error) stores nothing: retrying it with the same key runs it again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from litestar import Request, Response
from litestar.serialization import encode_json
from sqlalchemy import DateTime, Integer, LargeBinary, String, UniqueConstraint, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from rappit.platform.db import Base, IdMixin, TimestampMixin, utcnow
from rappit.platform.errors import BadRequest, BusinessRuleViolation, Conflict
from rappit.tenancy.context import require_org_id
from rappit.tenancy.models import TenantMixin

HEADER = "idempotency-key"
TTL = timedelta(hours=24)
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyKey(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "idempotency_keys"
    __extra_table_args__ = (UniqueConstraint("org_id", "key"),)

    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of method, path, query and body: the same key must come with the same request."""
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


async def idempotent(
    request: Request[Any, Any, Any],
    session: AsyncSession,
    operation: Callable[[], Awaitable[Any]],
    *,
    status_code: int = 201,
) -> Response[Any]:
    """Run `operation` at most once per Idempotency-Key; replay its stored response afterwards."""
    key = request.headers.get(HEADER)
    if key is None:
        return Response(await operation(), status_code=status_code)
    if not _KEY.match(key):
        raise BadRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters", code="INVALID_IDEMPOTENCY_KEY"
        )
    body = await request.body()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), request.url.query.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    fingerprint = digest.hexdigest()
    org_id = require_org_id()
    locked = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"idem:{org_id}:{key}"}
        )
    ).scalar_one()
    if not locked:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            code="IDEMPOTENCY_IN_PROGRESS",
        )
    existing = (
        await session.execute(select(IdempotencyKey).where(IdempotencyKey.key == key))
    ).scalar_one_or_none()
    if existing is not None and existing.expires_at > utcnow():
        if existing.fingerprint != fingerprint:
            raise BusinessRuleViolation(
                "this Idempotency-Key was used with a different request", code="IDEMPOTENCY_KEY_REUSED"
            )
        return Response(
            content=existing.body,
            status_code=existing.status_code,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    if existing is not None:  # expired: the key is free again
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == existing.id))
    raw = encode_json(await operation())
    session.add(
        IdempotencyKey(
            key=key,
            method=request.method,
            path=request.url.path[:500],
            fingerprint=fingerprint,
            status_code=status_code,
            body=raw,
            expires_at=utcnow() + TTL,
        )
    )
    await session.flush()
    return Response(content=raw, status_code=status_code, media_type="application/json")


async def purge_expired(session: AsyncSession) -> int:
    """Delete expired keys across orgs (the caller passes a system-role session from `unscoped()`)."""
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


__all__ = ["IdempotencyKey", "idempotent", "purge_expired"]
