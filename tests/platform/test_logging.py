"""One log format per process: JSON for machines, readable lines for a developer; no escaped arrows."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys

import structlog
from uvicorn.config import LOGGING_CONFIG

from rappit.platform.logging import HotLogger, configure_logging
from rappit.platform.settings import Settings
from tests.platform.test_settings import production_env


def capture(json_lines: bool) -> io.StringIO:
    stream = io.StringIO()
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does before it loads the app
    configure_logging("INFO", json=json_lines, stream=stream)
    return stream


def emit() -> None:
    # As arq logs a finished job, and as uvicorn announces itself.
    logging.getLogger("arq.worker").info("%6.2fs ← %s:%s ●", 0.25, "job-1", "process_webhook_event")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")


def test_json_lines_keep_arq_arrows_and_take_in_uvicorns_own_lines() -> None:
    stream = capture(True)
    try:
        emit()
    finally:
        configure_logging("INFO", json=True)
    lines = stream.getvalue().splitlines()
    assert "\\u2190" not in stream.getvalue()
    parsed = [json.loads(line) for line in lines]  # every line is JSON, uvicorn's too
    assert (
        parsed[0]["event"] == "  0.25s ← job-1:process_webhook_event ●"
        and parsed[0]["logger"] == "arq.worker"
    )
    assert parsed[1]["event"] == "Uvicorn running on http://127.0.0.1:8000"


def test_console_lines_are_readable_and_not_json() -> None:
    stream = capture(False)
    try:
        emit()
    finally:
        configure_logging("INFO", json=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and not any(line.startswith("{") for line in lines)
    assert "0.25s ← job-1:process_webhook_event ●" in lines[0] and "\\u" not in lines[0]
    assert "Uvicorn running on http://127.0.0.1:8000" in lines[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_json_defaults_to_json_in_production_and_off_a_terminal(monkeypatch) -> None:
    assert Settings.from_env({}).log_json is True  # pytest's stderr is not a terminal
    assert Settings.from_env({"LOG_JSON": "false"}).log_json is False
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert Settings.from_env({}).log_json is False  # a developer at a terminal reads lines, not JSON
    assert Settings.from_env({"LOG_JSON": "1"}).log_json is True
    assert Settings.from_env(production_env()).log_json is True


def test_hot_lines_are_the_same_lines_as_the_stdlib_path_and_follow_the_level() -> None:
    """`HotLogger` (the per-request access and webhook lines) skips stdlib logging, not the format:
    the same keys and values as a structlog line through the stdlib handler, the bound context
    included; nothing below the configured level; readable lines in console mode."""
    stream = capture(json_lines=True)
    try:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id="rid-1", org_id="org-1")
        HotLogger("rappit.access").info("http.request", method="POST", status=200, path="/w → x")
        structlog.get_logger("rappit.access").info("http.request", method="POST", status=200, path="/w → x")
        hot, stdlib = (json.loads(line) for line in stream.getvalue().splitlines())
        assert hot.pop("timestamp") and stdlib.pop("timestamp")
        assert hot == stdlib == {
            "event": "http.request", "level": "info", "logger": "rappit.access", "method": "POST",
            "status": 200, "path": "/w → x", "request_id": "rid-1", "org_id": "org-1",
        }  # fmt: skip

        quiet = io.StringIO()
        configure_logging("WARNING", json=True, stream=quiet)
        assert not HotLogger("rappit.access").is_enabled_for(logging.INFO)
        HotLogger("rappit.access").info("http.request", status=200)
        assert quiet.getvalue() == ""

        console = io.StringIO()
        configure_logging("INFO", json=False, stream=console)
        HotLogger("rappit.webhooks").info("webhook.accepted", event_id="e-1")
        line = console.getvalue()
        assert "webhook.accepted" in line and "event_id=e-1" in line and not line.startswith("{")
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("INFO", json=True)
