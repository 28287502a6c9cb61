"""The one way an inbox row is handed to arq: job name, job id (the event id) and arguments."""

from __future__ import annotations

import uuid
from typing import Any

JOB = "process_webhook_event"


async def enqueue(redis: Any, org_id: uuid.UUID, event_id: uuid.UUID, request_id: str | None) -> bool:
    """Queue the event's job; False if a job with its id is already queued or running (arq dedup)."""
    job = await redis.enqueue_job(JOB, str(org_id), str(event_id), request_id, _job_id=f"webhook:{event_id}")
    return job is not None
