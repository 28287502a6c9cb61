"""End-of-run checks: what the plan expects against what PostgreSQL and the sandboxes hold, and what
the traffic saw (statuses, hangs). Read as the superuser (across orgs, on purpose: this is the auditor)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from _chaos.driver import HANG_SECONDS, LIMITS, Driver
from _chaos.plan import Plan
from _chaos.platform import Platform


@dataclass
class Row:
    name: str
    expected: Any
    found: Any
    violations: int
    detail: list[str] = field(default_factory=list)


def _line_sums(rows: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r["sku"] is not None and r["quantity"] > 0:
            out[r["sku"]] = out.get(r["sku"], 0) + r["quantity"]
    return out


async def run_checks(
    platform: Platform, plan: Plan, driver: Driver, windows: list[tuple[float, float, str]]
) -> tuple[list[Row], dict[str, Any]]:
    conn = await asyncpg.connect(platform.admin_url)
    try:
        return await _checks(conn, platform, plan, driver, windows)
    finally:
        await conn.close()


async def _checks(
    conn: Any, platform: Platform, plan: Plan, driver: Driver, windows: list[tuple[float, float, str]]
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    org_n = {o.id: o.n for o in driver.orgs}
    chan = {cid: (o.n, kind) for o in driver.orgs for kind, cid in o.channels.items()}

    # 1. orders expected vs present, exactly once, lines right, status right
    orders = await conn.fetch("SELECT id, org_id, channel_id, external_id, status FROM orders")
    lines = await conn.fetch(
        """SELECT l.order_id, l.sku, l.quantity FROM order_lines l
             JOIN (SELECT order_id, max(version) v FROM order_lines GROUP BY order_id) m
               ON m.order_id = l.order_id AND m.v = l.version"""
    )
    by_order: dict[Any, list[Any]] = {}
    for r in lines:
        by_order.setdefault(r["order_id"], []).append(r)
    found: dict[tuple[int, str, str], list[Any]] = {}
    cross_org: list[str] = []
    for r in orders:
        n, kind = chan.get(str(r["channel_id"]), (-1, "?"))
        if org_n.get(str(r["org_id"])) != n:
            cross_org.append(f"order {r['id']} of org {r['org_id']} came from channel {r['channel_id']}")
        found.setdefault((n, kind, r["external_id"]), []).append(r)
    plans = plan.order_by_key()
    missing, twice, wrong_lines, wrong_status, unexpected = [], [], [], [], []
    for key, o in plans.items():
        got = found.get(key, [])
        if not got:
            missing.append(f"org {o.org} {o.kind} order {o.external_id}")
            continue
        if len(got) > 1:
            twice.append(f"org {o.org} {o.kind} order {o.external_id} x{len(got)}")
        r = got[0]
        want_status = {"cancelled"} if o.cancelled else {"open", "on_hold"}
        if r["status"] not in want_status:
            wrong_status.append(
                f"{o.kind} {o.external_id}: {r['status']}, expected {sorted(want_status)}"
                + await _story(conn, r["id"])
            )
        # order.deleted carries no lines: an update overtaken by it (ignored after the cancel) may be the
        # last version stored, so only a cancel that carries the order is held to the final lines.
        if not o.deleted and _line_sums(by_order.get(r["id"], [])) != o.expected_lines():
            wrong_lines.append(
                f"{o.kind} {o.external_id}: {_line_sums(by_order.get(r['id'], []))} != {o.expected_lines()}"
                + await _story(conn, r["id"])
            )
    for key in found:
        if key not in plans:
            unexpected.append(f"org {key[0]} {key[1]} order {key[2]}")
    bad = missing + twice + wrong_lines + wrong_status + unexpected
    rows.append(
        Row(
            "orders expected vs present (once, lines, status)",
            len(plans),
            len(orders),
            len(bad),
            [f"missing {m}" for m in missing]
            + [f"duplicated {m}" for m in twice]
            + [f"lines {m}" for m in wrong_lines]
            + [f"status {m}" for m in wrong_status]
            + [f"unexpected {m}" for m in unexpected],
        )
    )
    status_counts = Counter(r["status"] for r in orders)

    # 2. webhooks acknowledged vs stored (none lost); deliveries never acknowledged
    events = await conn.fetch("SELECT channel_id, dedup_key, status, attempts FROM webhook_events")
    stored = {(chan.get(str(e["channel_id"]), (-1, "?")) + (e["dedup_key"],)) for e in events}
    lost = [f"org {k[0]} {k[1]} {k[2]}" for k in driver.acked if k not in stored]
    rows.append(Row("webhooks acknowledged (2xx) vs stored", len(driver.acked), len(stored), len(lost), lost))
    never = [f"{d.kind} {d.topic} {d.external_id} ({d.note})" for d in driver.unacked]
    rows.append(Row("deliveries never acknowledged", 0, len(never), len(never), never))
    event_status = Counter(e["status"] for e in events)

    # 3. dead letters: exactly the poison deliveries
    poison = {(d.org, d.kind, d.dedup_key) for d in plan.deliveries if d.poison}
    dead = await conn.fetch(
        """SELECT e.channel_id, e.dedup_key, d.error FROM dead_letters d
             JOIN webhook_events e ON e.org_id = d.org_id AND e.id = d.ref_id"""
    )
    dead_keys = {(chan.get(str(r["channel_id"]), (-1, "?")) + (r["dedup_key"],)) for r in dead}
    others = await conn.fetch(
        "SELECT d.kind, d.error FROM dead_letters d WHERE NOT EXISTS "
        "(SELECT 1 FROM webhook_events e WHERE e.org_id = d.org_id AND e.id = d.ref_id)"
    )
    dead_other = len(others)
    extra = [f"dead but not poison: org {k[0]} {k[1]} {k[2]}" for k in dead_keys - poison]
    extra += [f"poison not dead: org {k[0]} {k[1]} {k[2]}" for k in poison - dead_keys]
    extra += [f"{dead_other} dead letters of other jobs"] if dead_other else []
    extra += [
        f"   {n} x {kind}: {error[:160]}"
        for (kind, error), n in Counter((r["kind"], r["error"]) for r in others).items()
    ]
    errors = {(chan.get(str(r["channel_id"]), (-1, "?")) + (r["dedup_key"],)): r["error"] for r in dead}
    extra = [
        e + (f" ({errors.get(_key_of(e), '')[:160]})" if e.startswith("dead but") else "") for e in extra
    ]
    rows.append(
        Row("dead letters = the poison deliveries", len(poison), len(dead) + dead_other, len(extra), extra)
    )

    # 4. shipments vs carrier sandbox labels
    ships = await conn.fetch(
        "SELECT id, org_id, carrier, status, carrier_shipment_id, lines, carrier_account_id FROM shipments"
    )
    by_tracking = {s["carrier_shipment_id"]: s for s in ships if s["carrier_shipment_id"]}
    orphans, wrong_void = [], []
    for number, label in list(platform.fedex.labels.items()):
        s = by_tracking.get(number)
        if s is None and not label.cancelled:
            orphans.append(
                f"FedEx label {number} (ref {label.reference}) sold, not cancelled, no shipment holds it"
            )
        if s is not None and s["status"] == "voided" and not label.cancelled:
            orphans.append(f"FedEx label {number}: shipment {s['id']} voided, label still live")
        if s is not None and label.cancelled and s["status"] not in ("voided",):
            orphans.append(
                f"FedEx label {number} cancelled at the carrier, shipment {s['id']} is {s['status']}"
            )
    for number, sold in list(platform.dhl.shipments.items()):
        if number not in by_tracking:
            orphans.append(f"DHL label {number} (ref {sold.reference}) sold, no shipment holds it")
    pending = [f"shipment {s['id']} still pending" for s in ships if s["status"] == "pending"]
    for number, asked, owner in platform.fedex.cancels:
        if owner is not None and asked != owner:
            wrong_void.append(f"cancel of FedEx {number} (account {owner}) asked with account {asked}")
    labels = len(platform.fedex.labels) + len(platform.dhl.shipments)
    rows.append(
        Row(
            "shipments vs sandbox labels: orphan labels",
            0,
            len(orphans) + len(pending),
            len(orphans) + len(pending),
            orphans + pending,
        )
    )
    rows.append(Row("voids of another account's label", 0, len(wrong_void), len(wrong_void), wrong_void))

    # 5. stock committed exactly once per shipped line
    commits = await conn.fetch(
        """SELECT g.reference_id, s.code AS sku, sum(-g.on_hand_delta) AS units, count(*) AS n
             FROM inventory_ledger g JOIN skus s ON s.org_id = g.org_id AND s.id = g.sku_id
            WHERE g.reason = 'commit' GROUP BY g.reference_id, s.code"""
    )
    committed: dict[str, dict[str, int]] = {}
    for c in commits:
        committed.setdefault(c["reference_id"], {})[c["sku"]] = int(c["units"])
    commit_bad = []
    shipped = [s for s in ships if s["status"] in ("in_transit", "delivered")]
    for s in shipped:
        want = {ln["sku"]: ln["quantity"] for ln in json.loads(s["lines"])}
        got = committed.pop(str(s["id"]), {})
        if got != want:
            commit_bad.append(f"shipment {s['id']} ({s['status']}) carries {want}, committed {got}")
    for ref, got in committed.items():
        commit_bad.append(f"stock committed for {ref}, which is not a shipped shipment: {got}")
    rows.append(
        Row(
            "stock committed once per shipped line",
            len(shipped),
            len(shipped) - len(commit_bad),
            len(commit_bad),
            commit_bad,
        )
    )
    ship_status = Counter(s["status"] for s in ships)

    # 6. responses by status; 5xx other than 503 (503 only from dependencies that were down)
    by_status = Counter("no answer" if r.status is None else str(r.status) for r in driver.records)
    bad5xx = [
        f"{r.kind} {r.status} {r.code} at {r.started:.1f}s"
        for r in driver.records
        if r.status is not None and r.status >= 500 and r.status != 503
    ]
    outside = [
        r
        for r in driver.records
        if r.status == 503 and r.code == "DEPENDENCY_UNAVAILABLE" and not _inside(r.started, windows)
    ]
    rows.append(Row("5xx other than 503", 0, len(bad5xx), len(bad5xx), bad5xx))

    # 7. requests that hung past the configured timeouts
    hung = []
    for r in driver.records:
        limit = LIMITS.get(r.kind, HANG_SECONDS)
        if r.seconds > limit and not (r.status is None and r.error in ("ConnectError",)):
            hung.append(
                f"{r.kind} took {r.seconds:.1f}s (limit {limit:g}) -> {r.status or r.error} "
                f"at {r.started:.1f}s"
            )
    rows.append(Row("requests hung past the timeouts", 0, len(hung), len(hung), hung))

    # 8. cross-org rows
    pairs = [
        ("order_lines", "orders", "order_id"),
        ("reservations", "inventory_levels", "level_id"),
        ("shipments", "orders", "order_id"),
        ("shipments", "carrier_accounts", "carrier_account_id"),
        ("webhook_events", "channels", "channel_id"),
        ("inventory_ledger", "inventory_levels", "level_id"),
        ("orders", "channels", "channel_id"),
    ]
    for child, parent, col in pairs:
        n = await conn.fetchval(
            f"SELECT count(*) FROM {child} c JOIN {parent} p ON p.id = c.{col} WHERE p.org_id <> c.org_id"
        )
        if n:
            cross_org.append(f"{n} {child} rows point at another org's {parent}")
    n = await conn.fetchval(
        "SELECT count(*) FROM reservations r JOIN orders o ON o.id::text = r.reference_id "
        "WHERE r.reference_type = 'order' AND o.org_id <> r.org_id"
    )
    if n:
        cross_org.append(f"{n} reservations hold stock for another org's order")
    rows.append(Row("cross-org rows", 0, len(cross_org), len(cross_org), cross_org))

    # 9. rappit verify, per org (its exit code and findings)
    verify_rows = _verify(platform, driver)
    rows.extend(verify_rows)

    facts = {
        "orders_by_status": dict(status_counts),
        "webhook_events_by_status": dict(event_status),
        "shipments_by_status": dict(ship_status),
        "sandbox_labels": labels,
        "fedex_cancels": len(platform.fedex.cancels),
        "responses_by_status": dict(by_status),
        "responses_503_by_code": dict(Counter(r.code for r in driver.records if r.status == 503)),
        "dependency_503_outside_fault_windows": len(outside),
        # When and where those came from: a request that started before a window and failed inside it
        # counts as outside, as do the first requests after a restart that meet a dropped connection.
        "dependency_503_outside_by_kind_and_10s": dict(
            sorted(Counter(f"{r.kind}@{int(r.started // 10) * 10}s" for r in outside).items())
        ),
        "dependency_503_outside_near_a_window": sum(
            1 for r in outside if _inside(r.started, [(a - 30, b + 30, k) for a, b, k in windows])
        ),
        "requests": len(driver.records),
        "requests_by_kind": dict(Counter(r.kind for r in driver.records)),
        "callbacks_sent": driver.callbacks_sent,
        "restarts": dict(platform.restarts),
    }
    return rows, facts


async def _story(conn: Any, order_id: Any) -> str:
    """What happened to an order, for a violation's detail: its timeline with the deliveries behind it."""
    events = await conn.fetch(
        """SELECT o.kind, o.detail, w.topic, w.dedup_key, w.attempts
             FROM order_events o
             LEFT JOIN webhook_events w ON w.org_id = o.org_id AND w.id = o.webhook_event_id
            WHERE o.order_id = $1 ORDER BY o.id""",
        order_id,
    )
    return " | timeline: " + "; ".join(
        f"{e['kind']} {e['detail']} <- {e['topic']} {e['dedup_key']} (attempts {e['attempts']})"
        for e in events
    )


def _key_of(line: str) -> tuple[int, str, str]:
    parts = line.split(": ", 1)[1].split(" ", 3)
    return (int(parts[1]), parts[2], parts[3])


def _inside(t: float, windows: list[tuple[float, float, str]]) -> bool:
    return any(a <= t <= b for a, b, _ in windows)


def _verify(platform: Platform, driver: Driver) -> list[Row]:
    """`rappit verify --json` as an operator runs it after an incident: every org, each checked as itself."""
    env = {**platform.env, "SYSTEM_DATABASE_URL": platform._system_url}
    proc = subprocess.run(
        [sys.executable, "-m", "rappit.app.cli", "verify", "--json", "--stuck-after", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        reports = {r["org_code"]: r for r in json.loads(proc.stdout)}
    except (ValueError, TypeError, KeyError):
        return [
            Row(
                "rappit verify",
                "exit 0",
                f"exit {proc.returncode}",
                1,
                [proc.stdout[-500:], proc.stderr[-1500:]],
            )
        ]
    out = []
    for org in driver.orgs:
        report = reports.get(org.code, {"findings": [], "missing": True})
        findings = report.get("findings", [])
        by_check = Counter(f["check"] for f in findings)
        detail = [f"[{f['check']}] {f['message']}" for f in findings]
        if report.get("missing"):
            detail.append("no report for this org")
        name = f"rappit verify: {org.code}" + (f" {dict(by_check)}" if by_check else "")
        out.append(Row(name, 0, len(findings), len(detail), detail))
    if proc.returncode != 0 and not any(r.violations for r in out):
        out.append(Row("rappit verify exit code", 0, proc.returncode, 1, [proc.stderr[-1500:]]))
    return out
