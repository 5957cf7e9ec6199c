"""Policy test fixtures: the example policy directory and a copy of it to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from policy import PolicySet, load_directory

EXAMPLES = Path(__file__).resolve().parents[2] / "policy" / "examples" / "health-region"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def health_region() -> PolicySet:
    """The shipped example policy, loaded once."""
    return load_directory(EXAMPLES)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A writable copy of the example policy directory."""
    target = tmp_path / "policy"
    shutil.copytree(EXAMPLES, target)
    return target
