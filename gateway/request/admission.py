"""Admission in one place: policy, then room in the audit spool, then limits, giving `Admitted`.

Policy and the limiter return decisions as data; this module is the edge that turns a refusal
into the matching `GatewayError` with google.rpc details (ErrorInfo naming the rule, RetryInfo,
QuotaFailure). `Gate.admit` returns an `Admission` that holds the policy decision whether or not
the request was admitted, so that the audit record can name the rules that fired.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from common.tokenizer import count_chat_tokens, count_tokens
from gateway.auth.principal import Principal
from gateway.limits.base import Admission as LimiterQuestion
from gateway.limits.base import AdmissionDecision, Lease, RateLimiter
from gateway.request.auditing import AuditTrail
from gateway.request.domain import GenerationRequest
from gateway.request.errors import (
    GatewayError,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    Unavailable,
    bad_request,
    error_info,
    quota_failure,
    retry_info,
    spool_full,
)
from gateway.request.request_trace import RequestTrace
from gateway.routing.router import Router
from gateway.settings import ServerSettings
from policy.decision import Decision, PolicyRequest
from policy.engine import evaluate
from policy.policyset import PolicySet
from policy.store import PolicyStore

QUOTA_METADATA_PREFIX = "llmgw-quota-remaining-"
# Releases of admissions whose caller went away, kept referenced until they finish.
_RELEASES: set[asyncio.Future[None]] = set()


@dataclass(slots=True)
class Admitted:
    """What admission decided: the request as the worker gets it and the limits it runs under."""

    request: GenerationRequest
    texts: tuple[str, ...]
    prompt_tokens: int
    max_tokens: int
    allowed_pools: tuple[str, ...] | None
    priority: int
    cache_salt: str
    department: str
    lease: Lease | None = None
    quota_metadata: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Admission:
    """How admission ended: the policy decision (if reached), and `admitted` or `refusal`."""

    decision: Decision | None = None
    admitted: Admitted | None = None
    refusal: GatewayError | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """The request path's admission: policy, then room in the audit spool, then limits."""

    server: ServerSettings
    policy: PolicyStore
    router: Router
    limiter: RateLimiter
    audit: AuditTrail

    async def admit(
        self,
        request_id: str,
        principal: Principal,
        request: GenerationRequest,
        trace: RequestTrace,
    ) -> Admission:
        """Whether and how `request` may run; never raises a refusal, returns it."""
        outcome = Admission()
        policy = self.policy.current()
        # The catalog lookup first: it is a dict hit, the router's scan visits every worker.
        if request.model not in policy.model_catalog and not self.router.serves(request.model):
            outcome.refusal = InvalidArgument(
                f"model: unknown model {request.model!r}; "
                "call ListModels for the models you may use",
                details=[bad_request("model", "unknown model")],
            )
            return outcome
        prompt_tokens = estimate_tokens(request)
        server = self.server
        if prompt_tokens > server.max_prompt_tokens:
            outcome.refusal = InvalidArgument(
                f"the input is about {prompt_tokens} tokens; the limit is "
                f"{server.max_prompt_tokens}: shorten it",
                details=[bad_request("prompt", "too many tokens")],
            )
            return outcome
        with trace.stage("policy"):
            decision = decide_policy(policy, principal, request, prompt_tokens)
        outcome.decision = decision
        if not decision.allowed:
            outcome.refusal = policy_refusal(decision)
            return outcome
        if decision.audit_required and self.audit.is_full:
            outcome.refusal = spool_full()
            return outcome
        max_tokens = min(
            decision.max_output_tokens or server.default_max_tokens, server.max_output_tokens
        )
        try:
            with trace.stage("limits"):
                lease, quota = await admit_limits(
                    self.limiter, request_id, principal, decision, prompt_tokens + max_tokens
                )
        except GatewayError as err:
            outcome.refusal = err
            return outcome
        outcome.admitted = Admitted(
            request=request,
            texts=decision.redacted_texts or request.texts,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            allowed_pools=decision.allowed_pools or None,
            priority=decision.priority,
            cache_salt=decision.department,
            department=decision.department,
            lease=lease,
            quota_metadata=quota,
        )
        return outcome


def estimate_tokens(request: GenerationRequest) -> int:
    """The prompt's tokens by the shared tokenizer rule (the worker reports the true count)."""
    if request.prompt is not None:
        return count_tokens(request.prompt)
    return count_chat_tokens(request.texts)


def decide_policy(
    policy: PolicySet, principal: Principal, request: GenerationRequest, prompt_tokens: int
) -> Decision:
    """Evaluate the department's policy for this request (pure, no I/O)."""
    return evaluate(
        policy,
        principal,
        PolicyRequest(
            model=request.model,
            texts=request.texts,
            prompt_tokens=prompt_tokens,
            requested_max_tokens=request.max_tokens,
            classification=request.classification,
            purpose=request.purpose,
        ),
    )


def policy_refusal(decision: Decision) -> GatewayError:
    """The client-facing error for a denying decision, naming its rule in ErrorInfo."""
    denial = decision.denial
    assert denial is not None, "only denying decisions are refused"
    details = [
        error_info(
            denial.rule_id,
            {"department": decision.department, "policy_version": decision.policy_version[:16]},
        )
    ]
    message = f"{denial.message} (policy rule {denial.rule_id})"
    if denial.kind == "invalid_argument":
        return InvalidArgument(message, details=details)
    return PermissionDenied(message, details=details)


def admission(
    request_id: str, principal: Principal, decision: Decision, tokens: int
) -> LimiterQuestion:
    """The limiter's question: may this department and user start a request of `tokens`?"""
    return LimiterQuestion(
        request_id=request_id,
        department=decision.department,
        user=principal.subject,
        reserve_tokens=tokens,
        limits=decision.limits,
    )


def limits_refusal(decision: AdmissionDecision, department: str) -> GatewayError:
    """The client-facing error for a refused admission."""
    if decision.unavailable:
        return Unavailable(
            "the rate limiter cannot be reached and this department's policy fails closed; "
            "retry shortly",
            details=[retry_info(1.0), error_info("limits.unavailable")],
        )
    violated = decision.violated or "limit"
    wait = max(decision.retry_after_s, 0.001)
    return LimitExceeded(
        f"{violated} exceeded for department {department!r}; retry in {wait:.1f} s",
        details=[
            retry_info(wait),
            quota_failure(f"department:{department}", violated),
            error_info(f"limits.{violated}"),
        ],
    )


async def admit_limits(
    limiter: RateLimiter, request_id: str, principal: Principal, decision: Decision, tokens: int
) -> tuple[Lease, tuple[tuple[str, str], ...]]:
    """Reserve the request's tokens and slot; the lease and the remaining-quota metadata.

    If the caller goes away while the admission is in flight, the admission still completes
    (it is bounded by the limiter's decision timeout) and whatever it reserved is released at
    once, so that a cancelled call never holds a slot or tokens.
    """
    task = asyncio.ensure_future(limiter.admit(admission(request_id, principal, decision, tokens)))
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        release = asyncio.ensure_future(_release_when_admitted(limiter, task))
        _RELEASES.add(release)
        release.add_done_callback(_RELEASES.discard)
        raise
    if not result.allowed or result.lease is None:
        raise limits_refusal(result, decision.department)
    metadata = tuple(
        (QUOTA_METADATA_PREFIX + name.replace(".", "-").replace("_", "-"), str(value))
        for name, value in sorted(result.remaining.items())
    )
    return result.lease, metadata


async def _release_when_admitted(
    limiter: RateLimiter, admitting: asyncio.Future[AdmissionDecision]
) -> None:
    result = await admitting
    if result.allowed and result.lease is not None:
        await limiter.complete(result.lease, 0)
