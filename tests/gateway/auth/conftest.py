"""Fixtures for identity tests: real keys, a gRPC server with the gateway's call stack, JWKS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health, health_pb2_grpc

from common.settings import read
from gateway.auth.authenticator import Authenticator
from gateway.auth.settings import AuthSettings
from gateway.auth.verifier import JwtVerifier
from gateway.request.stack import build_call_stack
from tests.gateway.auth.authkit import (
    AUDIENCE,
    ISSUER,
    EchoPrincipalServicer,
    JwksServer,
    RunningServer,
    Signer,
    StartServer,
    jwks_document,
)


@pytest.fixture(scope="session")
def rsa_signer() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", "rsa-1")


@pytest.fixture(scope="session")
def other_rsa_signer() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", "rsa-2")


@pytest.fixture(scope="session")
def ec_signer() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256", "ec-1")


@pytest.fixture
def jwks_file_settings(
    tmp_path: Path, rsa_signer: Signer, ec_signer: Signer
) -> Callable[..., AuthSettings]:
    """Settings trusting the RSA and EC keys through a JWKS file; keyword overrides apply."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document(rsa_signer, ec_signer)))

    def make(**overrides: Any) -> AuthSettings:
        data: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            "jwks_file": str(path),
            "leeway_s": 30,
            "max_lifetime_s": 3600,
        }
        data.update(overrides)
        return read(AuthSettings, data, "auth")

    return make


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a grpc.aio server on 127.0.0.1:0 with the gateway's call stack and health."""
    started: list[tuple[RunningServer, JwtVerifier]] = []

    async def start(
        settings: AuthSettings,
        *,
        credentials: grpc.ServerCredentials | None = None,
        options: list[tuple[str, Any]] | None = None,
        verifier: JwtVerifier | None = None,
    ) -> RunningServer:
        verifier = verifier or JwtVerifier.from_settings(settings)
        await verifier.start()
        server = grpc.aio.server(options=options or [])
        authenticator = Authenticator(verifier, mtls=settings.mtls)
        stack = build_call_stack(EchoPrincipalServicer(), authenticator, default_deadline_s=600)
        server.add_generic_rpc_handlers((stack,))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        running = RunningServer(f"127.0.0.1:{port}", server)
        started.append((running, verifier))
        return running

    yield start
    for running, verifier in started:
        for channel in running.channels:
            await channel.close()
        await running.server.stop(None)
        await verifier.close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()
