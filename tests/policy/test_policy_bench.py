"""The evaluation benchmark runs and prints its table (the timing itself is not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.bench_policy import main, write_policy
from policy import load_directory


def test_generated_policy_is_valid(tmp_path: Path) -> None:
    write_policy(tmp_path, 12)

    policy = load_directory(tmp_path)

    assert len(policy.departments) == 12
    assert policy.departments["dept0003"].priority_class == "batch"


def test_bench_prints_a_row_per_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "2", "20", "--requests", "50", "--rounds", "1"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["departments", "load", "ms", "us/request", "ratio"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "20"]
    assert lines[1].split()[-1] == "1.00"
