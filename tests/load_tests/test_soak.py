"""The soak scenario for 60 s: a real stack, faults at random times, every invariant holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.soak import run_soak

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.timeout(420)
async def test_sixty_second_soak_with_faults_keeps_every_invariant(tmp_path: Path) -> None:
    # Faults every 8-15 s: each kind (worker kill, Redis pause, store restart) comes at least once.
    passed, table = await run_soak(
        60.0, rate=15.0, seed=7, data_dir=tmp_path / "soak", fault_every_s=(8.0, 15.0)
    )
    print(table)
    assert "SIGKILL worker" in table and "SIGSTOP redis" in table and "audit store" in table
    assert table.count("| PASS ") == 4, table
    assert passed, table
