"""Token attacks and malformed credentials, each through a real gRPC server and channel."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import gateway_pb2
from prometheus_client import REGISTRY

from common.settings import read
from gateway.auth.settings import AuthSettings
from tests.gateway.auth.authkit import ISSUER, RunningServer, Signer, StartServer, bearer

Settings = Callable[..., AuthSettings]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_token(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token HMAC-signed by hand, as an attacker holding only the public key would make it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


async def _list(server: RunningServer, metadata: Any) -> gateway_pb2.ListModelsResponse:
    response: gateway_pb2.ListModelsResponse = await server.stub().ListModels(
        gateway_pb2.ListModelsRequest(), metadata=metadata, timeout=10
    )
    return response


async def _refused(server: RunningServer, metadata: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(server, metadata)
    return caught.value


async def _unauthenticated(server: RunningServer, token: str, fragment: str) -> None:
    err = await _refused(server, bearer(token))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fragment in (err.details() or "")
    assert token not in (err.details() or "")


@pytest.fixture
async def server(start_server: StartServer, jwks_file_settings: Settings) -> RunningServer:
    return await start_server(jwks_file_settings())


async def test_valid_tokens_yield_the_principal(
    server: RunningServer, rsa_signer: Signer, ec_signer: Signer
) -> None:
    for signer in (rsa_signer, ec_signer):
        response = await _list(server, bearer(signer.token(roles="clinician, researcher")))
        assert response.models[0].name == "oncology"
        assert list(response.models[0].pools) == ["alice", "clinician", "researcher"]


async def test_streaming_call_runs_with_the_principal(
    server: RunningServer, rsa_signer: Signer
) -> None:
    call = server.stub().GenerateStream(
        gateway_pb2.GenerateStreamRequest(), metadata=bearer(rsa_signer.token()), timeout=10
    )
    assert [m.text async for m in call] == ["oncology"] * 3


async def test_streaming_call_without_token_is_refused(server: RunningServer) -> None:
    call = server.stub().GenerateStream(gateway_pb2.GenerateStreamRequest(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in call]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_alg_none_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(rsa_signer.claims()).encode())
    await _unauthenticated(server, f"{header}.{payload}.", "algorithm")


@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_hs256_signed_with_the_public_key_is_refused(
    server: RunningServer, rsa_signer: Signer, form: str
) -> None:
    secret = rsa_signer.public_pem if form == "pem" else json.dumps(rsa_signer.jwk()).encode()
    token = _hs256_token(secret, {"alg": "HS256", "kid": "rsa-1"}, rsa_signer.claims())
    await _unauthenticated(server, token, "algorithm")


async def test_hs256_with_the_public_key_is_refused_when_hs256_alone_is_pinned(
    start_server: StartServer, rsa_signer: Signer, tmp_path: Any
) -> None:
    # Even a gateway that pins HS256 must not treat the published public key as its secret.
    secret = tmp_path / "hmac.secret"
    secret.write_bytes(b"s" * 64)
    settings = read(
        AuthSettings,
        {
            "issuer": ISSUER,
            "audience": "llm-gateway",
            "algorithms": ["HS256"],
            "hmac_secret_file": str(secret),
        },
        "auth",
    )
    server = await start_server(settings)
    forged = _hs256_token(rsa_signer.public_pem, {"alg": "HS256"}, rsa_signer.claims())
    await _unauthenticated(server, forged, "signature")
    genuine = _hs256_token(b"s" * 64, {"alg": "HS256"}, rsa_signer.claims())
    assert (await _list(server, bearer(genuine))).models[0].name == "oncology"


async def test_wrong_signature_is_refused(
    server: RunningServer, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    forged = Signer(other_rsa_signer.private_key, "RS256", rsa_signer.kid).token()
    await _unauthenticated(server, forged, "signature")


async def test_tampered_payload_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    header, _, signature = rsa_signer.token().split(".")
    payload = _b64(json.dumps(rsa_signer.claims(department="radiology")).encode())
    await _unauthenticated(server, f"{header}.{payload}.{signature}", "signature")


async def test_unknown_kid_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    await _unauthenticated(server, rsa_signer.token(headers={"kid": "nobody"}), "key")


async def test_expired_beyond_leeway_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    now = int(time.time())
    await _unauthenticated(server, rsa_signer.token(iat=now - 600, exp=now - 31), "expired")


async def test_expired_within_leeway_is_accepted(server: RunningServer, rsa_signer: Signer) -> None:
    now = int(time.time())
    response = await _list(server, bearer(rsa_signer.token(iat=now - 600, exp=now - 20)))
    assert response.models[0].name == "oncology"


async def test_nbf_in_the_future_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    await _unauthenticated(server, rsa_signer.token(nbf=int(time.time()) + 120), "not valid yet")


async def test_iat_in_the_future_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    now = int(time.time())
    await _unauthenticated(server, rsa_signer.token(iat=now + 120, exp=now + 600), "not valid yet")


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud"])
async def test_missing_required_claim_is_refused(
    server: RunningServer, rsa_signer: Signer, claim: str
) -> None:
    await _unauthenticated(server, rsa_signer.token(**{claim: None}), f"'{claim}'")


@pytest.mark.parametrize("claim", ["sub", "department"])
async def test_missing_identity_claim_is_refused(
    server: RunningServer, rsa_signer: Signer, claim: str
) -> None:
    await _unauthenticated(server, rsa_signer.token(**{claim: None}), f"'{claim}'")


@pytest.mark.parametrize("issuer", [ISSUER[:-1], ISSUER + "x", ISSUER + "/", "x" + ISSUER])
async def test_issuer_prefix_or_suffix_is_refused(
    server: RunningServer, rsa_signer: Signer, issuer: str
) -> None:
    await _unauthenticated(server, rsa_signer.token(iss=issuer), "issuer")


@pytest.mark.parametrize("audience", ["other-service", ["other-service", "billing"]])
async def test_foreign_audience_is_refused(
    server: RunningServer, rsa_signer: Signer, audience: Any
) -> None:
    await _unauthenticated(server, rsa_signer.token(aud=audience), "audience")


async def test_audience_list_including_ours_is_accepted(
    server: RunningServer, rsa_signer: Signer
) -> None:
    response = await _list(server, bearer(rsa_signer.token(aud=["billing", "llm-gateway"])))
    assert response.models[0].name == "oncology"


@pytest.mark.parametrize("crit", [["exp-ext"], ["b64"]])
async def test_crit_header_is_refused(
    server: RunningServer, rsa_signer: Signer, crit: list[str]
) -> None:
    token = rsa_signer.token(headers={"crit": crit, crit[0]: True})
    await _unauthenticated(server, token, "crit")


async def test_lifetime_over_maximum_is_refused(server: RunningServer, rsa_signer: Signer) -> None:
    now = int(time.time())
    await _unauthenticated(server, rsa_signer.token(iat=now, exp=now + 3601), "lifetime")


async def test_token_over_size_limit_is_refused_before_parsing(
    start_server: StartServer, jwks_file_settings: Settings, rsa_signer: Signer
) -> None:
    # gRPC's default metadata limit (16 KiB) would refuse 20 KiB itself: raise it so the
    # gateway's own limit is what answers.
    server = await start_server(
        jwks_file_settings(), options=[("grpc.max_metadata_size", 64 * 1024)]
    )
    token = rsa_signer.token(padding="x" * 20 * 1024)
    assert len(token) > 20 * 1024
    await _unauthenticated(server, token, "longer than 8192 bytes")


async def test_twenty_kib_header_gets_a_clean_error(
    server: RunningServer, rsa_signer: Signer
) -> None:
    err = await _refused(server, bearer(rsa_signer.token(padding="x" * 20 * 1024)))
    assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_one_mib_header_gets_a_clean_error_not_a_hang(
    server: RunningServer, rsa_signer: Signer
) -> None:
    started = time.monotonic()
    err = await _refused(server, bearer("a" * 1024 * 1024))
    assert err.code() != grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    # The server keeps serving other callers.
    assert (await _list(server, bearer(rsa_signer.token()))).models[0].name == "oncology"


@pytest.mark.parametrize(
    "token",
    [
        "%%%.***.$$$",
        "abc.def",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.!!!.abc",
        _b64(b"not json") + ".e30.abc",
        _b64(b"[1, 2]") + ".e30.abc",
    ],
)
async def test_garbage_is_refused_as_malformed(server: RunningServer, token: str) -> None:
    await _unauthenticated(server, token, "token")


async def test_garbage_payload_with_good_header_is_refused(
    server: RunningServer, rsa_signer: Signer
) -> None:
    header, _, signature = rsa_signer.token().split(".")
    await _unauthenticated(server, f"{header}.bm90IGpzb24.{signature}", "token")


async def test_missing_header_is_refused(server: RunningServer) -> None:
    err = await _refused(server, ())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (err.details() or "")


@pytest.mark.parametrize("value", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "token"])
async def test_non_bearer_authorization_is_refused(server: RunningServer, value: str) -> None:
    err = await _refused(server, (("authorization", value),))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer <token>" in (err.details() or "")


async def test_health_is_open_without_a_token(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_denials_are_counted_by_reason(server: RunningServer, rsa_signer: Signer) -> None:
    def count(reason: str) -> float:
        return REGISTRY.get_sample_value("llmgw_auth_denials_total", {"reason": reason}) or 0.0

    before = count("expired"), count("missing")
    now = int(time.time())
    await _refused(server, bearer(rsa_signer.token(iat=now - 600, exp=now - 100)))
    await _refused(server, ())
    assert (count("expired"), count("missing")) == (before[0] + 1, before[1] + 1)


async def test_cached_token_is_refused_once_expired(
    start_server: StartServer, jwks_file_settings: Settings, rsa_signer: Signer
) -> None:
    server = await start_server(jwks_file_settings(leeway_s=0))
    token = rsa_signer.token(exp=int(time.time()) + 1)
    assert (await _list(server, bearer(token))).models[0].name == "oncology"
    assert (await _list(server, bearer(token))).models[0].name == "oncology"
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))
    await _unauthenticated(server, token, "expired")


async def test_pinned_pem_key_verifies_tokens_with_any_kid(
    start_server: StartServer, rsa_signer: Signer, other_rsa_signer: Signer, tmp_path: Any
) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(rsa_signer.public_pem)
    settings = read(
        AuthSettings,
        {
            "issuer": ISSUER,
            "audience": "llm-gateway",
            "algorithms": ["RS256"],
            "pem_files": [str(pem)],
        },
        "auth",
    )
    server = await start_server(settings)
    assert (await _list(server, bearer(rsa_signer.token()))).models[0].name == "oncology"
    no_kid = Signer(rsa_signer.private_key, "RS256", None).token()
    assert (await _list(server, bearer(no_kid))).models[0].name == "oncology"
    await _unauthenticated(server, other_rsa_signer.token(), "signature")
