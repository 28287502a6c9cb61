"""Exponential backoff for things that restart (a supervised process, a worker's Redis connection)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of `initial` doubling up to `maximum`. Call `reset()` once the thing has stayed up long
    enough to count as healthy, so a crash after a day of service is retried quickly again."""

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    _next: float | None = None

    def next(self) -> float:
        delay = self.initial if self._next is None else self._next
        self._next = min(delay * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = None
