"""Admission: policy and limits decide whether and how a request runs.

Both return decisions as data; this module is the edge that turns a refusal into the matching
`GatewayError` with google.rpc details (ErrorInfo naming the rule, RetryInfo, QuotaFailure).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.auth.principal import Principal
from gateway.limits.base import Admission, AdmissionDecision, Lease, RateLimiter
from gateway.request.domain import GenerationRequest
from gateway.request.errors import (
    GatewayError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    error_info,
    quota_failure,
    retry_info,
)
from policy.decision import Decision, PolicyRequest
from policy.engine import evaluate
from policy.policyset import PolicySet

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


def admission(request_id: str, principal: Principal, decision: Decision, tokens: int) -> Admission:
    """The limiter's question: may this department and user start a request of `tokens`?"""
    return Admission(
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
    return ResourceExhausted(
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
