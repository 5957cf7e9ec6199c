"""OpenTelemetry tracing built from explicit settings: provider, OTLP export, W3C propagation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from common.egress import EgressGuard
from common.settings import Invalid, SettingsError, setting

# OpenTelemetry GenAI semantic conventions (attribute names as of semconv 1.37).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# Content attributes: set only through `record_content`, which checks the department's policy.
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
CONTENT_ATTRIBUTES = frozenset(
    {GEN_AI_SYSTEM_INSTRUCTIONS, GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES}
)
OPERATION_CHAT = "chat"
OPERATION_TEXT_COMPLETION = "text_completion"

TRACER_NAME = "llmgateway.gateway"
_PROPAGATOR = TraceContextTextMapPropagator()  # explicit: the global one obeys OTEL_PROPAGATORS
_NOOP_SPAN: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)
# Codes worth retrying within the export timeout; passed explicitly because an empty value
# makes the SDK read OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES.
_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


def _ratio(value: float, key: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{key}: expected a number between 0 and 1")


def _export_timeout(value: float, key: str) -> None:
    if not 0.0 < value <= 300.0:
        raise SettingsError(f"{key}: expected seconds in (0, 300]")


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """How the gateway traces requests (OpenTelemetry, OTLP/gRPC export).

    The residency guard checks `otlp_endpoint` and refuses plaintext off loopback unless residency
    allows it. With `honour_parent_sampled` a caller can switch tracing off for its requests,
    which is why the audit trail never depends on sampling.
    """

    enabled: bool = setting(False, doc="trace requests")
    service_name: str = setting("llm-gateway", doc="service.name of the spans")
    otlp_endpoint: str | None = setting(
        None,
        doc="https://host:port, http://host:port (plaintext) or host:port (TLS unless insecure); "
        "null keeps spans in process",
    )
    insecure: bool = setting(False, doc="plaintext to a host:port endpoint")
    ca_file: str | None = setting(None, doc="CA that signed the collector's certificate (PEM)")
    sample_ratio: float = setting(1.0, doc="share of new traces sampled, 0 to 1", check=_ratio)
    honour_parent_sampled: bool = setting(
        True, doc="let a caller's traceparent sampled flag decide instead of sample_ratio"
    )
    export_timeout_s: float = setting(
        10.0, doc="the most one export may take, in seconds (at most 300)", check=_export_timeout
    )

    def check(self) -> None:
        if self.otlp_endpoint is not None:
            _endpoint_parts(self.otlp_endpoint, self.insecure)


def _endpoint_parts(endpoint: str, insecure: bool) -> tuple[str, bool]:
    """Split an OTLP endpoint into the gRPC target `host:port` and whether it is plaintext."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    if scheme not in ("", "http", "https"):
        raise Invalid("otlp_endpoint", "expected https://host:port, http://host:port or host:port")
    if scheme == "https" and insecure:
        raise Invalid(
            "otlp_endpoint", "an https:// endpoint cannot be insecure; use http:// or TLS"
        )
    problem = "expected host:port (OTLP/gRPC, usually port 4317) and no path"
    try:
        parts = urlsplit(f"//{rest}")
        port = parts.port
    except ValueError:
        raise Invalid("otlp_endpoint", problem) from None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.username:
        raise Invalid("otlp_endpoint", problem)
    return parts.netloc, scheme == "http" or insecure


@dataclass(frozen=True, slots=True)
class Tracing:
    """The gateway's tracer and the provider behind it (None when tracing is disabled).

    `span` is the request path's way to open a span: with tracing disabled it returns one shared
    no-op context manager, so a disabled span costs a method call and no allocation.
    """

    tracer: Tracer
    provider: TracerProvider | None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def span(
        self,
        name: str,
        *,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
    ) -> AbstractContextManager[Span]:
        if self.provider is None:
            return _NOOP_SPAN
        return self.tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attributes
        )

    def shutdown(self) -> None:
        """Flush and stop export; call on SIGTERM (no atexit hook is registered)."""
        if self.provider is not None:
            self.provider.shutdown()


def start_tracing(
    settings: TelemetrySettings, guard: EgressGuard, *, exporter: SpanExporter | None = None
) -> Tracing:
    """Build `Tracing` from settings: a no-op tracer when disabled, else `setup_tracing`."""
    if not settings.enabled:
        return Tracing(NoOpTracer(), None)
    provider = setup_tracing(settings, guard, exporter=exporter)
    return Tracing(provider.get_tracer(TRACER_NAME), provider)


def setup_tracing(
    settings: TelemetrySettings, guard: EgressGuard, *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Build a tracer provider from `settings` alone, never from `OTEL_*` environment variables.

    Every SDK argument that would otherwise fall back to the environment is passed explicitly.
    The OTLP endpoint is checked by `guard` first (raises `ResidencyViolation`). `exporter`
    adds one more exporter (tests pass an in-memory one). The provider is not made global.
    """
    sampler: Sampler = TraceIdRatioBased(settings.sample_ratio)
    if settings.honour_parent_sampled:
        sampler = ParentBased(root=sampler)
    provider = TracerProvider(
        sampler=sampler,  # else OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
        resource=Resource({"service.name": settings.service_name}),  # else OTEL_RESOURCE_ATTRIBUTES
        shutdown_on_exit=False,
        id_generator=RandomIdGenerator(),
        # else OTEL_ATTRIBUTE_* / OTEL_SPAN_* limits
        span_limits=SpanLimits(
            max_attributes=128,
            max_events=128,
            max_links=128,
            max_span_attributes=128,
            max_event_attributes=128,
            max_link_attributes=128,
            max_attribute_length=8192,
            max_span_attribute_length=8192,
        ),
        meter_provider=NoOpMeterProvider(),
    )
    # TracerProvider reads OTEL_SDK_DISABLED unconditionally in its constructor; our settings
    # decide whether tracing is on, so undo it.
    provider._disabled = False
    exporters = [] if exporter is None else [exporter]
    if settings.otlp_endpoint is not None:
        exporters.append(_otlp_exporter(settings, settings.otlp_endpoint, guard))
    for each in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(  # explicit sizes: else OTEL_BSP_*
                each,
                max_queue_size=2048,
                schedule_delay_millis=1000,
                max_export_batch_size=512,
                export_timeout_millis=settings.export_timeout_s * 1000,
                meter_provider=NoOpMeterProvider(),
            )
        )
    return provider


def check_otlp_egress(settings: TelemetrySettings, guard: EgressGuard) -> tuple[str, bool] | None:
    """Check the OTLP endpoint (when tracing is on) against the residency guard.

    Returns (target, plaintext), or None when no endpoint is used. It is the one check that
    `serve` and `check-config --resolve` both run (raises `ResidencyViolation`).
    """
    if not settings.enabled or settings.otlp_endpoint is None:
        return None
    try:
        target, plaintext = _endpoint_parts(settings.otlp_endpoint, settings.insecure)
    except Invalid as problem:
        raise problem.under("telemetry") from None
    guard.check(target, what="OTLP trace endpoint", tls=not plaintext)
    return target, plaintext


def _otlp_exporter(settings: TelemetrySettings, endpoint: str, guard: EgressGuard) -> SpanExporter:
    target, plaintext = _endpoint_parts(endpoint, settings.insecure)
    guard.check(target, what="OTLP trace endpoint", tls=not plaintext)
    credentials = None
    if not plaintext:
        root = Path(settings.ca_file).read_bytes() if settings.ca_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
    # OTLPSpanExporter falls back to the environment for every argument that is None or empty:
    # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _INSECURE, _HEADERS, _TIMEOUT, _COMPRESSION,
    # _CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE and the credential-provider entry point.
    # So all of them are given, headers included (an empty header list would be replaced by
    # OTEL_EXPORTER_OTLP_HEADERS, hence the one service header).
    options = (("grpc.enable_http_proxy", 0),)  # gRPC core would obey http(s)_proxy/grpc_proxy
    return OTLPSpanExporter(
        endpoint=target,
        insecure=plaintext,
        credentials=credentials,
        headers=(("llmgw-service", settings.service_name),),
        timeout=settings.export_timeout_s,
        compression=grpc.Compression.NoCompression,
        channel_options=options,  # type: ignore[arg-type]  # the SDK annotates str values only
        retryable_error_codes=_RETRYABLE_CODES,
        meter_provider=NoOpMeterProvider(),
    )


def extract_context(
    invocation_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> Context:
    """The caller's W3C trace context (`traceparent`, `tracestate`) from incoming gRPC metadata.

    Returns an empty context (a new trace) when there is none or it is malformed.
    """
    carrier: dict[str, str] = {}
    for key, value in invocation_metadata or ():
        if key in ("traceparent", "tracestate") and isinstance(value, str):
            carrier[key] = value
    if not carrier:
        return Context()
    return _PROPAGATOR.extract(carrier, context=Context())


def inject_metadata(context: Context | None = None) -> list[tuple[str, str]]:
    """Metadata that continues the trace of `context` (default: the current one) downstream."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return list(carrier.items())


def content_capture_allowed(capture_content: object) -> bool:
    """True only when the department policy's `capture_content` is literally True.

    Anything else (missing, None, a truthy string from a hand-edited file) means no content.
    """
    return capture_content is True


def record_content(span: Span, key: str, value: str, *, allowed: bool) -> bool:
    """Put prompt or answer text on `span` only when `allowed`; returns whether it did.

    `key` must be one of `CONTENT_ATTRIBUTES`; content never goes into any other attribute.
    """
    if key not in CONTENT_ATTRIBUTES:
        raise ValueError(
            f"{key!r} is not a content attribute; use one of {sorted(CONTENT_ATTRIBUTES)}"
        )
    if not allowed or not span.is_recording():
        return False
    span.set_attribute(key, value)
    return True
