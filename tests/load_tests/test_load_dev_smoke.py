"""The README's smoke run against a real `llm-gateway dev` stack passes, with no token given.

The command is run as the README writes it, from a directory laid out like the repository (the
scenario under load_tests/scenarios, the dev stack's data in .data); only `--target` is added,
because the stack listens on a free port here instead of 50051.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dev_stack import running_dev_stack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMOKE = ".venv/bin/python -m load_tests run --scenario load_tests/scenarios/smoke.yaml"


@pytest.mark.integration
def test_readme_smoke_run_passes_against_the_dev_stack(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"`{SMOKE}`" in readme, "the README's smoke command changed; update this test"
    (tmp_path / "load_tests").symlink_to(ROOT / "load_tests")
    with running_dev_stack(tmp_path, tmp_path / ".data") as stack:
        target = stack.target
        args = SMOKE.split()[1:]
        result = subprocess.run(
            [sys.executable, *args, "--target", target, "--no-progress", "--out", "smoke.json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "using the token in .data/dev-token" in result.stderr
        totals = json.loads((tmp_path / "smoke.json").read_text())["totals"]
        assert totals["ok"] > 0 and totals["ok"] == totals["requests"], totals["by_code"]
