from __future__ import annotations

import asyncio
import uuid

from arq import create_pool
from arq.jobs import Job, JobStatus
from arq.worker import Worker

from rappit.workers.settings import WorkerSettings, redis_settings


async def test_a_real_worker_runs_an_enqueued_job(settings) -> None:
    rs = redis_settings(settings)
    pool = await create_pool(rs)
    job_id = f"ping-{uuid.uuid4()}"
    try:
        job = await pool.enqueue_job("ping", "hello", _job_id=job_id)
        assert job is not None
        # Same id while the job (or its result) exists: arq refuses the duplicate.
        assert await pool.enqueue_job("ping", "hello", _job_id=job_id) is None
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=rs,
            burst=True,
            ctx={"settings": settings},
            poll_delay=0.05,
        )
        await asyncio.wait_for(worker.main(), timeout=30)
        await worker.close()
        assert await Job(job_id, pool).status() == JobStatus.complete
        assert await job.result(timeout=5) == "hello"
    finally:
        await pool.aclose()
