"""A caller's trace continues through the gateway into the worker's span."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from common.egress import EgressGuard, ResidencySettings
from common.telemetry import TelemetrySettings, start_tracing
from gateway.auth.devkeys import dev_auth_settings
from tests.gateway.observability.otlp_collector import run_collector
from tests.helpers import FAST_SIM, Mint, StartGateway, gateway_settings
from workers.server import start_worker
from workers.sim import SimEngine


async def test_worker_span_continues_the_callers_trace(
    data_dir: Path, start_test_gateway: StartGateway, mint: Mint
) -> None:
    with run_collector() as collector:
        telemetry = TelemetrySettings(
            enabled=True, otlp_endpoint=f"http://127.0.0.1:{collector.port}", export_timeout_s=5.0
        )
        tracing = start_tracing(
            replace(telemetry, service_name="llm-worker"), EgressGuard(ResidencySettings())
        )
        worker = await start_worker(SimEngine(FAST_SIM), worker_id="traced", tracing=tracing)
        try:
            settings = gateway_settings(
                data_dir / "gw", telemetry=telemetry, auth=dev_auth_settings(data_dir)
            )
            gateway = await start_test_gateway(worker, settings=settings)
            trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
            metadata = (
                ("authorization", f"Bearer {mint()}"),
                ("traceparent", f"00-{trace_id}-{span_id}-01"),
            )
            async with grpc.aio.insecure_channel(gateway.target) as channel:
                stub = gateway_pb2_grpc.InferenceServiceStub(channel)
                request = pb.GenerateRequest(
                    model="llama-3.1-8b-instruct",
                    prompt="trace me",
                    sampling=pb.SamplingParams(max_tokens=5),
                )
                response = await stub.Generate(request, metadata=metadata, timeout=5)
            assert response.usage.completion_tokens == 5
            gateway_provider = gateway.pipeline.tracing.provider
            assert gateway_provider is not None and tracing.provider is not None
            assert await asyncio.to_thread(gateway_provider.force_flush, 5_000)
            assert await asyncio.to_thread(tracing.provider.force_flush, 5_000)
        finally:
            await worker.stop(grace=0)
            tracing.shutdown()
    spans = {
        span.name: span
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    root, on_worker = spans["gen_ai.generate"], spans["gen_ai.worker.generate"]
    assert root.trace_id.hex() == trace_id == on_worker.trace_id.hex()
    assert root.parent_span_id.hex() == span_id
    assert on_worker.parent_span_id == root.span_id
    attributes = {kv.key: kv.value for kv in on_worker.attributes}
    assert attributes["gen_ai.usage.output_tokens"].int_value == 5
    assert attributes["gen_ai.request.model"].string_value == "llama-3.1-8b-instruct"
    assert "llmgateway.time_to_first_token_ms" in attributes
    assert collector.service_names() == {"llm-gateway", "llm-worker"}
