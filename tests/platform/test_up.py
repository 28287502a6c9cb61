"""`rappit up` supervises its children: a killed worker comes back, only Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from rappit.app.supervisor import ChildSpec, Supervisor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float, what: str, up: subprocess.Popen, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and up.poll() is None:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    state = "timed out" if up.poll() is None else f"up exited ({up.returncode})"
    raise AssertionError(f"{state} waiting for {what}; up said:\n{log.read_text()[-3000:]}")


def live(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def workers(up: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in up.children():
        try:
            if child.cmdline()[-1:] == ["worker"] and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_up_restarts_a_killed_worker_and_stops_every_child_on_ctrl_c(settings) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rappit-up-"))
    log = tmp / "up.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        RAPPIT_ENV="development",
        RAPPIT_DATA_DIR=str(tmp / "data"),  # its embedded Redis lives here
        DATABASE_URL=settings.database_url,  # the test database (already migrated): no initdb to wait for
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "rappit.app.cli", "up", "--no-demo"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    me = psutil.Process(up.pid)
    try:
        wait_for(lambda: live(base), 60, "the API", up, log)
        # Announced once it answers, with the port it really runs on.
        wait_for(lambda: f"Rappit is running at {base} " in log.read_text(), 10, "the banner", up, log)
        beside = {k: v for k, v in env.items() if k != "PORT"}  # another shell: PORT not exported
        created = subprocess.run(
            [sys.executable, "-m", "rappit.app.cli", "org", "create", "--name", "Beside", "--admin-email",
             "o@beside.test", "--code", "B" + str(port)],
            env=beside, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert f"{base}/api/v1/me" in created.stdout  # the running up's address, not 8000
        [first] = wait_for(lambda: workers(me), 30, "the worker", up, log)
        children = me.children(recursive=True)

        first.kill()  # kill -9 the worker
        [second] = wait_for(
            lambda: [w for w in workers(me) if w.pid != first.pid], 30, "a new worker", up, log
        )
        assert second.pid != first.pid and not first.is_running()
        assert up.poll() is None and live(base)  # everything else kept running
        assert f"worker (pid {first.pid})" in log.read_text() and f"pid {second.pid}" in log.read_text()
        children = [c for c in children if c.pid != first.pid] + me.children(recursive=True)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(30) == 0, log.read_text()[-3000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], alive
        assert not live(base)
        assert not (tmp / "data" / "up.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        for child in me.children(recursive=True) if me.is_running() else []:
            child.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_supervisor_backs_off_doubling_to_a_cap_and_resets_after_a_healthy_run() -> None:
    now = 0.0
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"])],
        clock=lambda: now,
        healthy_after=30,
        log=lines.append,
    )

    def next_restart() -> float:
        """Let the real child exit, then return the delay the supervisor chose, and restart it."""
        nonlocal now
        pid = supervisor.pids()["crasher"]
        deadline = time.monotonic() + 10
        while supervisor.pids()["crasher"] is not None and time.monotonic() < deadline:
            supervisor.check()  # the fake clock stands still: it notices the exit, restarts nothing
            time.sleep(0.01)
        assert supervisor.pids()["crasher"] is None
        delay = float(re.findall(r"restarting in ([\d.]+) s", lines[-1])[0])
        assert f"(pid {pid}) exited with exit code 3" in lines[-1]
        now += delay - 0.01
        supervisor.check()
        assert supervisor.pids()["crasher"] is None
        now += 0.01
        supervisor.check()
        assert supervisor.pids()["crasher"] not in (None, pid) and "restarted" in lines[-1]
        return delay

    supervisor.start()
    try:
        assert [next_restart() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
        now += 30  # this run counts as healthy: the next failure is retried quickly again
        assert next_restart() == 1
    finally:
        supervisor.stop()
    assert supervisor.pids() == {"crasher": None}


def test_the_printed_cli_command_runs_from_where_the_user_stands(repo_root) -> None:
    from rappit.app.cli import rappit_command

    command = rappit_command()
    assert (
        command == "rappit"
        or command == os.path.join(".venv", "bin", "rappit")
        or Path(command).is_absolute()
    )
    proc = subprocess.run([command, "user", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "reset-password" in proc.stdout


def run_curl(line: str) -> httpx.Response:
    """Run a curl command line as printed by `up` (parsed, not shelled out: no curl on a bare machine)."""
    args = shlex.split(line)
    assert args[0] == "curl", line
    method, url, headers, body = "GET", None, {}, None
    words = iter(args[1:])
    for word in words:
        if word == "-s":
            continue
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(words).encode()
        else:
            assert url is None and word.startswith("http://"), line
            url = word
    assert url is not None
    return httpx.request(method, url, headers=headers, content=body, timeout=30)


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "rappit.app.cli", "up"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop_up(up: subprocess.Popen, log: Path) -> None:
    up.send_signal(signal.SIGINT)
    assert up.wait(30) == 0, log.read_text()[-3000:]


def demo_banner(up: subprocess.Popen, log: Path) -> dict[str, object]:
    """What the banner printed: the token and each curl line by what it does."""
    wait_for(lambda: "void it with DHL yourself" in log.read_text(), 120, "the demo banner", up, log)
    text = log.read_text()
    [token] = re.findall(r"Demo token   (rpt_\S+)", text)
    curls = [line.strip() for line in text.splitlines() if line.startswith("    curl ")]
    by_kind = {
        "rates": [c for c in curls if "/shipments/rates" in c],
        "fedex": [c for c in curls if '"FEDEX_GROUND"' in c],
        "dhl": [c for c in curls if '"service":"P"' in c],
    }
    assert all(len(found) == 1 for found in by_kind.values()), curls
    return {"token": token, "text": text, **{k: v[0] for k, v in by_kind.items()}}


def demo_state(base: str, token: str) -> dict[str, Any]:
    """Everything a second start could duplicate, read through the API."""
    auth = {"Authorization": f"Bearer {token}"}

    def get(path: str) -> Any:
        resp = httpx.get(f"{base}{path}", headers=auth, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    [channel] = get("/api/v1/channels")
    stock = get("/api/v1/inventory?limit=200")["items"]
    return {
        "skus": sorted(s["code"] for s in get("/api/v1/skus?limit=200")),
        "warehouses": sorted(w["code"] for w in get("/api/v1/warehouses")),
        "channels": [channel["id"]],
        "accounts": sorted((a["carrier"], a["name"]) for a in get("/api/v1/carrier-accounts")),
        "orders": sorted((o["number"], o["status"]) for o in get("/api/v1/orders?limit=200")["items"]),
        "events": len(get(f"/api/v1/channels/{channel['id']}/events?limit=200")),
        "tokens": len(get("/api/v1/tokens?limit=200")),
        "on_hand": sorted((level["sku"], level["on_hand"]) for level in stock),
    }


def test_up_gives_the_demo_org_once_and_its_printed_curl_buys_a_label(own_database) -> None:
    """The newcomer's first minute: `up` prints a token and curl lines that work as pasted (the label
    one answers 201 with a tracking number); a second `up` on the same data adds nothing."""
    tmp = Path(tempfile.mkdtemp(prefix="rappit-demo-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SHOPIFY_ADMIN_URL")}
    env.update(
        RAPPIT_ENV="development",
        RAPPIT_DATA_DIR=str(tmp / "data"),
        DATABASE_URL=own_database.app_url,
        SYSTEM_DATABASE_URL=own_database.system_url,
        MIGRATION_DATABASE_URL=own_database.admin_url,
        PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    up = None
    try:
        up = start_up(env, tmp / "up1.log")
        first = demo_banner(up, tmp / "up1.log")
        token = str(first["token"])
        text = str(first["text"])
        assert "(created now)" in text and f"Dashboard    {base}/dashboard/" in text
        assert "Sign in      org DEMO, admin@demo.rappit.test, password " in text
        assert "user reset-password --org DEMO --email admin@demo.rappit.test" in text

        rates = run_curl(str(first["rates"]))
        assert rates.status_code == 200, rates.text
        quotes = {q["carrier"]: q for q in rates.json()["quotes"]}
        assert set(quotes) == {"fedex", "dhl_express"} and quotes["fedex"]["available"], quotes
        bought = run_curl(str(first["fedex"]))
        assert bought.status_code == 201, bought.text
        assert bought.json()["status"] == "label_purchased" and bought.json()["tracking_numbers"]
        again = run_curl(str(first["fedex"]))  # the same Idempotency-Key: the same shipment
        assert again.status_code == 200 and again.json()["id"] == bought.json()["id"]
        international = run_curl(str(first["dhl"]))
        assert international.status_code == 201, international.text
        assert international.json()["carrier"] == "dhl_express" and international.json()["tracking_numbers"]

        state = demo_state(base, token)
        statuses = [status for _, status in state["orders"]]
        assert sorted(statuses) == ["on_hold", "open", "open", "open"], state
        assert state["events"] == 4 and len(state["skus"]) == 3 and state["warehouses"] == ["MAIN"]
        auth = {"Authorization": f"Bearer {token}"}
        order = httpx.get(f"{base}/api/v1/orders/{bought.json()['order_id']}", headers=auth).json()
        assert order["timeline"], order  # it arrived through the webhook path
        stop_up(up, tmp / "up1.log")

        up = start_up(env, tmp / "up2.log")  # the same data folder and database, again
        second = demo_banner(up, tmp / "up2.log")
        assert "(from an earlier start)" in str(second["text"])
        assert second["token"] == token  # kept, not a new one each start
        assert demo_state(base, token) == state
        assert run_curl(str(second["fedex"])).status_code == 201
        stop_up(up, tmp / "up2.log")
    finally:
        if up is not None and up.poll() is None:
            up.kill()
            up.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
