"""Every `./run bench NAME` runs start to finish from a clean checkout: each script in bench/, at its
--smoke size, on its own embedded PostgreSQL and Redis in a fresh data folder (initdb included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rappit.platform.settings import REPO_ROOT

BENCH = REPO_ROOT / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fresh data folder for all scripts (as on a clean clone; the first one runs initdb)."""
    path = tmp_path_factory.mktemp("bench-data")
    yield path
    pid_file = path / "bench" / "pg" / "postmaster.pid"
    if pid_file.exists():  # a script died without stopping its server: stop it (immediate shutdown)
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        except (ProcessLookupError, ValueError):
            pass


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_to_the_end_and_writes_its_results(name: str, data_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env["RAPPIT_DATA_DIR"] = str(data_dir)
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--results", str(results)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300 if name == "chaos" else 180,  # chaos: four processes up, a worker killed, settled
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    written = json.loads((results / f"{name}.json").read_text())
    assert written["benchmark"] == name
    if name == "carriers":  # with the breaker open, every purchase failed fast and none reached the sandbox
        assert written["breaker_open"]["requests_reaching_sandbox"] == 0
        assert written["breaker_open"]["outcomes"] == {
            "503 CARRIER_UNAVAILABLE": written["breaker_open"]["calls"]
        }
    assert not (BENCH / "results" / "_bare_app.py").exists()  # nothing left in the committed results
