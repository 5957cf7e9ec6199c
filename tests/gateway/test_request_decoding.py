"""Hostile request bodies and field values through a real gateway: only clean refusals, no flood."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmgateway.v1 import gateway_pb2 as pb

from gateway.process.server import GatewayHandle

BUDGET = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GENERATE = "/llmgateway.v1.InferenceService/Generate"
STREAM = "/llmgateway.v1.InferenceService/GenerateStream"
LIST = "/llmgateway.v1.InferenceService/ListModels"
ANONYMOUS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}
# `model` (field 1, length-delimited) holding bytes that are not UTF-8.
INVALID_UTF8 = b"\x0a\x02\xff\xfe"
NOT_PROTOBUF = b"\xff\xff\xff\xff\xff"
# Strings that survive serialization (no lone surrogates); control characters included.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


def _call(
    channel: grpc.Channel, method: str, body: bytes, metadata: list[tuple[str, str]]
) -> tuple[grpc.StatusCode, str]:
    # Raw bytes on the wire: no (de)serializer, so the stubs' message types do not apply.
    call_metadata = tuple(metadata)
    """Send raw bytes as the request body; the status and message of the answer."""
    try:
        if method == STREAM:
            stream: Any = channel.unary_stream(method)
            for _ in stream(body, metadata=call_metadata, timeout=20):
                pass
        else:
            unary: Any = channel.unary_unary(method)
            unary(body, metadata=call_metadata, timeout=20)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _plain(message: str) -> bool:
    """A message for people: no Python class names or exception reprs."""
    return "Exception" not in message and "<class" not in message and "Error" not in message


@pytest.fixture
def token(mint: Callable[..., str]) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {mint()}")]


async def _healthy(gateway: GatewayHandle) -> bool:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize(
    ("method", "body"),
    [
        (GENERATE, INVALID_UTF8),
        (GENERATE, NOT_PROTOBUF),
        (STREAM, INVALID_UTF8),
        (STREAM, NOT_PROTOBUF),
        (LIST, NOT_PROTOBUF),  # ListModelsRequest has no fields: field 1 is merely unknown
    ],
    ids=["generate-utf8", "generate-protobuf", "stream-utf8", "stream-protobuf", "list-protobuf"],
)
async def test_undecodable_body_is_invalid_argument_with_a_plain_message(
    gateway: GatewayHandle, token: list[tuple[str, str]], method: str, body: bytes
) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        code, message = await asyncio.to_thread(_call, channel, method, body, token)
        anonymous, _ = await asyncio.to_thread(_call, channel, method, body, [])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert "not a valid llmgateway.v1." in message
    assert _plain(message), message
    assert anonymous == grpc.StatusCode.UNAUTHENTICATED


HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _stream_stream(channel: grpc.Channel, method: str, body: bytes) -> grpc.StatusCode:
    try:
        streams: Any = channel.stream_stream(method)
        for _ in streams(iter([body]), timeout=20):
            pass
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


async def test_open_services_refuse_undecodable_bodies_without_a_traceback(
    gateway: GatewayHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(gateway.target) as channel:
        for _ in range(10):
            code, message = await asyncio.to_thread(_call, channel, HEALTH, INVALID_UTF8, [])
            assert code == grpc.StatusCode.INVALID_ARGUMENT, message
            assert _plain(message), message
            # ServerReflectionRequest's field 1 (host) is a string: invalid UTF-8 there.
            code = await asyncio.to_thread(_stream_stream, channel, REFLECTION, INVALID_UTF8)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if r.name == "gateway.request.decoding"]) <= 2
    assert await _healthy(gateway)


async def test_undecodable_bodies_are_logged_once_per_window_and_the_gateway_stays_healthy(
    gateway: GatewayHandle, token: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(gateway.target) as channel:
        for _ in range(30):
            code, _ = await asyncio.to_thread(_call, channel, GENERATE, INVALID_UTF8, token)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
    decoding = [r for r in caplog.records if r.name == "gateway.request.decoding"]
    assert len(decoding) <= 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert await _healthy(gateway)


async def test_arbitrary_bytes_get_only_clean_refusals(
    gateway: GatewayHandle, token: list[tuple[str, str]]
) -> None:
    @BUDGET
    @given(
        body=st.binary(max_size=400),
        method=st.sampled_from([GENERATE, STREAM, LIST]),
        authenticated=st.booleans(),
    )
    def check(body: bytes, method: str, authenticated: bool) -> None:
        code, message = _call(channel, method, body, token if authenticated else [])
        allowed = ANONYMOUS | {grpc.StatusCode.RESOURCE_EXHAUSTED}
        if authenticated:  # some random bytes decode to a valid request
            allowed |= {grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED}
        assert code in allowed, (code, message)
        assert _plain(message), message

    with grpc.insecure_channel(gateway.target) as channel:
        await asyncio.to_thread(check)
    assert await _healthy(gateway)


@st.composite
def requests(draw: st.DrawFn) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        model=draw(st.one_of(st.just("general"), TEXT)),
        client_request_id=draw(TEXT),
        affinity_key=draw(TEXT),
        classification=draw(st.one_of(st.sampled_from(["", "internal", "public"]), TEXT)),
        purpose=draw(st.one_of(st.just(""), TEXT, st.text(min_size=129, max_size=200))),
    )
    if draw(st.booleans()):
        request.prompt = draw(TEXT)
    else:
        for _ in range(draw(st.integers(0, 3))):
            request.chat.messages.add(
                role=draw(st.integers(0, 5)),
                content=draw(TEXT),
            )
    sampling = request.sampling
    if draw(st.booleans()):
        sampling.max_tokens = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        sampling.temperature = draw(st.floats(width=32))
    if draw(st.booleans()):
        sampling.top_p = draw(st.floats(width=32))
    if draw(st.booleans()):
        sampling.top_k = draw(st.integers(0, 2**32 - 1))
    sampling.stop.extend(draw(st.lists(TEXT, max_size=10)))
    return request


async def test_arbitrary_field_values_get_only_clean_answers(
    gateway: GatewayHandle, token: list[tuple[str, str]]
) -> None:
    @BUDGET
    @given(request=requests(), method=st.sampled_from([GENERATE, STREAM]))
    def check(request: pb.GenerateRequest, method: str) -> None:
        body = request.SerializeToString()  # GenerateStreamRequest has the same fields
        code, message = _call(channel, method, body, token)
        allowed = {
            grpc.StatusCode.OK,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        assert code in allowed, (code, message)
        assert _plain(message), message

    with grpc.insecure_channel(gateway.target) as channel:
        await asyncio.to_thread(check)
    assert await _healthy(gateway)


@pytest.mark.parametrize("size", [40 * 1024, 100 * 1024])
async def test_oversize_token_is_unauthenticated_not_a_transport_error(
    gateway: GatewayHandle, size: int
) -> None:
    metadata = [("authorization", "Bearer " + "a" * size)]
    with grpc.insecure_channel(gateway.target) as channel:
        body = pb.ListModelsRequest().SerializeToString()
        code, message = await asyncio.to_thread(_call, channel, LIST, body, metadata)
    assert code == grpc.StatusCode.UNAUTHENTICATED, message
    assert "longer than" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("purpose", "p" * 100 * 1024),
        ("purpose", "p" * 129),
        ("classification", "c" * 65),
        ("purpose", "treatment\nFAKE LOG LINE"),
        ("client_request_id", "id\r\n"),
    ],
    ids=["purpose-100k", "purpose-129", "classification-65", "purpose-newline", "id-crlf"],
)
async def test_oversize_or_multiline_labels_are_invalid_argument(
    gateway: GatewayHandle, token: list[tuple[str, str]], field: str, value: str
) -> None:
    request = pb.GenerateRequest(model="general", prompt="hello")
    setattr(request, field, value)
    with grpc.insecure_channel(gateway.target) as channel:
        code, message = await asyncio.to_thread(
            _call, channel, GENERATE, request.SerializeToString(), token
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert message.startswith(field)
