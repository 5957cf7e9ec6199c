"""The HTTP door's settings, and its mTLS: the gRPC port's certificates and subject binding."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from common.settings import SettingsError, read
from gateway.auth.devkeys import dev_auth_settings
from gateway.auth.settings import MtlsSettings
from gateway.settings import GatewaySettings, HttpSettings, load_settings
from policy.settings import PolicySettings
from tests.helpers import StartGateway, gateway_settings
from tests.support.pki import Ca
from workers.server import WorkerHandle


def test_http_is_off_unless_listen_is_set() -> None:
    assert read(GatewaySettings, {}).http.listen is None
    settings = read(GatewaySettings, {"http": {"listen": "0.0.0.0:8080"}})
    assert settings.http == HttpSettings("0.0.0.0:8080")


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"listen": "localhost"}, "http.listen: expected host:port"),
        ({"listen": "gateway:8080"}, "http.listen: expected an IP address"),
        ({"port": 8080}, r"http: unknown key\(s\) port"),
    ],
)
def test_bad_http_settings_name_the_key(http: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        read(GatewaySettings, {"http": http})


def test_environment_sets_the_http_listen() -> None:
    settings = load_settings(None, {"LLMGW_HTTP_LISTEN": "127.0.0.1:8081"})
    assert settings.http.listen == "127.0.0.1:8081"


def _client_context(ca: Ca, tmp_path: Path, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.pem.decode())
    if name is not None:
        cert, key = ca.issue(name)
        (tmp_path / f"{name}.pem").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
        context.load_cert_chain(tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
    return context


async def test_mtls_binds_the_certificate_to_the_token(
    start_test_gateway: StartGateway,
    http_worker: WorkerHandle,
    http_policy: Path,
    data_dir: Path,
    tmp_path: Path,
    mint: Callable[..., str],
) -> None:
    ca = Ca()
    cert, key = ca.issue("localhost", server=True)
    (tmp_path / "server.pem").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    mtls = MtlsSettings(
        server_cert_file=str(tmp_path / "server.pem"),
        server_key_file=str(tmp_path / "server.key"),
        client_ca_file=str(tmp_path / "ca.pem"),
        require_client_cert=True,
        subject_claim="sub",
    )
    settings = gateway_settings(
        data_dir / "gw-tls",
        policy=PolicySettings(http_policy, reload_interval_s=0),
        auth=replace(dev_auth_settings(data_dir), mtls=mtls),
        http=HttpSettings(listen="127.0.0.1:0"),
    )
    gateway = await start_test_gateway(http_worker, settings=settings)
    assert gateway.http is not None and gateway.http.tls
    url = f"https://localhost:{gateway.http.port}/v1/models"
    headers = {"Authorization": f"Bearer {mint(subject='tester')}"}

    async def status(context: ssl.SSLContext) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, ssl=context) as response,
        ):
            if response.status == 200:
                assert [m["id"] for m in (await response.json())["data"]]
            return response.status

    assert await status(_client_context(ca, tmp_path, "tester")) == 200
    assert await status(_client_context(ca, tmp_path, "mallory")) == 403
    with pytest.raises(aiohttp.ClientError):
        await status(_client_context(ca, tmp_path, None))
