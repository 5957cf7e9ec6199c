"""The audit record: one per gateway request, the unit the spool keeps and the store chains."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class Outcome(enum.Enum):
    """How the request ended, from the gateway's point of view."""

    OK = "ok"
    DENIED = "denied"  # authentication, policy or a limit refused it
    CANCELLED = "cancelled"  # the client went away
    DEADLINE = "deadline"  # the caller's deadline passed
    SHED = "shed"  # the queue was full
    ERROR = "error"  # a worker or internal failure


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds spent queued, until the first token, and in total (0 when not reached)."""

    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who used which model, for what, under which policy, with what outcome.

    Contract: `record_id` is unique across all gateways (the gateway request id) and is the
    idempotency key of delivery; `source` names the gateway replica whose spool assigned the
    per-source, strictly increasing `sequence`. The subject is only ever a keyed pseudonym;
    prompt and answer appear as keyed HMACs, and as text only when the department's policy
    says `content: full` (`prompt_text`/`answer_text` are None otherwise).
    """

    record_id: str
    time_ns: int
    subject_pseudonym: str
    department: str
    outcome: Outcome
    status_code: str
    source: str = ""
    sequence: int = 0
    trace_id: str = ""
    span_id: str = ""
    roles: tuple[str, ...] = ()
    purpose: str = ""
    classification: str = ""
    model: str = ""
    worker: str = ""
    policy_version: str = ""
    rules_fired: tuple[str, ...] = ()
    redactions: Mapping[str, int] = field(default_factory=dict)
    prompt_hmac: str = ""
    answer_hmac: str = ""
    prompt_text: str | None = None
    answer_text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: Timings = Timings()
    retry_count: int = 0
    client_request_id: str = ""
    # `sha256:...` of the build that answered (the worker's advertised weights digest); empty
    # when no worker was reached or the worker advertised none.
    model_digest: str = ""
    # The door the request came through: "grpc" or "openai-http".
    interface: str = "grpc"
    # Refusals before authentication only: the caller's address, and how many further refusals
    # of the same kind from it this record stands for (aggregated per window, not written alone).
    peer: str = ""
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (enums as values, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Outcome):
                value = value.value
            elif isinstance(value, Timings):
                value = {
                    "queue_ms": value.queue_ms,
                    "ttft_ms": value.ttft_ms,
                    "total_ms": value.total_ms,
                }
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "redactions":
                value = dict(sorted(value.items()))
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """The inverse of `to_dict`; raises ValueError naming the field that is malformed."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"audit record: unknown field(s) {sorted(unknown)}")
        try:
            kwargs = dict(data)
            kwargs["outcome"] = Outcome(data["outcome"])
            t = data.get("timings", {})
            kwargs["timings"] = Timings(
                float(t.get("queue_ms", 0.0)),
                float(t.get("ttft_ms", 0.0)),
                float(t.get("total_ms", 0.0)),
            )
            kwargs["roles"] = tuple(str(r) for r in data.get("roles", ()))
            kwargs["rules_fired"] = tuple(str(r) for r in data.get("rules_fired", ()))
            kwargs["redactions"] = {str(k): int(v) for k, v in data.get("redactions", {}).items()}
            return cls(**kwargs)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"audit record: malformed or missing field ({err})") from err
