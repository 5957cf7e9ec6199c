"""W3C trace context through real gRPC metadata: client -> server (gateway) -> next hop (worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span

from common import telemetry
from common.egress import EgressGuard, ResidencySettings
from common.telemetry import TelemetrySettings, Tracing, start_tracing

METHOD = "/test.Echo/Call"


@pytest.fixture
async def traced_server() -> AsyncIterator[tuple[str, Tracing, InMemorySpanExporter]]:
    """A real grpc.aio server whose handler continues the caller's trace, like the gateway."""
    exporter = InMemorySpanExporter()
    tracing = start_tracing(
        TelemetrySettings(enabled=True, service_name="gateway"),
        EgressGuard(ResidencySettings()),
        exporter=exporter,
    )

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        parent = telemetry.extract_context(context.invocation_metadata())
        with tracing.span("gateway.generate", context=parent, kind=SpanKind.SERVER):
            # What the gateway attaches to its call to the worker.
            downstream = dict(telemetry.inject_metadata())
        return downstream.get("traceparent", "").encode()

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(call)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Call": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", tracing, exporter
    await server.stop(grace=None)
    tracing.shutdown()


async def call(target: str, metadata: list[tuple[str, str]]) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        reply: bytes = await stub(b"", metadata=metadata, timeout=5)
        return reply.decode()


async def test_client_trace_continues_through_gateway_to_worker(
    traced_server: tuple[str, Tracing, InMemorySpanExporter],
) -> None:
    target, server_tracing, server_spans = traced_server
    client_spans = InMemorySpanExporter()
    client = start_tracing(
        TelemetrySettings(enabled=True, service_name="client"),
        EgressGuard(ResidencySettings()),
        exporter=client_spans,
    )
    with client.span("client.call", kind=SpanKind.CLIENT) as span:
        outgoing = telemetry.inject_metadata()
        client_ctx = span.get_span_context()
        worker_traceparent = await call(target, outgoing)
    assert client.provider is not None and server_tracing.provider is not None
    client.provider.force_flush(5_000)
    server_tracing.provider.force_flush(5_000)
    client.shutdown()

    (server_span,) = server_spans.get_finished_spans()
    assert server_span.context is not None and server_span.parent is not None
    assert server_span.context.trace_id == client_ctx.trace_id
    assert server_span.parent.span_id == client_ctx.span_id
    assert server_span.parent.is_remote
    _, trace_id, parent_id, flags = worker_traceparent.split("-")
    assert int(trace_id, 16) == client_ctx.trace_id
    assert int(parent_id, 16) == server_span.context.span_id  # the worker's parent is the gateway
    assert int(flags, 16) & 1  # sampled (the SDK may also set the W3C "random" bit)


async def test_missing_or_malformed_traceparent_starts_a_new_trace(
    traced_server: tuple[str, Tracing, InMemorySpanExporter],
) -> None:
    target, _, _ = traced_server
    fresh = await call(target, [])
    garbage = await call(target, [("traceparent", "00-not-a-trace-01")])
    assert fresh and garbage
    assert fresh.split("-")[1] != garbage.split("-")[1]
    assert not get_current_span(telemetry.extract_context(None)).get_span_context().is_valid


def test_tracestate_round_trips_and_binary_metadata_is_ignored() -> None:
    incoming: list[tuple[str, str | bytes]] = [
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "region=dk,vendor=x"),
        ("traceparent-bin", b"\x00\x01"),
    ]
    ctx = telemetry.extract_context(incoming)
    outgoing = dict(telemetry.inject_metadata(ctx))
    assert outgoing["traceparent"] == incoming[0][1]
    assert outgoing["tracestate"] == "region=dk,vendor=x"
