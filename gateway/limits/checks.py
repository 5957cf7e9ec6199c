"""Turns a department's declared limits into the list of checks both limiters evaluate.

Both implementations (Redis Lua and in-process) evaluate exactly this list in this order, with
the same clock model: the gateway's wall clock in integer milliseconds, and
- `BUCKET` (requests/min, tokens/min): a token bucket of `amount` per `period` (GCRA-equivalent),
  full when unused, refilled continuously; the level is kept, not a timestamp, so the arithmetic
  stays exact in doubles for any amount;
- `STREAMS` (concurrent streams): a set of leases, each with an expiry;
- `BUDGET` (tokens per day/month): a fixed window; days are epoch-aligned windows of `period_s`
  (UTC midnight for 86,400 s), a month of 28 days or more is the calendar month in UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from gateway.limits.base import Admission
from policy.limits import Limit, LimitSet

_MONTH_MIN_S = 28 * 86_400

# Limit field of `LimitSet` -> (kind, short key suffix). The order is the evaluation order, so
# the violation reported first is the cheapest to explain (requests before tokens).
_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("requests_per_minute", "bucket", "rpm"),
    ("concurrent_streams", "streams", "streams"),
    ("tokens_per_minute", "bucket", "tpm"),
    ("tokens_per_day", "budget", "day"),
    ("tokens_per_month", "budget", "month"),
)


class Kind(enum.Enum):
    """How a limit keeps its state."""

    BUCKET = "bucket"
    STREAMS = "streams"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Check:
    """One limit to evaluate for one admission.

    `tokens` is True for limits that count tokens (reconciled at completion), False for those
    that count requests or streams. `window`/`window_end_ms` are only meaningful for budgets:
    the id of the current fixed window and when it ends (the retry-after of a spent budget).
    """

    name: str
    kind: Kind
    key: str
    amount: int
    period_ms: int
    shadow: bool
    cost: int
    tokens: bool
    window: int = 0
    window_end_ms: int = 0


def department_tag(prefix: str, department: str) -> str:
    """The key prefix shared by every key of a department: one Redis Cluster hash slot."""
    return f"{prefix}{{dept:{_escape(department)}}}"


def reservation_key(prefix: str, department: str, request_id: str) -> str:
    """The key holding one request's reservation record."""
    return f"{department_tag(prefix, department)}:res:{_escape(request_id)}"


def plan(admission: Admission, prefix: str, now_ms: int) -> list[Check]:
    """Every check of the department and user scopes, in evaluation order."""
    tag = department_tag(prefix, admission.department)
    scopes: tuple[tuple[str, LimitSet, str], ...] = (
        ("department", admission.limits.department_limits, f"{tag}:d"),
        ("user", admission.limits.user_limits, f"{tag}:u:{_escape(admission.user)}"),
    )
    checks: list[Check] = []
    for scope, limit_set, key_base in scopes:
        for field_name, kind_name, suffix in _FIELDS:
            limit: Limit | None = getattr(limit_set, field_name)
            if limit is None:
                continue
            kind = Kind(kind_name)
            checks.append(
                _check(
                    f"{scope}.{field_name}",
                    kind,
                    f"{key_base}:{suffix}",
                    limit,
                    admission.reserve_tokens if field_name.startswith("tokens_") else None,
                    now_ms,
                    calendar_month=field_name == "tokens_per_month",
                )
            )
    return checks


def budget_window(period_s: int, now_ms: int, *, calendar_month: bool) -> tuple[int, int]:
    """(window id, window end in ms) of the fixed budget window containing `now_ms`."""
    if calendar_month and period_s >= _MONTH_MIN_S:
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        window = now.year * 12 + now.month - 1
        next_year, next_month = divmod(window + 1, 12)
        end = datetime(next_year, next_month + 1, 1, tzinfo=UTC)
        return window, int(end.timestamp() * 1000)
    period_ms = period_s * 1000
    window = now_ms // period_ms
    return window, (window + 1) * period_ms


def _check(
    name: str,
    kind: Kind,
    key: str,
    limit: Limit,
    tokens: int | None,
    now_ms: int,
    *,
    calendar_month: bool,
) -> Check:
    window, window_end = 0, 0
    if kind is Kind.BUDGET:
        window, window_end = budget_window(limit.period_s, now_ms, calendar_month=calendar_month)
    return Check(
        name=name,
        kind=kind,
        key=key,
        amount=limit.amount,
        period_ms=limit.period_s * 1000,
        shadow=limit.shadow,
        cost=1 if tokens is None else tokens,
        tokens=tokens is not None,
        window=window,
        window_end_ms=window_end,
    )


def _escape(name: str) -> str:
    # Percent-encoding keeps ':' '{' '}' out of names, so no two (department, user, request)
    # triples can produce the same key and a name cannot move the hash tag.
    return quote(name, safe="")
