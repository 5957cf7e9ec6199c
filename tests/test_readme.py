"""The README's front-door examples work: the dev stack, `ask`, the Python snippet, the ledger."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dev_stack import running_dev_stack

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`llm-gateway dev` as a subprocess on a free port; yields (target, data dir)."""
    with running_dev_stack(tmp_path, tmp_path / "data") as stack:
        yield stack.target, stack.data_dir


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


@pytest.mark.integration
def test_dev_stack_ask_snippet_and_ledger(dev_stack: tuple[str, Path], tmp_path: Path) -> None:
    target, data = dev_stack
    token_file = data / "dev-token"
    assert token_file.stat().st_mode & 0o077 == 0  # the dev token is private to its owner

    ask = run(
        str(BIN / "llm-gateway"), "ask", "--target", target, "--token-file", str(token_file),
        "--classification", "internal", "Summarise the ward round", cwd=tmp_path,
    )  # fmt: skip
    assert ask.returncode == 0, ask.stderr
    assert ask.stdout.strip()
    assert "FINISH_REASON_LENGTH" in ask.stderr

    snippet = re.search(r"### From Python\n.*?```python\n(.*?)```", README, re.S)
    assert snippet, "README lost its Python example"
    code = snippet.group(1).replace("127.0.0.1:50051", target)
    code = code.replace('".data/dev-token"', repr(str(token_file)))
    # The example uses the client library (`pip install ./clients/python`), here from its source.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python" / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "FINISH_REASON_LENGTH" in result.stdout and "completion_tokens: 64" in result.stdout

    token = run(
        str(BIN / "llm-gateway"), "token", "--department", "administration", "--subject", "alice",
        "--data-dir", str(data), cwd=tmp_path,
    )  # fmt: skip
    assert token.returncode == 0 and token.stdout.count(".") == 2
    denied = run(
        str(BIN / "llm-gateway"), "ask", "--target", target, "--token", token.stdout.strip(),
        "--model", "llama-3.1-8b-instruct", "hello", cwd=tmp_path,
    )  # fmt: skip
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
    assert "models.not_allowed" in denied.stderr

    ledger = data / "audit.db"
    deadline = time.monotonic() + 15
    while True:
        query = run(
            str(BIN / "llm-audit"), "query", "--db", str(ledger), "--format", "csv", cwd=tmp_path
        )
        rows = [r for r in query.stdout.splitlines()[1:] if r]
        if len(rows) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 3, query.stdout + query.stderr
    assert sum("denied" in r for r in rows) == 1
    verify = run(str(BIN / "llm-audit"), "verify", "--db", str(ledger), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_policy_check_command_on_examples() -> None:
    result = run(
        str(BIN / "llm-gateway"), "policy", "check", "policy/examples/health-region", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_deploy_config_is_valid() -> None:
    result = run(
        str(BIN / "llm-gateway"), "check-config", "--config", "deploy/gateway.yaml", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text("server: {listen: 127.0.0.1:1, proceses: 2}\n")
    result = run(str(BIN / "llm-gateway"), "check-config", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "server: unknown key(s) proceses" in result.stderr
