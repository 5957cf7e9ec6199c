"""The dev stack (`llm-gateway dev` on a free port) shared by the client tests, and its tokens."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.auth.devkeys import mint_dev_token

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 30.0


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
    data = home / "data"
    proc = subprocess.Popen(
        [
            str(BIN / "llm-gateway"),
            "dev",
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=home,
    )
    assert proc.stdout is not None
    target = None
    lines = []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if match := re.search(r"gateway\s+: (127\.0\.0\.1:\d+)", line):
            target = match.group(1)
        if "Ctrl-C stops the stack" in line or not line:
            break
    if target is None:
        proc.kill()
        proc.wait()
        pytest.fail("dev stack did not start:\n" + "".join(lines))
    try:
        yield DevStack(target, data)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        proc.stdout.close()
        assert code == 0
