"""`./run bench all`'s summary (every headline against its goal, summary.json and summary.png) and the
harness's check that its own client is not the bottleneck."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rappit.platform.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import _all
import _stack


def test_every_script_is_discovered_and_helpers_are_not() -> None:
    names = _all.scripts()
    assert "inventory" in names and "webhooks" in names
    assert not [n for n in names if n.startswith("_")]


def test_summary_charts_each_headline_against_its_goal(tmp_path: Path) -> None:
    _stack.write_results(
        "fast",
        {"x": 1},
        tmp_path,
        headlines=[
            _stack.headline("ratio met", 3.0, 2.0),
            _stack.headline("latency missed", 3.0, 1.5, better="lower"),
            _stack.headline("oversold", 0, 0, better="lower", unit=""),
        ],
    )
    _stack.write_results("plain", {"y": 2}, tmp_path)  # a benchmark that names no headline
    summary, png = _all.summarize(
        tmp_path, {"fast": {"exit_code": 0}, "plain": {"exit_code": 0}, "broken": {"exit_code": 1}}
    )
    data = json.loads(summary.read_text())
    got = {h["name"]: (h["met"], h["share_of_goal"]) for h in data["headlines"]}
    assert got == {"ratio met": (True, 1.5), "latency missed": (False, 0.5), "oversold": (True, 1.0)}
    assert data["runs"]["plain"]["headlines"] == 0
    assert data["runs"]["broken"] == {"exit_code": 1}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_headline_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError):
        _stack.headline("x", 1, 1, better="sideways")


def test_client_cpu_says_when_the_client_is_saturated(monkeypatch, capsys) -> None:
    clock = iter([0.0, 10.0])
    cpu = iter([(5.0, 1.0), (13.0, 2.0)])  # 9 s of CPU in 10 s of wall: 90 % of a core
    monkeypatch.setattr(_stack.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(_stack.os, "times", lambda: next(cpu))
    with _stack.ClientCpu("busy") as busy:
        pass
    assert busy.report() == {"client_cpu_share_of_one_core": 0.9, "client_saturated": True}
    assert "busy" in capsys.readouterr().err

    clock = iter([0.0, 10.0])
    cpu = iter([(5.0, 1.0), (7.0, 1.0)])  # 2 s in 10 s: 20 %
    with _stack.ClientCpu("idle") as idle:
        pass
    assert idle.report() == {"client_cpu_share_of_one_core": 0.2, "client_saturated": False}
    assert capsys.readouterr().err == ""
