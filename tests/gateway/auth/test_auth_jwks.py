"""Keys from a JWKS URL: stale window, unknown-kid flood, rotation, refused redirects."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import grpc
import pytest
from jwt.algorithms import RSAAlgorithm
from llmgateway.v1 import gateway_pb2

from common.settings import read
from gateway.auth.jwks import JwksUrlKeys
from gateway.auth.settings import AuthSettings, JwksUrlSettings
from tests.gateway.auth.authkit import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    RunningServer,
    Signer,
    StartServer,
    bearer,
    jwks_document,
)
from tests.support.polling import wait_until


def _settings(url: str, **jwks: Any) -> AuthSettings:
    return read(
        AuthSettings,
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256"],
            "jwks": {"url": url, **jwks},
        },
        "auth",
    )


async def _call(server: RunningServer, token: str) -> grpc.StatusCode:
    try:
        await server.stub().ListModels(
            gateway_pb2.ListModelsRequest(), metadata=bearer(token), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_keys_survive_an_outage_for_the_stale_window_then_stop(
    start_server: StartServer, jwks_server: JwksServer, rsa_signer: Signer
) -> None:
    jwks_server.document = jwks_document(rsa_signer)
    server = await start_server(
        _settings(jwks_server.url, refresh_interval_s=0.3, stale_window_s=0.6, retry_interval_s=0.1)
    )
    fetched_at = time.monotonic()
    cached_token, fresh_token = rsa_signer.token(), rsa_signer.token(purpose="care")
    assert await _call(server, cached_token) == grpc.StatusCode.OK

    jwks_server.up = False
    await asyncio.sleep(0.5)
    assert jwks_server.fetches >= 3  # the refresh kept trying while the provider was down
    assert time.monotonic() - fetched_at < 0.8
    assert await _call(server, cached_token) == grpc.StatusCode.OK
    assert await _call(server, fresh_token) == grpc.StatusCode.OK

    await asyncio.sleep(max(0.0, fetched_at + 1.0 - time.monotonic()))
    assert await _call(server, cached_token) == grpc.StatusCode.UNAUTHENTICATED
    assert await _call(server, rsa_signer.token(purpose="late")) == grpc.StatusCode.UNAUTHENTICATED

    jwks_server.up = True  # the provider comes back: keys return without a restart

    async def recovered() -> bool:
        return await _call(server, cached_token) == grpc.StatusCode.OK

    # Polls a gRPC call: there is no event to wait on from outside the gateway.
    await wait_until(recovered, within=5, every=0.02)


async def test_random_kids_cause_at_most_one_fetch_per_cooldown(
    start_server: StartServer, jwks_server: JwksServer, rsa_signer: Signer
) -> None:
    jwks_server.document = jwks_document(rsa_signer)
    server = await start_server(
        _settings(jwks_server.url, refresh_interval_s=3600, unknown_kid_cooldown_s=60)
    )
    assert jwks_server.fetches == 1
    valid = rsa_signer.token()
    stub = server.stub()
    metadata_valid = bearer(valid)

    async def random_kid() -> grpc.StatusCode:
        token = rsa_signer.token(headers={"kid": uuid.uuid4().hex})
        try:
            await stub.ListModels(
                gateway_pb2.ListModelsRequest(), metadata=bearer(token), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    async def good() -> grpc.StatusCode:
        await stub.ListModels(gateway_pb2.ListModelsRequest(), metadata=metadata_valid, timeout=10)
        return grpc.StatusCode.OK

    codes: list[grpc.StatusCode] = []
    for _ in range(10):
        batch = [random_kid() for _ in range(100)] + [good() for _ in range(5)]
        codes.extend(await asyncio.gather(*batch))
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == 1000
    assert codes.count(grpc.StatusCode.OK) == 50
    await asyncio.sleep(0.2)  # let a scheduled refresh run, if more than one had been scheduled
    assert jwks_server.fetches == 2


async def test_rotation_accepts_new_keys_and_drops_removed_ones(
    start_server: StartServer, jwks_server: JwksServer, rsa_signer: Signer, ec_signer: Signer
) -> None:
    jwks_server.document = jwks_document(rsa_signer)
    server = await start_server(
        _settings(
            jwks_server.url,
            refresh_interval_s=0.2,
            stale_window_s=0.4,
            unknown_kid_cooldown_s=0.05,
        )
    )
    old_token, new_token = rsa_signer.token(), ec_signer.token()
    assert await _call(server, old_token) == grpc.StatusCode.OK
    assert await _call(server, new_token) == grpc.StatusCode.UNAUTHENTICATED

    jwks_server.document = jwks_document(ec_signer)  # the provider rotates to the EC key

    async def new_accepted() -> bool:
        return await _call(server, new_token) == grpc.StatusCode.OK

    await wait_until(new_accepted, within=5, every=0.02)
    removed_at = time.monotonic()
    assert await _call(server, old_token) == grpc.StatusCode.OK  # still inside the stale window

    async def old_refused() -> bool:
        return await _call(server, old_token) == grpc.StatusCode.UNAUTHENTICATED

    await wait_until(old_refused, within=5, every=0.02)
    assert time.monotonic() - removed_at >= 0.2
    assert await _call(server, new_token) == grpc.StatusCode.OK


async def test_redirects_are_not_followed(jwks_server: JwksServer, rsa_signer: Signer) -> None:
    jwks_server.document = jwks_document(rsa_signer)
    jwks_server.redirect_to = "http://127.0.0.1:9/elsewhere.json"
    keys = JwksUrlKeys(JwksUrlSettings(url=jwks_server.url, fetch_timeout_s=2), ["RS256"])
    assert not await keys.refresh()
    assert keys.candidates("rsa-1", "RS256") == []
    jwks_server.redirect_to = None
    assert await keys.refresh()
    assert [k.kid for k in keys.candidates("rsa-1", "RS256")] == ["rsa-1"]


@pytest.mark.parametrize(
    "document",
    [b"not json", b'{"keys": "nope"}', b'{"keys": [{"kty": "RSA", "n": 5}]}', b"[]"],
)
async def test_a_bad_document_keeps_the_current_keys(rsa_signer: Signer, document: bytes) -> None:
    bodies = [json.dumps(jwks_document(rsa_signer)).encode(), document]
    keys = JwksUrlKeys(
        JwksUrlSettings(url="https://idp.example/jwks"), ["RS256"], fetch=lambda: bodies.pop(0)
    )
    assert await keys.refresh()
    assert not await keys.refresh()
    assert [k.kid for k in keys.candidates("rsa-1", "RS256")] == ["rsa-1"]


async def test_private_members_of_a_jwk_are_ignored(rsa_signer: Signer) -> None:
    private = RSAAlgorithm.to_jwk(rsa_signer.private_key, as_dict=True) | {"kid": "rsa-1"}
    keys = JwksUrlKeys(
        JwksUrlSettings(url="https://idp.example/jwks"),
        ["RS256"],
        fetch=lambda: json.dumps({"keys": [private]}).encode(),
    )
    assert await keys.refresh()
    (key,) = keys.candidates("rsa-1", "RS256")
    assert not hasattr(key.jwk.key, "private_numbers")
