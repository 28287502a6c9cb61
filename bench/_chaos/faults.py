"""Runs the plan's fault schedule against the platform, logging what it did and when, and the windows
in which PostgreSQL or Redis was unavailable (a 503 inside one is the promised answer)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from _chaos.plan import Fault
from _chaos.platform import Platform

GRACE = 15.0
"""After a database or Redis fault ends, pools reconnect and queued requests drain: 503s may follow."""


@dataclass
class FaultRunner:
    platform: Platform
    faults: list[Fault]
    t0: float
    log: list[dict[str, Any]] = field(default_factory=list)
    windows: list[tuple[float, float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, fault: Fault, **what: Any) -> None:
        entry = {"at": round(self.now(), 1), "kind": fault.kind, **what}
        self.log.append(entry)
        print(f"   fault {entry}", flush=True)

    async def run(self) -> None:
        tasks = []
        for f in self.faults:
            wait = f.at - self.now()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(self.one(f)))
        await asyncio.gather(*tasks)

    async def one(self, f: Fault) -> None:
        p = self.platform
        if f.kind in ("kill_worker", "kill_api"):
            name = f"{'worker' if f.kind == 'kill_worker' else 'api'}{f.target}"
            self.note(f, target=name, pid=p.kill(name))
        elif f.kind == "redis_down":
            if not p.embedded_redis:
                self.note(f, skipped="REDIS_URL given: not ours to stop")
                return
            start = self.now()
            await asyncio.to_thread(p.redis_stop)
            self.note(f, seconds=f.seconds, phase="stopped")
            await asyncio.sleep(f.seconds)
            await asyncio.to_thread(p.redis_start)
            self.note(f, phase="started")
            self.windows.append((start, self.now() + GRACE, "redis_down"))
        elif f.kind == "pg_restart":
            if not p.embedded_pg:
                self.note(f, skipped="DATABASE_URL given: not ours to restart")
                return
            start = self.now()
            await asyncio.to_thread(p.pg_restart)
            self.note(f, took=round(self.now() - start, 1))
            self.windows.append((start, self.now() + GRACE, "pg_restart"))
        elif f.kind == "pg_stall":
            if not p.embedded_pg:
                self.note(f, skipped="DATABASE_URL given: not ours to stop")
                return
            start = self.now()
            pids = await asyncio.to_thread(p.pg_pids)
            p.pg_signal(signal.SIGSTOP, pids)
            self.note(f, processes=len(pids), seconds=f.seconds, phase="SIGSTOP")
            try:
                await asyncio.sleep(f.seconds)
            finally:
                p.pg_signal(signal.SIGCONT, pids)
            self.note(f, phase="SIGCONT")
            self.windows.append((start, self.now() + GRACE, "pg_stall"))
        elif f.kind.startswith("carrier_"):
            sandbox = p.fedex if f.target == 0 else p.dhl
            name = "fedex" if f.target == 0 else "dhl"
            switch = {
                "carrier_fail": "server_error",
                "carrier_hang": "hang",
                "carrier_sell_drop": "sell_then_drop",
            }[f.kind]
            setattr(sandbox.faults, switch, -1 if switch == "server_error" else True)
            self.note(f, carrier=name, switch=switch, seconds=f.seconds)
            await asyncio.sleep(f.seconds)
            setattr(sandbox.faults, switch, 0 if switch == "server_error" else False)
