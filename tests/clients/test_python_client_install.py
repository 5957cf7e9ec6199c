"""`pip install ./clients/python` into a fresh venv pulls in no server dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {
    "llm-gateway", "pyjwt", "redis", "hiredis", "pyyaml", "psycopg", "psycopg-binary",
    "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "grpcio-tools",
    "grpcio-status", "grpcio-health-checking", "grpcio-reflection", "tenacity", "matplotlib",
    "prometheus-client", "uvloop", "cryptography",
}  # fmt: skip


@pytest.mark.slow
def test_client_installs_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(ROOT / "clients" / "python")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"llmgw-client", "grpcio", "protobuf", "googleapis-common-protos"} <= installed
    assert not installed & SERVER_ONLY, f"server dependencies installed: {installed & SERVER_ONLY}"
    code = "import llmgw_client as c; from pathlib import Path; print(Path(c.__file__).parent)"
    where = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    package = Path(where.stdout.strip())
    assert package.is_relative_to(venv)
    assert (package / "py.typed").exists()
    assert (package / "_proto" / "llmgateway" / "v1" / "gateway_pb2.pyi").exists()
