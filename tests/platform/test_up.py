"""`rappit up` supervises its children: a killed worker comes back, only Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
