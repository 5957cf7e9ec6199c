"""Mutual TLS: client certificates from a test CA, and the certificate-to-token subject binding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from llmgateway.v1 import gateway_pb2, gateway_pb2_grpc

from common.settings import SettingsError
from gateway.auth.settings import AuthSettings, MtlsSettings
from gateway.auth.tls import server_credentials
from tests.gateway.auth.authkit import Signer, StartServer, bearer
from tests.support.pki import Ca


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


@pytest.fixture
def mtls(tmp_path: Path, ca: Ca) -> MtlsSettings:
    cert, key = ca.issue("localhost", server=True)
    (tmp_path / "server.pem").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    return MtlsSettings(
        server_cert_file=str(tmp_path / "server.pem"),
        server_key_file=str(tmp_path / "server.key"),
        client_ca_file=str(tmp_path / "ca.pem"),
        require_client_cert=True,
        subject_claim="sub",
    )


async def _call(
    address: str, ca: Ca, token: str, client: tuple[bytes, bytes] | None
) -> gateway_pb2.ListModelsResponse:
    cert, key = client if client else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem, private_key=key, certificate_chain=cert
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        response: gateway_pb2.ListModelsResponse = await stub.ListModels(
            gateway_pb2.ListModelsRequest(), metadata=bearer(token), timeout=10
        )
        return response


async def _server(start_server: StartServer, settings: AuthSettings) -> str:
    credentials = server_credentials(settings)
    assert credentials is not None
    return (await start_server(settings, credentials=credentials)).address


async def test_client_certificate_matching_the_token_is_accepted(
    start_server: StartServer,
    jwks_file_settings: Any,
    mtls: MtlsSettings,
    ca: Ca,
    rsa_signer: Signer,
) -> None:
    address = await _server(start_server, replace(jwks_file_settings(), mtls=mtls))
    response = await _call(address, ca, rsa_signer.token(sub="alice"), ca.issue("alice"))
    assert response.models[0].name == "oncology"


async def test_client_without_a_certificate_is_refused(
    start_server: StartServer,
    jwks_file_settings: Any,
    mtls: MtlsSettings,
    ca: Ca,
    rsa_signer: Signer,
) -> None:
    address = await _server(start_server, replace(jwks_file_settings(), mtls=mtls))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(address, ca, rsa_signer.token(), None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused(
    start_server: StartServer,
    jwks_file_settings: Any,
    mtls: MtlsSettings,
    ca: Ca,
    rsa_signer: Signer,
) -> None:
    address = await _server(start_server, replace(jwks_file_settings(), mtls=mtls))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(address, ca, rsa_signer.token(), Ca().issue("alice"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_subject_mismatch_is_permission_denied(
    start_server: StartServer,
    jwks_file_settings: Any,
    mtls: MtlsSettings,
    ca: Ca,
    rsa_signer: Signer,
) -> None:
    address = await _server(start_server, replace(jwks_file_settings(), mtls=mtls))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(address, ca, rsa_signer.token(sub="alice"), ca.issue("mallory"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'sub' claim" in (caught.value.details() or "")


async def test_optional_client_certificate_without_binding_accepts_token_only_callers(
    start_server: StartServer,
    jwks_file_settings: Any,
    mtls: MtlsSettings,
    ca: Ca,
    rsa_signer: Signer,
) -> None:
    optional = replace(mtls, require_client_cert=False, subject_claim=None)
    address = await _server(start_server, replace(jwks_file_settings(), mtls=optional))
    assert (await _call(address, ca, rsa_signer.token(), None)).models[0].name == "oncology"


def test_missing_certificate_file_names_the_key(
    jwks_file_settings: Any, mtls: MtlsSettings
) -> None:
    settings = replace(jwks_file_settings(), mtls=replace(mtls, client_ca_file="/nonexistent.pem"))
    with pytest.raises(SettingsError, match=r"auth\.mtls\.client_ca_file"):
        server_credentials(settings)


def test_no_mtls_means_no_credentials(jwks_file_settings: Any) -> None:
    assert server_credentials(jwks_file_settings()) is None
