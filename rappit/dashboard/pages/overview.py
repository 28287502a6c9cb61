"""Overview: today's orders, holds, low stock, dead letters, breakers, webhooks; refreshed by polling."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.response import Template

from rappit.channels import inbox
from rappit.channels import service as channels
from rappit.dashboard.charts import hourly_bars
from rappit.dashboard.web import JobsPort, render
from rappit.inventory import queries
from rappit.orders import service as orders
from rappit.platform.db import utcnow
from rappit.platform.http import DbSession
from rappit.shipping import accounts
from rappit.tenancy.auth import PASSIVE, requires

READ = [requires("orders:read")]


async def overview_data(state: State, session: Any) -> dict[str, Any]:
    stats = await orders.order_stats(session)
    low, low_total = await queries.list_levels(
        session, sku=None, warehouse=None, low_stock=True, limit=10, offset=0
    )
    jobs: JobsPort = state.dashboard_jobs
    per_channel = await inbox.received_per_channel(session, since=utcnow() - timedelta(hours=1))
    channel_rows = [
        (c, *per_channel.get(c.id, (0, 0))) for c in await channels.list_channels(session, limit=50, offset=0)
    ]
    latest, _ = await orders.list_orders(
        session, status=None, channel_id=None, created_from=None, created_to=None, limit=5
    )
    return {
        "stats": stats,
        "chart": hourly_bars(stats.per_hour),
        "low": low,
        "low_total": low_total,
        "dead": await jobs.count_dead(session),
        "breakers": await accounts.breaker_states(session, state.carriers.breakers),
        "channels": channel_rows,
        "latest": latest,
    }


class OverviewPages(Controller):
    path = ""

    @get("/", guards=READ, name="dashboard.overview")
    async def overview(
        self, request: Request[Any, Any, Any], state: State, db_session: DbSession
    ) -> Template:
        return render(request, "overview.html", **await overview_data(state, db_session))

    @get("/overview/live", guards=READ, opt={PASSIVE: True})
    async def live(self, request: Request[Any, Any, Any], state: State, db_session: DbSession) -> Template:
        """The tiles alone, polled by the page every few seconds (does not keep the session alive)."""
        return render(request, "_overview_live.html", **await overview_data(state, db_session))
