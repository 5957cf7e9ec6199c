"""The policy engine's inputs and output: `Subject`, `PolicyRequest`, `Decision`, `Denial`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from policy.definitions import AuditContent
from policy.limits import DepartmentLimits

DenialKind = Literal["permission_denied", "invalid_argument"]


class Subject(Protocol):
    """Who is asking: the verified principal (`gateway.auth.principal.Principal` satisfies it)."""

    @property
    def department(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def clearance(self) -> str | None: ...
    @property
    def purpose(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What is asked, as far as policy cares; built by the gateway from the protobuf request.

    `texts` are the prompt or each chat message's content, in order. `prompt_tokens` is an
    estimate. `classification`/`purpose` are None when the request leaves them empty; a request
    purpose overrides the token's.
    """

    model: str
    texts: tuple[str, ...]
    prompt_tokens: int
    requested_max_tokens: int | None = None
    classification: str | None = None
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request was refused: `kind` selects the gRPC status, `rule_id` goes into ErrorInfo.

    `message` is safe to show the caller: it says what to change and never contains prompt text.
    """

    kind: DenialKind
    rule_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of evaluating one request; data, recorded whole in the audit trail.

    When `redacted_texts` is not None the gateway must send those to the worker instead of the
    original texts. `rules_fired` lists, in evaluation order, every rule that changed or decided
    the outcome (also non-denying ones such as `tokens.max_output.clamp`). `model_digest` is the
    registered weights digest of the model (empty without a model register): the router sends
    the request only to workers advertising it.
    """

    allowed: bool
    department: str
    policy_version: str
    limits: DepartmentLimits
    denial: Denial | None = None
    rules_fired: tuple[str, ...] = ()
    effective_model: str = ""
    classification: str | None = None
    purpose: str | None = None
    max_output_tokens: int = 0
    priority: int = 0
    priority_class: str = ""
    allowed_pools: tuple[str, ...] = ()
    detections: Mapping[str, int] = field(default_factory=dict)  # matches per detector, any action
    redactions: Mapping[str, int] = field(default_factory=dict)  # replacements per detector
    redacted_texts: tuple[str, ...] | None = None
    audit_content: AuditContent = AuditContent.HASHES
    audit_required: bool = True
    capture_content: bool = False
    model_digest: str = ""
