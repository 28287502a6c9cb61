"""Invariant checks shared by the inventory tests (run as the table owner, across the org's rows)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import text


async def assert_inventory_consistent(admin_engine, org_id) -> dict:
    """Levels equal the ledger replayed from zero, link by link; reserved equals active reservations."""
    async with admin_engine.connect() as conn:
        levels = {
            r.id: (r.on_hand, r.reserved)
            for r in await conn.execute(
                text("select id, on_hand, reserved from inventory_levels where org_id = :o"), {"o": org_id}
            )
        }
        ledger = (
            await conn.execute(
                text(
                    """select level_id, on_hand_before, on_hand_after, on_hand_delta,
                              reserved_before, reserved_after, reserved_delta
                         from inventory_ledger where org_id = :o order by level_id, id"""
                ),
                {"o": org_id},
            )
        ).all()
        active = dict(
            (
                await conn.execute(
                    text(
                        "select level_id, sum(quantity) from reservations where org_id = :o and "
                        "status = 'active' group by level_id"
                    ),
                    {"o": org_id},
                )
            ).all()
        )
    replay: dict = defaultdict(lambda: (0, 0))
    for row in ledger:
        on_hand, reserved = replay[row.level_id]
        assert (row.on_hand_before, row.reserved_before) == (on_hand, reserved), (
            f"ledger chain broken at {row}"
        )
        replay[row.level_id] = (on_hand + row.on_hand_delta, reserved + row.reserved_delta)
    for level_id, current in levels.items():
        assert replay[level_id] == current, (
            f"level {level_id}: ledger replays to {replay[level_id]}, level is {current}"
        )
        assert current[1] == active.get(level_id, 0), (
            f"level {level_id}: reserved {current[1]} != active {active.get(level_id, 0)}"
        )
        assert 0 <= current[1] <= current[0]
    return levels


async def setup_stock(client, org, stock: dict[tuple[str, str], int]) -> None:
    """Create the SKUs and warehouses named in `stock` (those that exist already are kept) and
    receive those quantities."""
    skus = {s for s, _ in stock}
    whs = {w for _, w in stock}
    for code in sorted(skus):
        made = await client.post("/api/v1/skus", json={"code": code}, headers=org.headers)
        assert made.status_code in (201, 409), made.text
    for code in sorted(whs):
        made = await client.post("/api/v1/warehouses", json={"code": code}, headers=org.headers)
        assert made.status_code in (201, 409), made.text
    for (sku, wh), qty in stock.items():
        if qty:
            resp = await client.post(
                "/api/v1/inventory/adjust",
                json={"sku": sku, "warehouse_code": wh, "quantity": qty, "reason": "receive"},
                headers=org.headers,
            )
            assert resp.status_code == 200, resp.text
