"""Shapes at the HTTP edge for dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from rappit.workers.models import DeadLetter


class DeadLetterOut(msgspec.Struct):
    id: uuid.UUID
    kind: str
    ref_id: uuid.UUID
    job_name: str
    error: str
    attempts: int
    status: str
    first_failed_at: datetime
    last_failed_at: datetime
    retried_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, d: DeadLetter) -> DeadLetterOut:
        return cls(
            id=d.id,
            kind=d.kind,
            ref_id=d.ref_id,
            job_name=d.job_name,
            error=d.error,
            attempts=d.attempts,
            status=d.status,
            first_failed_at=d.first_failed_at,
            last_failed_at=d.last_failed_at,
            retried_at=d.retried_at,
            payload=d.payload,
        )
