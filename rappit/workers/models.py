"""Dead letters: work that failed every try, kept with its payload and error for an operator."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from rappit.platform.db import Base, IdMixin, utcnow
from rappit.tenancy.models import TenantMixin


class DeadLetter(IdMixin, TenantMixin, Base):
    __tablename__ = "dead_letters"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "kind", "ref_id"),
        CheckConstraint("status in ('dead','retried')", name="status_known"),
        Index("ix_dead_letters_org_status", "org_id", "status", "last_failed_at"),
    )

    kind: Mapped[str] = mapped_column(String(40))
    """What failed: webhook_event, fulfillment_push (dead_letters.RETRYABLE knows how to put each back)."""
    ref_id: Mapped[uuid.UUID] = mapped_column()
    job_name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="dead")
    first_failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    last_failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    retried_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retried_by: Mapped[str | None] = mapped_column(String(100))
