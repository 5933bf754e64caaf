"""A clock the tests set by hand: every time-dependent call of the code under test reads it, so
no result depends on the wall clock or on how long the suite has run."""

from __future__ import annotations

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z; any fixed instant does


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
