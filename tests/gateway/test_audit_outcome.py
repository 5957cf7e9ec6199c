"""How an exchange's ending maps to the audit outcome and status code."""

from __future__ import annotations

import asyncio

import pytest

from audit.record import Outcome
from gateway.request.audit_record import outcome_of
from gateway.request.errors import (
    DeadlineExceeded,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    error_info,
)


@pytest.mark.parametrize(
    ("exc", "deadline_passed", "expected"),
    [
        (None, False, (Outcome.OK, "OK")),
        (asyncio.CancelledError(), False, (Outcome.CANCELLED, "CANCELLED")),
        (asyncio.CancelledError(), True, (Outcome.DEADLINE, "DEADLINE_EXCEEDED")),
        # gRPC closes a streaming handler whose caller went away while a message was written.
        (GeneratorExit(), False, (Outcome.CANCELLED, "CANCELLED")),
        (PermissionDenied("no"), False, (Outcome.DENIED, "PERMISSION_DENIED")),
        (InvalidArgument("bad"), False, (Outcome.DENIED, "INVALID_ARGUMENT")),
        # A limit's refusal is its own class: the outcome never depends on a reason string.
        (
            LimitExceeded("limit", details=[error_info("limits.x")]),
            False,
            (Outcome.DENIED, "RESOURCE_EXHAUSTED"),
        ),
        (
            ResourceExhausted("queue full", details=[error_info("limits.looks_alike")]),
            False,
            (Outcome.SHED, "RESOURCE_EXHAUSTED"),
        ),
        (ResourceExhausted("queue full"), False, (Outcome.SHED, "RESOURCE_EXHAUSTED")),
        (DeadlineExceeded("late"), False, (Outcome.DEADLINE, "DEADLINE_EXCEEDED")),
        (Unavailable("worker died"), False, (Outcome.ERROR, "UNAVAILABLE")),
        (RuntimeError("bug"), False, (Outcome.ERROR, "INTERNAL")),
    ],
)
def test_outcome_of(
    exc: BaseException | None, deadline_passed: bool, expected: tuple[Outcome, str]
) -> None:
    assert outcome_of(exc, deadline_passed) == expected
