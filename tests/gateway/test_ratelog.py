"""RateLimitedLog: one line per key and window, then the count of what it held back."""

from __future__ import annotations

import logging

import pytest

from gateway.request.ratelog import RateLimitedLog


def test_one_line_per_key_and_window_with_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("ratelog-test"), 60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="ratelog-test")
    for _ in range(100):
        limited.log(logging.INFO, "malformed", "call refused: %s", "malformed")
    limited.log(logging.INFO, "expired", "call refused: %s", "expired")
    now[0] = 61.0
    assert limited.log(logging.INFO, "malformed", "call refused: %s", "malformed")

    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "call refused: malformed",
        "call refused: expired",
        "call refused: malformed (and 99 more like it in the last 60 s, not logged)",
    ]
