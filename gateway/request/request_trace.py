"""The spans of one request: a server span with GenAI attributes and one child per stage.

Spans carry no prompt or answer text unless the department's policy allows content capture.
With tracing disabled every call here is a no-op costing well under a microsecond.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from common import telemetry as t
from gateway.request.domain import GenerationResult


class RequestTrace:
    """Spans for one exchange; `metadata()` carries the trace context to the worker."""

    def __init__(
        self,
        tracing: t.Tracing,
        invocation_metadata: Sequence[tuple[str, Any]] | None,
        started_ns: int,
        streaming: bool,
    ) -> None:
        self._enabled = tracing.enabled
        self._tracer = tracing.tracer
        self._root: trace.Span = trace.INVALID_SPAN
        self._context: Context | None = None
        if not self._enabled:
            return
        parent = t.extract_context(invocation_metadata or ())
        self._root = self._tracer.start_span(
            "gen_ai.generate",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=started_ns,
            attributes={t.GEN_AI_REQUEST_STREAM: streaming},
        )
        self._context = trace.set_span_in_context(self._root, parent)
        # Authentication ran when the call context was built, before this exchange existed.
        self._tracer.start_span("authenticate", context=self._context, start_time=started_ns).end()

    @property
    def trace_id(self) -> str:
        ctx = self._root.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else ""

    @property
    def span_id(self) -> str:
        ctx = self._root.get_span_context()
        return f"{ctx.span_id:016x}" if ctx.is_valid else ""

    @contextmanager
    def stage(self, name: str, **attributes: Any) -> Iterator[trace.Span]:
        """A child span for one stage of the pipeline (policy, limits, route, generation)."""
        if not self._enabled:
            yield trace.INVALID_SPAN
            return
        span = self._tracer.start_span(name, context=self._context, attributes=attributes)
        try:
            yield span
        finally:
            span.end()

    def metadata(self) -> list[tuple[str, str]]:
        """W3C trace-context headers for the worker call."""
        return t.inject_metadata(self._context) if self._enabled else []

    def finish(self, result: GenerationResult, status_code: str, department: str) -> None:
        """Set the GenAI attributes and end the server span."""
        if not self._enabled:
            return
        root = self._root
        root.set_attribute(t.GEN_AI_OPERATION_NAME, t.OPERATION_CHAT)
        root.set_attribute(t.GEN_AI_REQUEST_MODEL, result.model)
        root.set_attribute(t.GEN_AI_RESPONSE_ID, result.request_id)
        root.set_attribute(t.GEN_AI_USAGE_INPUT_TOKENS, result.prompt_tokens)
        root.set_attribute(t.GEN_AI_USAGE_OUTPUT_TOKENS, result.completion_tokens)
        if result.finish_reason is not None:
            root.set_attribute(t.GEN_AI_RESPONSE_FINISH_REASONS, [result.finish_reason.value])
        root.set_attribute("llmgateway.department", department)
        root.set_attribute("llmgateway.worker", result.worker)
        root.set_attribute("llmgateway.retries", result.retries)
        root.set_attribute("llmgateway.time_to_first_token_ms", result.time_to_first_token_ms)
        root.set_attribute("rpc.grpc.status_code", status_code)
        if status_code != "OK":
            root.set_status(Status(StatusCode.ERROR, status_code))
        root.end()

    def record_content(self, prompt: str, answer: str, *, allowed: bool) -> None:
        """Prompt and answer on the span, only when the department's policy allows it."""
        if self._enabled and allowed:
            t.record_content(self._root, t.GEN_AI_INPUT_MESSAGES, prompt, allowed=True)
            t.record_content(self._root, t.GEN_AI_OUTPUT_MESSAGES, answer, allowed=True)
