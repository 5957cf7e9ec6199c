"""Builds the audit record of one exchange from what the pipeline learned along the way."""

from __future__ import annotations

import asyncio
import time

from audit.record import AuditRecord, Outcome, Timings
from gateway.auth.principal import Principal
from gateway.request.auditing import AuditKeys
from gateway.request.domain import GenerationResult
from gateway.request.errors import GatewayError
from policy.decision import Decision
from policy.definitions import AuditContent


def outcome_of(exc: BaseException | None, deadline_passed: bool) -> tuple[Outcome, str]:
    """The audit outcome and gRPC status name for how an exchange ended."""
    if exc is None:
        return Outcome.OK, "OK"
    # GeneratorExit: gRPC closed a streaming handler because the caller went away mid-write.
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        if deadline_passed:
            return Outcome.DEADLINE, "DEADLINE_EXCEEDED"
        return Outcome.CANCELLED, "CANCELLED"
    if isinstance(exc, GatewayError):
        return exc.outcome, exc.code.name
    return Outcome.ERROR, "INTERNAL"


def build_record(
    *,
    keys: AuditKeys,
    result: GenerationResult,
    principal: Principal | None,
    decision: Decision | None,
    sent_texts: tuple[str, ...],
    original_texts: tuple[str, ...],
    outcome: Outcome,
    status_code: str,
    client_request_id: str,
    classification: str | None,
    purpose: str | None,
    trace_id: str,
    span_id: str,
    refusal: BaseException | None = None,
    interface: str = "grpc",
    peer: str = "",
) -> AuditRecord:
    """One record: pseudonymised subject, keyed hashes, text only when policy allows it."""
    answer = result.answer
    full = decision is not None and decision.audit_content is AuditContent.FULL
    if not answer.produced:
        answer_hmac = ""
    elif answer.hasher is not None:
        answer_hmac = answer.hasher.hexdigest()
    else:
        answer_hmac = keys.content(answer.text)
    return AuditRecord(
        record_id=result.request_id,
        time_ns=time.time_ns(),
        subject_pseudonym=keys.pseudonymize(principal.subject) if principal else "",
        department=principal.department if principal else "",
        outcome=outcome,
        status_code=status_code,
        trace_id=trace_id,
        span_id=span_id,
        roles=tuple(sorted(principal.roles)) if principal else (),
        purpose=(decision.purpose if decision else None) or purpose or "",
        classification=(decision.classification if decision else None) or classification or "",
        model=result.model,
        worker=result.worker,
        policy_version=decision.policy_version if decision else "",
        rules_fired=decision.rules_fired if decision else refusal_reasons(refusal),
        redactions=dict(decision.redactions) if decision else {},
        prompt_hmac=keys.content("\x1e".join(original_texts)) if original_texts else "",
        answer_hmac=answer_hmac,
        prompt_text="\x1e".join(sent_texts) if full and sent_texts else None,
        answer_text=answer.text if full and answer.produced else None,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        timings=Timings(result.queue_ms, result.time_to_first_token_ms, result.total_ms),
        retry_count=result.retries,
        client_request_id=client_request_id,
        model_digest=result.model_digest,
        interface=interface,
        peer=peer,
    )


def refusal_reasons(refusal: BaseException | None) -> tuple[str, ...]:
    """The ErrorInfo reasons of a refusal that came before any policy decision."""
    if not isinstance(refusal, GatewayError):
        return ()
    return tuple(reason for d in refusal.details if (reason := getattr(d, "reason", "")))
