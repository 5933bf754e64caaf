"""The champion's metric over time as numbers for an inline SVG (the template draws it).

No plotting library and no script: the page's SVG is markup the server writes, every text in it
escaped by the template, so it shows under a strict Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from retrain_trigger_dev.ui.data import ChampionPoint

WIDTH = 640
HEIGHT = 220
LEFT = 56  # room for the value labels
RIGHT = 16
TOP = 16
BOTTOM = 36  # room for the date labels


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    point: ChampionPoint


@dataclass(frozen=True)
class Tick:
    at: float  # the x or y coordinate
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    dots: list[Dot]
    line: str  # the polyline's points, "x,y x,y ..."
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    metric: str
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def _date(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _value(number: float) -> str:
    return f"{number:.4g}"


def build(points: Sequence[ChampionPoint]) -> Chart | None:
    """Coordinates of each registration (oldest first), or None when there is nothing to draw."""
    if not points:
        return None
    ordered = sorted(points, key=lambda p: p.changed_at)
    times = [p.changed_at for p in ordered]
    values = [p.metric_value for p in ordered]
    t0, t1 = min(times), max(times)
    v0, v1 = min(values), max(values)
    if v1 == v0:  # one value: a flat line in the middle, with some room above and below
        pad = abs(v0) * 0.01 or 0.01
        v0, v1 = v0 - pad, v1 + pad
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(moment: float) -> float:
        if t1 == t0:
            return LEFT + plot_w / 2
        return LEFT + (moment - t0) / (t1 - t0) * plot_w

    def y(value: float) -> float:
        return TOP + (v1 - value) / (v1 - v0) * plot_h

    dots = [Dot(round(x(p.changed_at), 1), round(y(p.metric_value), 1), p) for p in ordered]
    mid = (v0 + v1) / 2
    y_ticks = [Tick(round(y(v), 1), _value(v)) for v in (v1, mid, v0)]
    x_ticks = [Tick(round(x(t0), 1), _date(t0))]
    if t1 != t0:
        x_ticks.append(Tick(round(x(t1), 1), _date(t1)))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        dots=dots,
        line=" ".join(f"{d.x},{d.y}" for d in dots),
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        metric=ordered[-1].metric_name,
    )
