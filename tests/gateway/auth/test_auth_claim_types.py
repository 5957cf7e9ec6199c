"""JWT time claims must be JSON numbers (RFC 7519 NumericDate); refusals are logged sparingly."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmgateway.v1 import gateway_pb2

from gateway.auth.keys import VerificationKey
from gateway.auth.settings import AuthSettings
from tests.gateway.auth.authkit import RunningServer, Signer, StartServer, bearer

Settings = Callable[..., AuthSettings]


@pytest.fixture
async def server(start_server: StartServer, jwks_file_settings: Settings) -> RunningServer:
    return await start_server(jwks_file_settings())


async def _code(server: RunningServer, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        await server.stub().ListModels(
            gateway_pb2.ListModelsRequest(), metadata=bearer(token), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _now() -> int:
    return int(time.time())


def _valid_times() -> dict[str, Any]:
    now = _now()
    return {"iat": now - 10, "nbf": now - 10, "exp": now + 300}


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "make", [str, lambda v: [v], lambda v: {"t": v}], ids=["string", "list", "object"]
)
async def test_time_claims_that_are_not_numbers_are_refused(
    server: RunningServer, rsa_signer: Signer, name: str, make: Callable[[int], Any]
) -> None:
    claims = _valid_times()
    claims[name] = make(claims[name])  # the same moment, written as another JSON type
    code, details = await _code(server, rsa_signer.token(**claims))
    assert code == grpc.StatusCode.UNAUTHENTICATED, details
    assert "NumericDate" in details or "claim types" in details


@pytest.mark.parametrize(
    "claims", [{"exp": True}, {"exp": float("inf")}, {"nbf": 1e400}, {"iat": float("-inf")}]
)
async def test_time_claims_that_are_not_finite_numbers_are_refused(
    server: RunningServer, rsa_signer: Signer, claims: dict[str, Any]
) -> None:
    code, details = await _code(server, rsa_signer.token(**claims))
    assert code == grpc.StatusCode.UNAUTHENTICATED, details


async def test_fractional_time_claims_are_numbers_and_accepted(
    server: RunningServer, rsa_signer: Signer
) -> None:
    now = time.time()
    token = rsa_signer.token(iat=now - 1.5, exp=now + 300.25, nbf=now - 2.5)
    assert (await _code(server, token))[0] == grpc.StatusCode.OK


async def test_refused_tokens_are_logged_once_per_reason_and_window(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.auth.authenticator")
    for i in range(40):
        assert (await _code(server, f"junk{i}"))[0] == grpc.StatusCode.UNAUTHENTICATED
    lines = [r for r in caplog.records if r.name == "gateway.auth.authenticator"]
    assert len(lines) <= 1


async def test_refused_tokens_do_not_grow_the_token_cache(
    jwks_file_settings: Settings, rsa_signer: Signer, other_rsa_signer: Signer
) -> None:
    from gateway.auth.verifier import JwtVerifier, TokenRejected

    verifier = JwtVerifier.from_settings(jwks_file_settings())
    await verifier.start()
    try:
        for i in range(200):
            for token in (f"junk{i}", other_rsa_signer.token(sub=f"s{i}")):
                with pytest.raises(TokenRejected):
                    verifier.verify(token)
        assert len(verifier._cache) == 0
        verifier.verify(rsa_signer.token())
        assert len(verifier._cache) == 1
    finally:
        await verifier.close()


FIXED_REASONS = {
    "missing", "malformed", "too_large", "algorithm", "crit", "unknown_key", "signature",
    "expired", "not_yet_valid", "missing_claim", "issuer", "audience", "lifetime", "claims",
    "other",
}  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "crit", "typ"]), st.text(max_size=8)),
    payload=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    signature=st.text("abcXYZ-_", max_size=20),
)
def test_denial_reasons_stay_a_fixed_set_whatever_the_token(
    header: dict[str, str], payload: dict[str, str], signature: str
) -> None:
    from gateway.auth.verifier import JwtVerifier, TokenRejected
    from tests.gateway.auth.authkit import AUDIENCE, ISSUER

    verifier = JwtVerifier(
        AuthSettings(issuer=ISSUER, audience=AUDIENCE, algorithms=("RS256",), jwks_file="x"),
        keys=_NoKeys(),
    )
    token = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, payload)
    )
    with pytest.raises(TokenRejected) as refused:
        verifier.verify(f"{token}.{signature}")
    assert refused.value.reason in FIXED_REASONS


class _NoKeys:
    """A key source that trusts nothing (every token is refused before its signature)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def candidates(self, kid: str | None, algorithm: str) -> list[VerificationKey]:
        return []

    def is_current(self, key: VerificationKey) -> bool:
        return False
