"""A clock for code that takes one (`clock: Callable[[], float]`): it moves only when told."""

from __future__ import annotations

# 2025-06-15T12:00:00Z: mid-day, mid-month, so budget windows do not roll unless a test says so.
START = 1_749_988_800.0


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
