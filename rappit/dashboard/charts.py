"""Small server-rendered SVG charts: no script, no build step, readable without colour (titles and a
table-like label on every mark)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

WIDTH, HEIGHT, PAD = 640, 180, 28


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True, slots=True)
class BarChart:
    bars: list[Bar]
    max_value: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def hourly_bars(points: Sequence[tuple[datetime, int]]) -> BarChart:
    """One bar per hour, scaled to the busiest hour (at least 1 so an empty day draws flat)."""
    top = max([n for _, n in points] + [1])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(points), 1)
    bars = []
    for i, (hour, n) in enumerate(points):
        h = inner_h * n / top
        bars.append(
            Bar(
                x=PAD + i * step + 1,
                y=PAD + inner_h - h,
                width=max(step - 2, 1),
                height=h,
                label=hour.strftime("%H:00"),
                value=n,
            )
        )
    return BarChart(bars=bars, max_value=top)


@dataclass(frozen=True, slots=True)
class LineChart:
    on_hand: str
    """SVG polyline points."""
    reserved: str
    max_value: int
    first: datetime | None
    last: datetime | None
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def stock_lines(points: Sequence[tuple[datetime, int, int]]) -> LineChart:
    """On hand and reserved after each ledger entry, oldest first, as step lines over time."""
    if not points:
        return LineChart("", "", 0, None, None)
    top = max([max(oh, r) for _, oh, r in points] + [1])
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    span = max(t1 - t0, 1.0)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def xy(t: datetime, v: int) -> tuple[float, float]:
        x = PAD + inner_w * ((t.timestamp() - t0) / span if len(points) > 1 else 1.0)
        return round(x, 1), round(PAD + inner_h - inner_h * v / top, 1)

    def steps(values: list[tuple[datetime, int]]) -> str:
        out: list[str] = []
        for i, (t, v) in enumerate(values):
            x, y = xy(t, v)
            if i:
                out.append(f"{x},{out[-1].split(',')[1]}")  # hold the previous level until this change
            out.append(f"{x},{y}")
        return " ".join(out)

    return LineChart(
        on_hand=steps([(t, oh) for t, oh, _ in points]),
        reserved=steps([(t, r) for t, _, r in points]),
        max_value=top,
        first=points[0][0],
        last=points[-1][0],
    )
