"""The dev stack (`llm-gateway dev` on a free port) shared by the client tests, and its tokens."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.auth.devkeys import mint_dev_token
from tests.support.dev_stack import running_dev_stack

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class DevStack:
    """A running dev stack: its gateway address and data directory (dev key, dev token)."""

    target: str
    data_dir: Path

    @property
    def token_file(self) -> Path:
        return self.data_dir / "dev-token"

    def token(self, department: str, subject: str, *roles: str) -> str:
        """A dev token for another department or user, signed by this stack's dev key."""
        return mint_dev_token(self.data_dir, department=department, subject=subject, roles=roles)


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """`llm-gateway dev --port 0` as a subprocess, stopped with Ctrl-C (SIGINT) at the end."""
    home = tmp_path_factory.mktemp("dev-stack")
    with running_dev_stack(home, home / "data") as stack:
        yield DevStack(stack.target, stack.data_dir)
