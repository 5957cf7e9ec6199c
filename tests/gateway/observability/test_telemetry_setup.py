"""Tracing setup: explicit settings only, OTLP export to a real collector, sampling, no-op mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv
from opentelemetry.trace import INVALID_SPAN

from common import telemetry
from common.egress import EgressGuard, ResidencySettings, ResidencyViolation
from common.settings import read
from common.telemetry import TelemetrySettings, Tracing, start_tracing
from tests.gateway.observability.otlp_collector import Collector, Decoy

LOOPBACK_ONLY = EgressGuard(ResidencySettings())
SAMPLED_OUT_PARENT = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")]


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = start_tracing(TelemetrySettings(enabled=True), LOOPBACK_ONLY, exporter=exporter)
    yield tracing, exporter
    tracing.shutdown()


def flush(tracing: Tracing) -> None:
    assert tracing.provider is not None
    assert tracing.provider.force_flush(5_000)


def test_spans_reach_the_exporter_with_genai_attributes(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    attributes = {telemetry.GEN_AI_REQUEST_MODEL: "llama-3.1-8b"}
    with tracing.span("generate", attributes=attributes) as span:
        span.set_attribute(telemetry.GEN_AI_USAGE_OUTPUT_TOKENS, 42)
        span.set_attribute(telemetry.GEN_AI_RESPONSE_FINISH_REASONS, ("stop",))
    flush(tracing)
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "generate"
    assert finished.attributes is not None
    assert finished.attributes["gen_ai.request.model"] == "llama-3.1-8b"
    assert finished.attributes["gen_ai.usage.output_tokens"] == 42
    assert finished.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert finished.resource.attributes["service.name"] == "llm-gateway"


def test_disabled_tracing_is_a_shared_no_op() -> None:
    tracing = start_tracing(TelemetrySettings(enabled=False), LOOPBACK_ONLY)
    assert not tracing.enabled and tracing.provider is None
    first = tracing.span("a", attributes={"k": 1})
    assert first is tracing.span("b")  # nothing allocated per request
    with first as span:
        assert span is INVALID_SPAN and not span.is_recording()
    started = time.perf_counter()
    for _ in range(20_000):
        with tracing.span("request"):
            pass
    # A generous bound (a real SDK span costs ~10x more); the point is "no per-request work".
    assert time.perf_counter() - started < 0.5
    tracing.shutdown()


def test_caller_sampled_out_flag_is_honoured_only_when_configured() -> None:
    honour = InMemorySpanExporter()
    ignore = InMemorySpanExporter()
    a = start_tracing(TelemetrySettings(enabled=True), LOOPBACK_ONLY, exporter=honour)
    b = start_tracing(
        TelemetrySettings(enabled=True, honour_parent_sampled=False), LOOPBACK_ONLY, exporter=ignore
    )
    for tracing in (a, b):
        with tracing.span("request", context=telemetry.extract_context(SAMPLED_OUT_PARENT)):
            pass
        flush(tracing)
        tracing.shutdown()
    assert honour.get_finished_spans() == ()
    (span,) = ignore.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # the trace continues


def test_sample_ratio_zero_drops_new_traces() -> None:
    exporter = InMemorySpanExporter()
    tracing = start_tracing(
        TelemetrySettings(enabled=True, sample_ratio=0.0), LOOPBACK_ONLY, exporter=exporter
    )
    for _ in range(50):
        with tracing.span("request"):
            pass
    flush(tracing)
    tracing.shutdown()
    assert exporter.get_finished_spans() == ()


def test_otlp_export_goes_to_the_configured_collector_and_ignores_otel_env(
    collector: Collector, decoy: Decoy, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = f"http://127.0.0.1:{decoy.port}"
    for name, value in {
        "OTEL_EXPORTER_OTLP_ENDPOINT": bogus,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": bogus,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-bogus=leaked",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-bogus=leaked",
        "OTEL_EXPORTER_OTLP_INSECURE": "false",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.001",
        "OTEL_SDK_DISABLED": "true",
        "OTEL_TRACES_SAMPLER": "always_off",
        "OTEL_SERVICE_NAME": "bogus-service",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=bogus-service",
        "OTEL_BSP_MAX_QUEUE_SIZE": "1",
        "OTEL_PROPAGATORS": "b3",
        # gRPC core would tunnel the export through an HTTP CONNECT proxy named here.
        "grpc_proxy": bogus,
        "https_proxy": bogus,
        "http_proxy": bogus,
    }.items():
        monkeypatch.setenv(name, value)
    settings = read(
        TelemetrySettings,
        {
            "enabled": True,
            "service_name": "gateway-under-test",
            "otlp_endpoint": f"http://127.0.0.1:{collector.port}",
        },
        "telemetry",
    )
    tracing = start_tracing(settings, LOOPBACK_ONLY)
    for i in range(3):
        with tracing.span(f"request-{i}"):
            pass
    flush(tracing)
    tracing.shutdown()
    assert sorted(collector.span_names()) == ["request-0", "request-1", "request-2"]
    assert collector.service_names() == {"gateway-under-test"}
    assert all(m.get("llmgw-service") == "gateway-under-test" for m in collector.metadata)
    assert not any("x-bogus" in m for m in collector.metadata)
    assert decoy.connections == 0


def test_otlp_endpoint_is_checked_by_the_residency_guard() -> None:
    abroad = TelemetrySettings(enabled=True, otlp_endpoint="https://203.0.113.8:4317")
    with pytest.raises(ResidencyViolation, match=r"OTLP trace endpoint 203\.0\.113\.8:4317"):
        start_tracing(abroad, LOOPBACK_ONLY)
    guard = EgressGuard(
        read(ResidencySettings, {"allowed_networks": ["192.0.2.0/24"]}, "residency")
    )
    plaintext = TelemetrySettings(enabled=True, otlp_endpoint="192.0.2.9:4317", insecure=True)
    with pytest.raises(ResidencyViolation, match="plaintext"):
        start_tracing(plaintext, guard)


def test_content_goes_into_spans_only_when_policy_allows(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    assert telemetry.content_capture_allowed(True)
    for value in (False, None, "true", 1):
        assert not telemetry.content_capture_allowed(value)
    with tracing.span("denied") as span:
        assert not telemetry.record_content(
            span, telemetry.GEN_AI_INPUT_MESSAGES, "MARKER-denied", allowed=False
        )
    with tracing.span("allowed") as span:
        assert telemetry.record_content(
            span, telemetry.GEN_AI_INPUT_MESSAGES, "MARKER-allowed", allowed=True
        )
        with pytest.raises(ValueError, match="not a content attribute"):
            telemetry.record_content(span, "note", "x", allowed=True)
    flush(tracing)
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert spans["denied"] == {}
    assert spans["allowed"] == {"gen_ai.input.messages": "MARKER-allowed"}


def test_genai_names_match_the_semantic_conventions_package() -> None:
    # Every GEN_AI_* name the module defines, so a constant added later is checked too.
    names = [name for name in dir(telemetry) if name.startswith("GEN_AI_")]
    assert len(names) >= 10
    for name in names:
        assert getattr(telemetry, name) == getattr(semconv, name)
    assert semconv.GenAiOperationNameValues.CHAT.value == telemetry.OPERATION_CHAT
    assert (
        semconv.GenAiOperationNameValues.TEXT_COMPLETION.value
        == telemetry.OPERATION_TEXT_COMPLETION
    )


def test_settings_parse_every_key() -> None:
    parsed = read(
        TelemetrySettings,
        {
            "enabled": True,
            "service_name": "gw-a",
            "otlp_endpoint": "otel.region.example:4317",
            "insecure": False,
            "ca_file": "/etc/llm/ca.pem",
            "sample_ratio": 0.25,
            "honour_parent_sampled": False,
            "export_timeout_s": 3,
        },
        "telemetry",
    )
    assert parsed == TelemetrySettings(
        True, "gw-a", "otel.region.example:4317", False, "/etc/llm/ca.pem", 0.25, False, 3.0
    )
    assert read(TelemetrySettings, {}, "telemetry") == TelemetrySettings()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"endpoint": "x:1"}, r"telemetry: unknown key\(s\) endpoint;"),
        ({"enabled": "yes"}, "telemetry.enabled: expected bool"),
        ({"service_name": 5}, "telemetry.service_name: expected str"),
        ({"sample_ratio": 1.5}, "telemetry.sample_ratio: expected a number between 0 and 1"),
        ({"sample_ratio": True}, "telemetry.sample_ratio: expected float"),
        ({"export_timeout_s": 0}, r"telemetry.export_timeout_s: expected seconds"),
        ({"otlp_endpoint": "grpc://x:4317"}, "telemetry.otlp_endpoint: expected https://"),
        ({"otlp_endpoint": "https://x:4317", "insecure": True}, "cannot be insecure"),
        ({"otlp_endpoint": "x"}, "telemetry.otlp_endpoint: expected host:port"),
        ({"otlp_endpoint": "https://x:4317/v1/traces"}, "and no path"),
        ({"otlp_endpoint": "https://u:p@x:4317"}, "telemetry.otlp_endpoint: expected host:port"),
    ],
)
def test_settings_errors_name_the_key(data: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read(TelemetrySettings, data, "telemetry")
