"""The Node.js client (clients/node, grpc-js + proto-loader) against the real dev stack."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from llmgw_client import Client

from tests.clients.conftest import DevStack

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of clients/node with its locked dependencies installed by `npm ci`."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed (the README's requirements and .ci/run install it)")
    home = tmp_path_factory.mktemp("node-client")
    for name in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(NODE_CLIENT / name, home / name)
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=home, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def run_node(
    home: Path, stack: DevStack, token_file: Path, *args: str
) -> tuple[int, list[dict[str, Any]]]:
    command = ["node", "client.js", "--target", stack.target, "--token-file", str(token_file)]
    command += ["--protos", str(ROOT / "protos"), *args]
    result = subprocess.run(command, cwd=home, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_models_unary_and_stream(node_client: Path, dev_stack: DevStack) -> None:
    token = dev_stack.token_file
    code, [listed] = run_node(node_client, dev_stack, token, "models")
    assert code == 0
    assert [m["name"] for m in listed["models"]] == ["llama-3.1-8b-instruct", "qwen2.5-7b-instruct"]

    args = ("--max-tokens", "6", "--classification", "internal")
    code, [answer] = run_node(node_client, dev_stack, token, *args, "generate")
    assert code == 0 and answer["text"] and answer["usage"]["completion_tokens"] == 6
    assert answer["finish_reason"] == "FINISH_REASON_LENGTH"

    code, messages = run_node(node_client, dev_stack, token, *args, "stream")
    assert code == 0 and len(messages) == 7
    assert all(m["text"] for m in messages[:-1])
    assert messages[-1]["finish_reason"] == "FINISH_REASON_LENGTH"
    assert messages[-1]["usage"]["completion_tokens"] == 6


def test_policy_refusal_decoded_to_error_info(
    node_client: Path, dev_stack: DevStack, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(dev_stack.token("administration", "node-alice", "clerk"))
    code, [refused] = run_node(node_client, dev_stack, token, "generate")
    assert code == 1
    assert refused["error"]["code"] == "PERMISSION_DENIED"
    [info] = refused["error"]["details"]
    assert info["type"] == "google.rpc.ErrorInfo"
    assert info["reason"] == "models.not_allowed" and info["domain"] == "llmgateway"


def test_rate_limit_decoded_to_retry_and_quota(
    node_client: Path, dev_stack: DevStack, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(dev_stack.token("administration", "node-bob", "clerk"))
    with Client(dev_stack.target, token=token.read_text()) as client:
        for _ in range(20):  # the department's per-user limit is 20 requests per minute
            client.generate("qwen2.5-7b-instruct", "hi", max_tokens=1)
    code, [refused] = run_node(
        node_client, dev_stack, token, "--model", "qwen2.5-7b-instruct", "stream"
    )
    assert code == 1 and refused["error"]["code"] == "RESOURCE_EXHAUSTED"
    details = {d["type"]: d for d in refused["error"]["details"]}
    assert set(details) == {
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
        "google.rpc.ErrorInfo",
    }
    assert details["google.rpc.RetryInfo"]["retry_after_s"] > 0
    [violation] = details["google.rpc.QuotaFailure"]["violations"]
    assert (
        violation
        == {
            "subject": "department:administration",
            "description": "user.requests_per_minute",
        }
        or violation["description"] == "user.requests_per_minute"
    )
    assert details["google.rpc.ErrorInfo"]["reason"] == "limits.user.requests_per_minute"
