"""`llm-gateway dev` serves the HTTP door: the README's curl example, the ledger's door column."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.dev_stack import running_dev_stack

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README example uses curl")
def test_readme_curl_example_and_ledger_interface(tmp_path: Path) -> None:
    data = tmp_path / ".data"
    with running_dev_stack(tmp_path, data) as stack:
        base = stack.http_base
        assert base, "dev stack did not print its HTTP address:\n" + stack.banner
        snippet = re.search(r"### OpenAI-compatible HTTP\n.*?```sh\n(.*?)```", README, re.S)
        assert snippet, "README lost its curl example"
        command = snippet.group(1).replace("http://127.0.0.1:8080/v1", base)
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert '"object":"chat.completion"' in result.stdout.replace(" ", ""), result.stdout
        ledger = data / "audit.db"
        deadline = time.monotonic() + 15
        while True:
            query = run(
                str(BIN / "llm-audit"), "query", "--db", str(ledger), "--format", "json",
                cwd=tmp_path,
            )  # fmt: skip
            if query.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert '"interface": "openai-http"' in query.stdout, query.stdout + query.stderr
