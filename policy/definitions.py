"""The parsed, validated policy: catalog of models and pools, and one policy per department."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from policy.detectors import Detector
from policy.limits import DepartmentLimits


class OnExcess(enum.Enum):
    """What happens to a request asking for more output tokens than the department's cap."""

    CLAMP = "clamp"  # run it with the cap
    REFUSE = "refuse"  # deny it with INVALID_ARGUMENT


class GuardAction(enum.Enum):
    """What a department does when a sensitive-data detector matches a prompt."""

    BLOCK = "block"  # deny the request
    REDACT = "redact"  # replace each match before the prompt reaches a worker
    ALLOW = "allow"  # do not scan for it


class AuditContent(enum.Enum):
    """How much of a request's content its audit record may hold."""

    HASHES = "hashes"  # sha256 of prompt and answer only
    FULL = "full"  # prompt and answer text as well


@dataclass(frozen=True, slots=True)
class Pool:
    """A group of workers in one place; `on_prem` pools run on the organisation's own GPUs."""

    name: str
    on_prem: bool


@dataclass(frozen=True, slots=True)
class Classification:
    """A data classification; a higher `rank` is more sensitive.

    `on_prem_only` classifications may only be cleared for on-prem pools (health data).
    """

    name: str
    rank: int
    on_prem_only: bool


@dataclass(frozen=True, slots=True)
class Catalog:
    """What defaults.yaml declares for the whole organisation."""

    pools: Mapping[str, Pool]
    models: Mapping[str, tuple[str, ...]]  # model name -> pools serving it, in declared order
    groups: Mapping[str, tuple[str, ...]]  # group name -> model names
    classifications: Mapping[str, Classification]
    priority_classes: Mapping[str, int]
    clearance_default: str  # the clearance of a principal whose token carries none


@dataclass(frozen=True, slots=True)
class TokenCaps:
    """Prompt and output token caps; `default_output` applies when a request sets none."""

    max_prompt: int
    max_output: int
    default_output: int
    on_excess: OnExcess


@dataclass(frozen=True, slots=True)
class DataRules:
    """Which classifications a department may send, and where each may go.

    `default` is the classification of a request that declares none (only when not `required`).
    `pools` maps every allowed classification to the pools cleared for it. With
    `registered_purpose` every request must name a purpose of the purpose register that allows
    this department, the model and the classification.
    """

    allowed: frozenset[str]
    required: bool
    default: str | None
    pools: Mapping[str, frozenset[str]]
    purpose_required: frozenset[str]
    registered_purpose: bool = False


@dataclass(frozen=True, slots=True)
class GuardRules:
    """Detectors to run, split by action; `allow`ed detectors are not run at all."""

    block: tuple[Detector, ...]
    redact: tuple[Detector, ...]


@dataclass(frozen=True, slots=True)
class AuditRules:
    """What the audit record of a request may contain and whether auditing is mandatory."""

    content: AuditContent
    required: bool  # fail closed (refuse requests) when the audit spool is full
    capture_content_in_traces: bool


@dataclass(frozen=True, slots=True)
class DepartmentPolicy:
    """Everything the policy engine needs to decide a request of one department."""

    name: str
    file: str
    models: frozenset[str]  # groups already expanded
    tokens: TokenCaps
    data: DataRules
    priority_class: str
    priority: int
    limits: DepartmentLimits
    guard: GuardRules
    audit: AuditRules
