"""A store stopped while Exports are being appended exits its stop cleanly, every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_stopping_the_store_during_exports_never_crashes_the_process() -> None:
    # In a child process, so that a crash fails this test rather than the whole run. Before the
    # ledger thread, every run of 40 rounds crashed, most within the first five.
    rounds = 12
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "tests.audit.stop_during_export", str(rounds)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.stdout.strip() == f"ok {rounds}"
