"""Audit records to and from OTLP spans (scope `llmgateway.audit`, GenAI attribute names)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from audit.record import AuditRecord, Outcome

SCOPE_NAME = "llmgateway.audit"
SPAN_NAME = "llmgateway.audit.record"
_P = "llmgateway.audit."

# Record field -> span attribute; GenAI semantic-convention names where one exists.
_ATTRS: dict[str, str] = {
    "model": "gen_ai.request.model",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    **{
        name: _P + name
        for name in [
            "record_id",
            "source",
            "sequence",
            "subject_pseudonym",
            "department",
            "roles",
            "purpose",
            "classification",
            "worker",
            "policy_version",
            "rules_fired",
            "redactions",
            "prompt_hmac",
            "answer_hmac",
            "prompt_text",
            "answer_text",
            "outcome",
            "status_code",
            "retry_count",
            "client_request_id",
            "model_digest",
            "interface",
            "peer",
            "repeats",
        ]
    },
}
_TIMING_ATTRS = {name: f"{_P}timings.{name}" for name in ("queue_ms", "ttft_ms", "total_ms")}


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, dict):
        kvs = [KeyValue(key=k, value=_any(v)) for k, v in value.items()]
        return AnyValue(kvlist_value=KeyValueList(values=kvs))
    raise TypeError(f"cannot encode {type(value).__name__} as an OTLP attribute")


def _py(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_py(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _py(kv.value) for kv in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def _id_bytes(hex_id: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(hex_id)
    except ValueError:
        return b""
    return raw if len(raw) == size else b""


def record_to_span(record: AuditRecord) -> Span:
    """One span whose attributes carry every field of the record (content only when set)."""
    data = record.to_dict()
    attrs = [KeyValue(key="gen_ai.operation.name", value=_any("chat"))]
    for name, key in _ATTRS.items():
        value = data[name]
        if value is None:  # content not captured: the attribute is absent, not empty
            continue
        attrs.append(KeyValue(key=key, value=_any(value)))
    for name, key in _TIMING_ATTRS.items():
        attrs.append(KeyValue(key=key, value=_any(float(data["timings"][name]))))
    end = record.time_ns
    start = end - round(record.timings.total_ms * 1_000_000)
    ok = record.outcome is Outcome.OK
    return Span(
        trace_id=_id_bytes(record.trace_id, 16),
        span_id=_id_bytes(record.span_id, 8),
        name=SPAN_NAME,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs,
        status=Status(
            code=Status.STATUS_CODE_OK if ok else Status.STATUS_CODE_ERROR,
            message="" if ok else record.status_code,
        ),
    )


def span_to_record(span: Span) -> AuditRecord:
    """The inverse of `record_to_span`; raises ValueError when a required attribute is missing."""
    attrs = {kv.key: _py(kv.value) for kv in span.attributes}
    data: dict[str, Any] = {"time_ns": span.end_time_unix_nano}
    for name, key in _ATTRS.items():
        if key in attrs:
            data[name] = attrs[key]
    data["timings"] = {name: attrs.get(key, 0.0) for name, key in _TIMING_ATTRS.items()}
    data["trace_id"] = span.trace_id.hex()
    data["span_id"] = span.span_id.hex()
    return AuditRecord.from_dict(data)


def export_request(records: Iterable[AuditRecord], service_name: str) -> ExportTraceServiceRequest:
    """An OTLP export carrying `records` in one ResourceSpans/ScopeSpans of our scope."""
    resource = Resource(attributes=[KeyValue(key="service.name", value=_any(service_name))])
    scope = ScopeSpans(
        scope=InstrumentationScope(name=SCOPE_NAME), spans=[record_to_span(r) for r in records]
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    )


def audit_spans(request: ExportTraceServiceRequest) -> tuple[list[Span], int]:
    """The spans of scope `llmgateway.audit` in an export, and how many other spans it held."""
    ours: list[Span] = []
    other = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            if ss.scope.name == SCOPE_NAME:
                ours.extend(ss.spans)
            else:
                other += len(ss.spans)
    return ours, other


def decode_all(spans: Sequence[Span]) -> tuple[list[AuditRecord], list[str]]:
    """Records decoded from spans, and one error message per span that could not be decoded."""
    records: list[AuditRecord] = []
    errors: list[str] = []
    for span in spans:
        try:
            records.append(span_to_record(span))
        except ValueError as err:
            errors.append(str(err))
    return records, errors
