"""Big imports run as jobs: stored before the 202, run by a real arq worker with progress, retried,
dead-lettered, and applied all or nothing."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import uuid
from typing import Any

from arq.worker import Worker
from sqlalchemy import text

from rappit.inventory import imports
from rappit.platform.db import provide_session
from rappit.tenancy.context import org_context
from rappit.workers.context import Deps
from rappit.workers.imports import MAX_ATTEMPTS, sweep_unfinished_imports
from rappit.workers.settings import WorkerSettings, functions, redis_settings
from tests.conftest import admin_scalar
from tests.inventory.helpers import assert_inventory_consistent, setup_stock

CSV = {"content-type": "text/csv"}


async def run_worker(settings, *, max_seconds: float = 180, **tuning: Any) -> None:
    """A real arq worker in burst mode (drains the queue, deferred retries included, then stops), with a
    job timeout that an import on a loaded shared machine stays inside."""
    settings = dataclasses.replace(settings, job_timeout_seconds=150)
    worker = Worker(
        functions=functions(settings.job_timeout_seconds),
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        redis_settings=redis_settings(settings),
        burst=True,
        ctx={"settings": settings, "import_backoff": (0.1, 0.1, 0.1), **tuning},
        poll_delay=0.05,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=max_seconds)
    finally:
        await worker.close()


async def seed_catalogue(admin_engine, org_id, n: int, whs: tuple[str, ...] = ("W1",)) -> None:
    async with admin_engine.begin() as conn:
        await conn.execute(
            text(
                "insert into skus (id, org_id, code, name, reorder_point, created_at) "
                "select gen_random_uuid(), :o, 'S' || lpad(g::text, 6, '0'), '', 0, now() "
                "from generate_series(1, :n) g"
            ),
            {"o": org_id, "n": n},
        )
        for wh in whs:
            await conn.execute(
                text(
                    "insert into warehouses (id, org_id, code, name, created_at) "
                    "values (gen_random_uuid(), :o, :c, '', now())"
                ),
                {"o": org_id, "c": wh},
            )


async def counts(admin_engine, org_id) -> tuple[int, int, int]:
    async with admin_engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "select (select count(*) from skus where org_id = :o), "
                    "(select count(*) from inventory_levels where org_id = :o), "
                    "(select count(*) from inventory_ledger where org_id = :o)"
                ),
                {"o": org_id},
            )
        ).one()


async def test_a_job_import_reports_progress_its_summary_and_rejected_lines(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await seed_catalogue(admin_engine, org.id, 3000)
    rows = [f"S{i:06d},{i % 50},W1" for i in range(1, 3001)]
    rows[9] = "S000010,-1,W1"  # line 11
    rows[99] = "GHOST,1,W1"  # line 101
    body = ("sku,quantity,warehouse_code\n" + "\n".join(rows) + "\n").encode()
    resp = await client.post(
        "/api/v1/inventory/bulk", params={"job": "true"}, content=body, headers={**org.headers, **CSV}
    )
    assert resp.status_code == 202, resp.text
    import_id = resp.json()["import_id"]
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert (shown["status"], shown["processed_rows"], shown["total_rows"]) == ("queued", 0, 3000)
    # Stored before the 202: the file is in the database, waiting for its job.
    size = await admin_scalar(admin_engine, "select length(body) from imports where id = :i", i=import_id)
    assert size == len(body)

    await run_worker(settings)
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert shown["status"] == "done", shown
    assert (shown["processed_rows"], shown["total_rows"], shown["attempts"]) == (3000, 3000, 1)
    summary = shown["summary"]
    zero = sum(1 for i in range(1, 3001) if i % 50 == 0 and i not in (10, 100))
    assert (summary["received"], summary["failed"], summary["unchanged"]) == (3000, 2, zero)
    assert summary["applied"] == 3000 - 2 - zero
    assert [(e["line"], e["code"]) for e in shown["rejected"]] == [
        (11, "INVALID_QUANTITY"),
        (101, "UNKNOWN_SKU"),
    ]
    rejected = await client.get(f"/api/v1/imports/{import_id}/rejected.csv", headers=org.headers)
    assert list(csv.reader(io.StringIO(rejected.text)))[1:] == [
        ["11", "S000010", "", "INVALID_QUANTITY", shown["rejected"][0]["message"]],
        ["101", "GHOST", "", "UNKNOWN_SKU", shown["rejected"][1]["message"]],
    ]
    # The file is dropped once applied; its ledger rows name the import.
    assert await admin_scalar(admin_engine, "select body from imports where id = :i", i=import_id) is None
    assert (
        await admin_scalar(
            admin_engine, "select count(*) from inventory_ledger where reference_id = :i", i=import_id
        )
        == summary["applied"]
    )
    await assert_inventory_consistent(admin_engine, org.id)
    listed = (await client.get("/api/v1/imports", headers=org.headers)).json()
    assert [i["id"] for i in listed] == [import_id]


async def test_progress_is_visible_while_the_import_transaction_is_still_open(
    client, make_org, sessionmaker, admin_engine
) -> None:
    org = await make_org()
    body = ("code,name\n" + "".join(f"P{i},n{i}\n" for i in range(2000))).encode()
    resp = await client.post(
        "/api/v1/skus/bulk", params={"job": "true"}, content=body, headers={**org.headers, **CSV}
    )
    assert resp.status_code == 202
    import_id = uuid.UUID(resp.json()["import_id"])
    seen: list[tuple[str, int]] = []

    async def progress(processed: int) -> None:
        await imports.write_progress(sessionmaker, import_id, processed)
        view = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
        seen.append((view["status"], view["processed_rows"]))

    with org_context(org.id):
        async with provide_session(sessionmaker) as session:
            assert await imports.start_attempt(session, import_id) is not None
        async with provide_session(sessionmaker) as session:
            summary = await imports.run_stored(session, import_id, progress)
            # Not committed yet: another transaction sees the gauge, not the SKUs.
            assert (
                await admin_scalar(admin_engine, "select count(*) from skus where org_id = :o", o=org.id) == 0
            )
    assert seen and seen[-1] == ("running", 2000)
    assert summary is not None and summary["created"] == 2000
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert (shown["status"], shown["processed_rows"]) == ("done", 2000)


async def test_a_failure_mid_import_leaves_nothing_half_written_then_a_retry_applies_it_all(
    client, make_org, settings, admin_engine, monkeypatch
) -> None:
    org = await make_org()
    await seed_catalogue(admin_engine, org.id, 500, ("W1", "W2"))
    before = await counts(admin_engine, org.id)
    body = ("sku,quantity,warehouse_code\n" + "".join(f"S{i:06d},{i},W1\n" for i in range(1, 501))).encode()
    resp = await client.post(
        "/api/v1/inventory/bulk", params={"job": "true"}, content=body, headers={**org.headers, **CSV}
    )
    import_id = resp.json()["import_id"]
    real_apply = imports.apply
    applied_then_failed = []

    async def apply_then_fail(*args: Any, **kwargs: Any) -> Any:
        summary = await real_apply(*args, **kwargs)  # every level and ledger row written, not committed
        applied_then_failed.append(summary["applied"])
        raise RuntimeError("injected failure after the rows were written")

    monkeypatch.setattr(imports, "apply", apply_then_fail)
    await run_worker(settings)
    assert applied_then_failed == [500] * MAX_ATTEMPTS  # each attempt got all the way, then died
    assert await counts(admin_engine, org.id) == before  # nothing of it stayed
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert (shown["status"], shown["attempts"]) == ("failed", MAX_ATTEMPTS)
    assert "injected failure" in shown["error"] and shown["summary"] is None
    letters = (await client.get("/api/v1/jobs/dead", headers=org.headers)).json()
    assert [(d["kind"], d["ref_id"]) for d in letters] == [("import", import_id)]

    monkeypatch.setattr(imports, "apply", real_apply)
    retried = await client.post(f"/api/v1/jobs/dead/{letters[0]['id']}/retry", headers=org.headers)
    assert retried.status_code == 200, retried.text
    await run_worker(settings)
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert shown["status"] == "done" and shown["summary"]["applied"] == 500
    assert await counts(admin_engine, org.id) == (before[0], 500, 500)
    await assert_inventory_consistent(admin_engine, org.id)


async def test_an_unreadable_file_fails_at_once_with_its_reason(client, make_org, settings) -> None:
    org = await make_org()
    body = b"sku,quantity,warehouse_code\nA,1,W1\nB,2\n"
    resp = await client.post(
        "/api/v1/inventory/bulk", params={"job": "true"}, content=body, headers={**org.headers, **CSV}
    )
    import_id = resp.json()["import_id"]
    await run_worker(settings)
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert (shown["status"], shown["attempts"]) == ("failed", 1)
    assert shown["error"].startswith("MALFORMED_CSV: line 3")


async def test_idempotency_key_replays_the_202_with_the_same_import(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    headers = {**org.headers, **CSV, "Idempotency-Key": "big-1"}
    body = b"code\nA\nB\n"
    first = await client.post("/api/v1/skus/bulk", params={"job": "true"}, content=body, headers=headers)
    again = await client.post("/api/v1/skus/bulk", params={"job": "true"}, content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    assert await admin_scalar(admin_engine, "select count(*) from imports where org_id = :o", o=org.id) == 1
    await run_worker(settings)  # and it runs once (no import is left queued for later tests' workers)
    shown = (await client.get(f"/api/v1/imports/{first.json()['import_id']}", headers=org.headers)).json()
    assert shown["status"] == "done" and shown["summary"]["created"] == 2


async def test_an_import_whose_enqueue_was_lost_is_found_by_the_sweeper(
    client, make_org, settings, redis, admin_engine
) -> None:
    org = await make_org()
    resp = await client.post(
        "/api/v1/skus/bulk", params={"job": "true"}, content=b"code\nA\n", headers={**org.headers, **CSV}
    )
    import_id = resp.json()["import_id"]
    await redis.flushdb()  # the API died (or Redis lost the job) after the 202
    deps = Deps.build(settings, pool_size=2, max_overflow=0, import_sweep_grace_seconds=0)
    try:
        from arq.connections import ArqRedis

        arq = ArqRedis.from_url(settings.redis_url)
        try:
            assert await sweep_unfinished_imports({"deps": deps, "redis": arq}) >= 1
            assert await sweep_unfinished_imports({"deps": deps, "redis": arq}) == 0  # queued once
        finally:
            await arq.aclose()
    finally:
        await deps.close()
    await run_worker(settings)
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert shown["status"] == "done" and shown["summary"]["created"] == 1


async def test_a_big_import_keeps_levels_and_ledger_consistent(
    client, make_org, settings, admin_engine
) -> None:
    org = await make_org()
    await seed_catalogue(admin_engine, org.id, 10_000, ("W1", "W2"))
    for mode, qty in (("set", 7), ("add", 5), ("set", 3)):
        rows = "".join(f"S{i:06d},{(i * qty) % 97},{wh}\n" for i in range(1, 10_001) for wh in ("W1", "W2"))
        resp = await client.post(
            "/api/v1/inventory/bulk",
            params={"job": "true", "mode": mode},
            content=("sku,quantity,warehouse_code\n" + rows).encode(),
            headers={**org.headers, **CSV},
        )
        assert resp.status_code == 202
    await run_worker(settings, max_seconds=300)
    listed = (await client.get("/api/v1/imports", headers=org.headers)).json()
    assert [i["status"] for i in listed] == ["done"] * 3
    await assert_inventory_consistent(admin_engine, org.id)


async def test_a_reservation_racing_an_import_never_oversells(client, make_org, admin_engine) -> None:
    """An import sets every level down to 3 while clients reserve from the same levels: each level
    ends either with the import applied (and reserved <= 3) or refused as BELOW_RESERVED, never short."""
    org = await make_org()
    skus = [f"R{i}" for i in range(40)]
    await setup_stock(client, org, {(s, "W1"): 10 for s in skus})
    granted: dict[str, int] = dict.fromkeys(skus, 0)

    async def reserve_loop(sku: str) -> None:
        for _ in range(6):
            r = await client.post(
                "/api/v1/reservations",
                json={"lines": [{"sku": sku, "warehouse_code": "W1", "quantity": 1}]},
                headers=org.headers,
            )
            if r.status_code == 201:
                granted[sku] += 1
            else:
                assert r.json()["error"]["code"] == "INSUFFICIENT_STOCK", r.text
            await asyncio.sleep(0)

    body = ("sku,quantity,warehouse_code\n" + "".join(f"{s},3,W1\n" for s in skus)).encode()

    async def run_import() -> dict:
        await asyncio.sleep(0.05)
        r = await client.post("/api/v1/inventory/bulk", content=body, headers={**org.headers, **CSV})
        assert r.status_code == 200, r.text
        return r.json()

    *_, summary = await asyncio.gather(*[reserve_loop(s) for s in skus], run_import())
    refused = {e["sku"] for e in summary["errors"]}
    assert all(e["code"] == "BELOW_RESERVED" for e in summary["errors"])
    levels = await assert_inventory_consistent(admin_engine, org.id)
    async with admin_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "select s.code, l.on_hand, l.reserved from inventory_levels l join skus s "
                    "on s.org_id = l.org_id and s.id = l.sku_id where l.org_id = :o"
                ),
                {"o": org.id},
            )
        ).all()
    assert len(rows) == len(levels) == 40
    for code, on_hand, reserved in rows:
        assert reserved == granted[code] <= on_hand  # every grant is held, none beyond the stock
        # Applied (down to 3), or refused because more than 3 were already reserved (left at 10).
        assert on_hand == (10 if code in refused else 3)
    assert 0 < len(refused) < 40 or sum(granted.values()) > 0


async def test_a_second_run_of_an_import_held_by_another_does_nothing(client, make_org, sessionmaker) -> None:
    org = await make_org()
    resp = await client.post(
        "/api/v1/skus/bulk", params={"job": "true"}, content=b"code\nA\nB\n", headers={**org.headers, **CSV}
    )
    import_id = uuid.UUID(resp.json()["import_id"])
    with org_context(org.id):
        async with provide_session(sessionmaker) as session:
            await imports.start_attempt(session, import_id)
        async with provide_session(sessionmaker) as first:
            assert (await imports.run_stored(first, import_id))["created"] == 2  # applied, not committed
            async with provide_session(sessionmaker) as second:
                # The advisory lock: the second run returns at once instead of applying the file again
                # (or waiting on the first's rows).
                assert await asyncio.wait_for(imports.run_stored(second, import_id), 10) is None
    shown = (await client.get(f"/api/v1/imports/{import_id}", headers=org.headers)).json()
    assert shown["status"] == "done" and shown["summary"]["created"] == 2
