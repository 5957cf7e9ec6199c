"""The offline checker: exit status and one `file:line: key: message` line per error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policy.checker import main
from tests.policy.conftest import EXAMPLES, FIXTURES


def test_examples_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLES)]) == 0

    out = capsys.readouterr().out
    assert "OK" in out and "administration, emergency, research" in out


def test_every_error_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(FIXTURES / "base", tmp_path, dirs_exist_ok=True)
    shutil.copyfile(FIXTURES / "failures" / "unknown_model.yaml", tmp_path / "beta.yaml")
    gamma = (FIXTURES / "failures" / "unknown_priority.yaml").read_text()
    (tmp_path / "gamma.yaml").write_text(gamma.replace("beta", "gamma"))

    assert main([str(tmp_path)]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{tmp_path / 'beta.yaml'}:4: models[1]: unknown model or group 'gpt-4'; "
        "declared in defaults.yaml: all, large, small",
        f"{tmp_path / 'gamma.yaml'}:4: priority: unknown priority class 'urgent'; "
        "declared in defaults.yaml: high, low",
        f"{tmp_path}: 2 error(s); policy rejected",
    ]


def test_runs_as_a_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "policy.checker", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "cannot read policy directory" in result.stderr
