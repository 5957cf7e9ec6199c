"""`llm-gateway dev` as a subprocess on free ports, for tests of what a new user runs first."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class RunningDevStack:
    """What the dev stack printed: its gRPC target, its OpenAI HTTP base URL, its banner."""

    target: str
    http_base: str | None
    data_dir: Path
    banner: str


@contextmanager
def running_dev_stack(cwd: Path, data_dir: Path) -> Iterator[RunningDevStack]:
    """Start `llm-gateway dev --port 0 --http-port 0`; stop it with Ctrl-C (SIGINT), exit 0."""
    proc = subprocess.Popen(
        [str(BIN / "llm-gateway"), "dev", "--port", "0", "--http-port", "0",
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )  # fmt: skip
    assert proc.stdout is not None
    target, http_base, lines = None, None, []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if match := re.search(r"gateway\s+: (127\.0\.0\.1:\d+)", line):
            target = match.group(1)
        if match := re.search(r"OpenAI HTTP : (http://127\.0\.0\.1:\d+/v1)", line):
            http_base = match.group(1)
        if "Ctrl-C stops the stack" in line or not line:
            break
    if target is None:
        proc.kill()
        proc.wait()
        pytest.fail("dev stack did not start:\n" + "".join(lines))
    try:
        yield RunningDevStack(target, http_base, data_dir, "".join(lines))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        proc.stdout.close()
        assert code == 0
