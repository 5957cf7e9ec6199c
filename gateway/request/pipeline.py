"""One generation through the gateway: admit (policy, limits), route, stream, account, audit.

An `Exchange` holds the state of one request. The servicer opens it with `async with`, so that
whatever happens (success, denial, client cancellation, deadline, worker failure) the exit runs
exactly once: the token reservation is reconciled, the lease released and one audit record
written durably before the caller sees the end of the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

from prometheus_client import Counter

from audit.record import Outcome
from audit.spool import SpoolFull
from common.telemetry import Tracing, content_capture_allowed
from gateway.auth.principal import Principal
from gateway.limits.base import Completion, RateLimiter
from gateway.request import access_log, metrics
from gateway.request.admission import Admitted, Gate
from gateway.request.anonymous import AnonymousRefusals, peer_host
from gateway.request.audit_record import build_record, outcome_of, refusal_reasons
from gateway.request.auditing import AuditTrail
from gateway.request.call import CallContext
from gateway.request.domain import (
    Answer,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
)
from gateway.request.errors import DeadlineExceeded, spool_full
from gateway.request.request_trace import RequestTrace
from gateway.request.worker_convert import finish_reason, worker_request
from gateway.routing.router import ModelStatus, RouteOutcome, Router, WorkerCall
from gateway.settings import GatewaySettings
from policy.decision import Decision
from policy.definitions import AuditContent
from policy.store import PolicyStore

log = logging.getLogger(__name__)

DROPPED_RECORDS = Counter(
    "llmgw_audit_records_dropped_total",
    "Audit records not written because the spool was full (departments with audit.required: false)",
)
# Time kept back from the caller's deadline so that the worker's answer can still reach them.
DEADLINE_MARGIN_S = 0.005


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The request path's collaborators, shared by every exchange."""

    settings: GatewaySettings
    router: Router
    policy: PolicyStore
    limiter: RateLimiter
    audit: AuditTrail
    tracing: Tracing
    anonymous: AnonymousRefusals = field(default_factory=AnonymousRefusals)

    @property
    def gate(self) -> Gate:
        return Gate(self.settings.server, self.policy, self.router, self.limiter, self.audit)

    def exchange(self, call: CallContext, *, streaming: bool, listing: bool = False) -> Exchange:
        return Exchange(self, call, streaming=streaming, listing=listing)


class Exchange:
    """The state of one request from arrival to its audit record."""

    def __init__(
        self, pipeline: Pipeline, call: CallContext, *, streaming: bool, listing: bool = False
    ) -> None:
        self._pipeline = pipeline
        self._call = call
        self._streaming = streaming
        self._listing = listing
        self._started = time.monotonic()
        self.principal: Principal | None = call.principal
        self.request: GenerationRequest | None = None
        self.decision: Decision | None = None
        self.admitted: Admitted | None = None
        self.route = RouteOutcome()
        self.result = GenerationResult(request_id=call.request_id, model="")
        self.trace = RequestTrace(pipeline.tracing, call.metadata, time.time_ns(), streaming)
        self._heartbeat: asyncio.TimerHandle | asyncio.Task[None] | None = None

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listing and exc is None:
            return  # a model listing is audited only when refused
        result = self.finish()
        remaining = self._call.time_remaining()
        outcome, status = outcome_of(exc, deadline_passed=remaining is not None and remaining <= 0)
        if outcome is Outcome.CANCELLED and result.finish_reason is None:
            result.finish_reason = FinishReason.CANCELLED
        if self._aggregated(exc, status):
            # Audited through the window's aggregate record of its kind; metrics count it.
            self._observe(outcome, status, "")
            return
        # Accounting and audit must finish even when the caller has gone away.
        recorded = await asyncio.shield(self._account_and_audit(outcome, status, exc))
        if not recorded and exc is None and (self.decision is None or self.decision.audit_required):
            # The spool filled up while this request ran: a department that must be audited
            # does not get an unaudited success.
            raise spool_full()

    def _observe(self, outcome: Outcome, status: str, department: str) -> None:
        """Request metrics and the access-log line of this exchange (bounded label values)."""
        policy = self._pipeline.policy.current()
        access_log.record(
            metrics.summarize(
                self.result,
                department=department,
                audit_outcome=outcome.value,
                grpc_status=status,
                streaming=self._streaming,
                trace_id=self.trace.trace_id,
                known_models=policy.model_catalog,
                known_departments=policy.departments,
            )
        )

    def _aggregated(self, exc: BaseException | None, status: str) -> bool:
        """Whether this authentication refusal only counts towards an aggregate record."""
        refusal = self._call.refusal
        if refusal is None or exc is not refusal:
            return False
        reason = refusal_reasons(refusal)
        return not self._pipeline.anonymous.first(
            self._call.peer, reason[0] if reason else status, status, self._call.interface
        )

    def finish(self) -> GenerationResult:
        """The result with its final timings and routing facts (idempotent)."""
        result = self.result
        if not result.total_ms:
            result.total_ms = (time.monotonic() - self._started) * 1000
        result.worker = self.route.worker_id
        result.model_digest = self.route.model_digest
        result.retries = self.route.retries
        result.queue_ms = self.route.queue_ms
        return result

    def models(self) -> list[ModelStatus]:
        """The models the caller's department may use, with their ready workers."""
        principal = self._call.authenticated()
        department = self._pipeline.policy.current().department(principal.department)
        allowed = department.models if department else frozenset()
        return [m for m in self._pipeline.router.models().values() if m.name in allowed]

    async def admit(self, request: GenerationRequest) -> Admitted:
        """Authentication's verdict, then admission (policy, audit spool, limits)."""
        principal = self._call.authenticated()
        self.request = request
        self.result.model = request.model
        admission = await self._pipeline.gate.admit(
            self.result.request_id, principal, request, self.trace
        )
        self.decision = admission.decision
        if admission.refusal is not None:
            raise admission.refusal
        admitted = admission.admitted
        assert admitted is not None and self.decision is not None
        self.admitted = admitted
        self.result.model = self.decision.effective_model or request.model
        self._keep_lease_alive()
        return admitted

    async def generate(self) -> AsyncIterator[StreamChunk]:
        """Route to a worker and relay its tokens as they come."""
        admitted = self.admitted
        assert admitted is not None, "admit() first"
        call = WorkerCall(
            message=worker_request(self.result.request_id, self.result.model, admitted),
            allowed_pools=admitted.allowed_pools,
            deadline=self._deadline(),
            metadata=self.trace.metadata(),
            priority=admitted.priority,
            affinity_key=admitted.request.affinity_key,
            department=admitted.department,
            model_digest=self.decision.model_digest if self.decision else "",
        )
        result = self.result
        result.answer = self._answer()
        with self.trace.stage("route_and_generate") as span:
            async for message in self._pipeline.router.generate(call, self.route):
                if message.prompt_tokens:
                    result.prompt_tokens = message.prompt_tokens
                if message.token_count:
                    if not result.completion_tokens:
                        result.time_to_first_token_ms = (time.monotonic() - self._started) * 1000
                    result.completion_tokens += message.token_count
                    result.answer.add(message.text)
                    yield StreamChunk(message.text, message.token_count)
                if message.finish_reason:
                    result.finish_reason = finish_reason(message.finish_reason)
                    result.completion_tokens = message.completion_tokens or result.completion_tokens
            span.set_attribute("llmgateway.worker", self.route.worker_id)

    def _answer(self) -> Answer:
        """Hash the answer as it streams; keep its text only where something needs it."""
        decision = self.decision
        keep_text = not self._streaming or (
            decision is not None
            and (
                decision.audit_content is AuditContent.FULL
                or content_capture_allowed(decision.capture_content)
            )
        )
        return Answer(keep_text=keep_text, hasher=self._pipeline.audit.keys.content_hasher())

    def _deadline(self) -> float | None:
        remaining = self._call.time_remaining()
        if remaining is None:
            return None
        if remaining <= DEADLINE_MARGIN_S:
            raise DeadlineExceeded("the deadline passed before a worker could be called")
        return time.monotonic() + remaining - DEADLINE_MARGIN_S

    def _keep_lease_alive(self) -> None:
        """Extend the concurrency lease of streams that outlive a third of its TTL."""
        interval = self._pipeline.settings.limits.lease_ttl_s / 3
        self._heartbeat = asyncio.get_running_loop().call_later(interval, self._start_heartbeat)

    def _start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        interval = self._pipeline.settings.limits.lease_ttl_s / 3
        lease = self.admitted.lease if self.admitted else None
        while lease is not None and await self._pipeline.limiter.heartbeat(lease):
            await asyncio.sleep(interval)

    async def _account_and_audit(
        self, outcome: Outcome, status: str, exc: BaseException | None
    ) -> bool:
        """Reconcile tokens and write the audit record; False if the spool refused it."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        result, admitted = self.result, self.admitted
        # The limiter's completion (a Redis round trip) runs while the record is built and
        # written (an fsync), so the caller waits for the longer of the two, not their sum.
        completing: asyncio.Future[Completion] | None = None
        if admitted is not None and admitted.lease is not None:
            used = (result.prompt_tokens or admitted.prompt_tokens) + result.completion_tokens
            completing = asyncio.ensure_future(
                self._pipeline.limiter.complete(admitted.lease, used)
            )
        try:
            return await self._audit(outcome, status, exc)
        finally:
            if completing is not None:
                await completing

    async def _audit(self, outcome: Outcome, status: str, exc: BaseException | None) -> bool:
        """End the trace and write the audit record; False if the spool refused it."""
        result, admitted, decision = self.result, self.admitted, self.decision
        request = self.request
        department = (
            decision.department
            if decision
            else (self.principal.department if self.principal else "")
        )
        if request is not None and decision is not None:
            self.trace.record_content(
                "\n".join(admitted.texts if admitted else request.texts),
                result.answer.text,
                allowed=content_capture_allowed(decision.capture_content),
            )
        # Content goes on the span before it ends (an ended span drops attributes).
        self.trace.finish(result, status, department)
        record = build_record(
            keys=self._pipeline.audit.keys,
            result=result,
            principal=self.principal,
            decision=decision,
            sent_texts=admitted.texts if admitted else (),
            original_texts=request.texts if request else (),
            outcome=outcome,
            status_code=status,
            client_request_id=request.client_request_id if request else "",
            classification=request.classification if request else None,
            purpose=request.purpose if request else None,
            trace_id=self.trace.trace_id,
            span_id=self.trace.span_id,
            refusal=exc,
            interface=self._call.interface,
            peer=peer_host(self._call.peer) if self.principal is None else "",
        )
        self._observe(outcome, status, department)
        try:
            await self._pipeline.audit.append(record)
        except SpoolFull:
            DROPPED_RECORDS.inc()
            log.error("audit spool full: record of request %s not written", result.request_id)
            return False
        return True
