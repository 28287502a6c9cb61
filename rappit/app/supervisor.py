"""`rappit up`'s process supervisor: keep the API and worker running, restart what dies with backoff.

One dead worker must not take the stack down (issue 8): a child that exits is logged and started
again after a delay (1 s doubling to 30 s, back to 1 s once it had stayed up `healthy_after` seconds).
Only `stop()` (Ctrl-C on `up`) ends them: SIGTERM, then SIGKILL after a grace period.
Kept apart from click, with the clock, backoff and process start injectable, so it can be tested alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rappit.platform.backoff import Backoff


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    """This child's environment (else the supervisor's): only the worker holds the system role's URL."""


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Supervisor:
    specs: Sequence[ChildSpec]
    env: Mapping[str, str] | None = None
    clock: Callable[[], float] = time.monotonic
    backoff: Callable[[], Backoff] = lambda: Backoff(initial=1.0, maximum=30.0)
    healthy_after: float = 30.0
    """A child that ran this long before dying is restarted after the initial delay again."""
    grace: float = 15.0
    """Seconds between SIGTERM and SIGKILL on stop."""
    log: Callable[[str], None] = _log_to_stderr
    _children: list[_Child] = field(default_factory=list)

    def start(self) -> None:
        self._children = [_Child(spec, self.backoff()) for spec in self.specs]
        for child in self._children:
            self._spawn(child)

    def pids(self) -> dict[str, int | None]:
        return {c.spec.name: c.proc.pid if c.proc else None for c in self._children}

    def check(self) -> None:
        """One pass: notice children that exited and schedule them; start those whose delay is over."""
        now = self.clock()
        for child in self._children:
            if child.proc is not None and child.proc.poll() is not None:
                ran = now - child.started_at
                if ran >= self.healthy_after:
                    child.backoff.reset()
                delay = child.backoff.next()
                self.log(
                    f"rappit up: {child.spec.name} (pid {child.proc.pid}) exited with "
                    f"{_describe(child.proc.returncode)} after {ran:.1f} s; restarting in {delay:g} s"
                )
                child.proc, child.restart_at = None, now + delay
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def run(self, should_stop: Callable[[], bool], interval: float = 0.2) -> None:
        while not should_stop():
            self.check()
            time.sleep(interval)

    def stop(self) -> None:
        """SIGTERM every child, SIGKILL those still running after the grace period; none is restarted."""
        running = [c.proc for c in self._children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.log(f"rappit up: pid {proc.pid} ignored SIGTERM for {self.grace:g} s; killing it")
                proc.kill()
                proc.wait()
        for child in self._children:
            child.proc, child.restart_at = None, None

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(
            list(child.spec.argv),
            env=dict(env) if (env := child.spec.env or self.env) is not None else None,
            start_new_session=True,  # a terminal's Ctrl-C reaches `up` only; it signals them, once
        )
        child.started_at, child.restart_at = self.clock(), None
        what = "restarted" if child.restarts else "running"
        self.log(f"rappit up: {child.spec.name} {what} (pid {child.proc.pid})")
