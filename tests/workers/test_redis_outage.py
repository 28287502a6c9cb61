"""A worker rides out a Redis outage: it keeps retrying the connection and carries on, in the same process."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from arq.connections import create_pool

from rappit.platform.localstack import EmbeddedRedis
from rappit.workers.settings import redis_settings


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


async def ping(settings, value: str, seconds: float) -> str:
    pool = await create_pool(redis_settings(settings))
    try:
        job = await pool.enqueue_job("ping", value, _job_id=f"ping-{value}")
        assert job is not None
        return await job.result(timeout=seconds, poll_delay=0.05)
    finally:
        await pool.aclose()


async def test_a_worker_survives_a_redis_outage_and_runs_jobs_when_redis_returns(settings) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rappit-outage-"))
    own = EmbeddedRedis(tmp / "redis").start()  # this test's Redis, to stop and start on the same socket
    log_path = tmp / "worker.log"
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url,
        SYSTEM_DATABASE_URL=settings.system_database_url,
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        REDIS_URL=own.url,
        LOG_LEVEL="INFO",
    )
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "rappit.app.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    isolated = dataclasses.replace(settings, redis_url=own.url)
    try:
        before = uuid.uuid4().hex
        assert await ping(isolated, before, 30) == before  # the worker consumes the queue

        own.stop()  # Redis goes away under a running worker
        outage_ends = time.monotonic() + 4
        wait_for(lambda: worker.poll() is not None or time.monotonic() > outage_ends, 5, "the outage")
        assert worker.poll() is None, log_path.read_text()[-3000:]
        own.start()  # back, on the same socket (and empty)

        after = uuid.uuid4().hex
        assert await ping(isolated, after, 30) == after, log_path.read_text()[-3000:]
        assert worker.poll() is None  # the same process ran it: it was never restarted
        wait_for(lambda: after.encode() in log_path.read_bytes(), 5, "the ping to be logged")
        assert b"worker.redis_unavailable" in log_path.read_bytes()  # and it said so
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        own.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert worker.returncode in (0, -signal.SIGTERM), log_path.read_text()[-3000:]
