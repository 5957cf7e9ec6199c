"""The development key and `llm-gateway token`: tokens verify only where that key is trusted."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2

from common.settings import SettingsError, read
from gateway.auth.cli import add_token_command
from gateway.auth.devkeys import dev_auth_settings, dev_key_path, mint_dev_token
from gateway.auth.settings import AuthSettings
from tests.gateway.auth.authkit import StartServer, bearer


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="llm-gateway")
    add_token_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


async def test_cli_token_verifies_with_the_dev_settings(
    start_server: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _run_cli(
        [
            "token",
            "--department",
            "radiology",
            "--subject",
            "bob",
            "--roles",
            "reader,admin",
            "--clearance",
            "3",
            "--purpose",
            "diagnosis",
            "--data-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert status == 0
    assert out.count("\n") == 1 and out.count(".") == 2  # the token alone on stdout
    server = await start_server(dev_auth_settings(tmp_path))
    response = await server.stub().ListModels(
        gateway_pb2.ListModelsRequest(), metadata=bearer(out.strip()), timeout=10
    )
    assert response.models[0].name == "radiology"
    assert list(response.models[0].pools) == ["bob", "admin", "reader"]


async def test_dev_token_of_another_data_dir_is_refused(
    start_server: StartServer, tmp_path: Path
) -> None:
    foreign = mint_dev_token(tmp_path / "a", department="d", subject="s")
    server = await start_server(dev_auth_settings(tmp_path / "b"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server.stub().ListModels(
            gateway_pb2.ListModelsRequest(), metadata=bearer(foreign), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_dev_key_is_private_and_reused(tmp_path: Path) -> None:
    mint_dev_token(tmp_path, department="d", subject="s")
    path = dev_key_path(tmp_path)
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mint_dev_token(tmp_path, department="d", subject="s")
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_cli_rejects_a_non_positive_ttl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _run_cli(
        ["token", "--department", "d", "--subject", "s", "--ttl", "0", "--data-dir", str(tmp_path)],
        capsys,
    )
    assert status == 2 and out == ""


def test_production_refuses_the_dev_key(tmp_path: Path) -> None:
    dev = dev_auth_settings(tmp_path)
    with pytest.raises(SettingsError, match=r"gateway\.auth\.dev_key_file: a production"):
        read(
            AuthSettings,
            {
                "issuer": "https://idp.example",
                "audience": "llm-gateway",
                "algorithms": ["EdDSA"],
                "dev_key_file": dev.dev_key_file,
                "production": True,
            },
            "gateway.auth",
        )


def test_production_refuses_the_dev_issuer(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"auth\.issuer"):
        read(
            AuthSettings,
            {
                "issuer": "llm-gateway-dev",
                "audience": "llm-gateway",
                "algorithms": ["EdDSA"],
                "pem_files": ["/etc/idp.pem"],
                "production": True,
            },
            "auth",
        )
