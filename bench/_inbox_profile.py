"""Where a worker's time goes applying a backlog: one process, in-process claim loop, cProfile.

    .venv/bin/python bench/_inbox_profile.py [EVENTS]   (default 3000)

Stores EVENTS pending orders/create events for one org (one statement), then drains them with
`rappit.workers.inbox.drain` (the claim loop's work, one loop) under cProfile, and prints the
orders/s, the load average, the database's share (time in asyncpg round trips) and the top
functions by cumulative time. Not part of `./run bench all`.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys
import time
import uuid

from _e2e import _org_with_stock, order_body, store_backlog
from _stack import bench_stack
from sqlalchemy import select

from rappit.channels.models import Channel
from rappit.inventory.models import Warehouse
from rappit.platform.crypto import SecretBox
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.logging import configure_logging
from rappit.tenancy.context import org_context
from rappit.workers import inbox
from rappit.workers.context import Deps
from rappit.workers.inbox import drain


async def main(n: int) -> None:
    with bench_stack("inbox_profile") as stack:
        settings = stack.settings
        configure_logging(settings.log_level, json=settings.log_json)  # as the worker: JSON, WARNING
        engine = make_engine(settings, pool_size=4, max_overflow=0)
        sessionmaker = make_sessionmaker(engine)
        org = await _org_with_stock(sessionmaker, "PR", 10_000_000)
        with org_context(org.org.id):
            async with provide_session(sessionmaker) as session:
                channel = Channel(
                    id=uuid.uuid4(),
                    type="shopify",
                    name="p",
                    address="p.myshopify.com",
                    webhook_secret=SecretBox(settings.encryption_keys).encrypt("s"),
                )
                channel.warehouse_id = (await session.execute(select(Warehouse.id))).scalar_one()
                session.add(channel)
        await store_backlog(engine, org.org.id, str(channel.id), [order_body(i).decode() for i in range(n)])
        deps = Deps.build(settings)
        sizes: list[int] = []
        claim = inbox.Claimer.claim

        async def counted(self: inbox.Claimer, d: Deps) -> list[inbox.Claimed]:
            got = await claim(self, d)
            sizes.append(len(got))
            return got

        inbox.Claimer.claim = counted  # type: ignore[method-assign]
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        tally = await drain(deps, max_seconds=600)
        profile.disable()
        elapsed = time.perf_counter() - started
        await deps.close()
        await engine.dispose()
    print(f"{n} events in {elapsed:.2f} s = {n / elapsed:.0f} orders/s, one process, one loop: {tally}")
    print(f"load average {os.getloadavg()}; claims: {len(sizes)}, sizes {sizes[:20]}...")
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
