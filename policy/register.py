"""The governance registers beside the policy: approved model builds and processing purposes."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# The AI Act (Art. 26(6)) asks deployers of high-risk systems to keep logs at least six months;
# the checker refuses a purpose that keeps its records for less than the configured floor.
DEFAULT_RETENTION_FLOOR_DAYS = 183


class ModelStatus(enum.Enum):
    """Whether the gateway may serve a registered model."""

    APPROVED = "approved"
    SUSPENDED = "suspended"  # refused until approved again; streams in flight finish
    RETIRED = "retired"  # refused for good; kept in the register for the record


AI_ACT_CATEGORIES = (
    "minimal_risk",
    "limited_risk",
    "high_risk",
    "general_purpose",
    "general_purpose_systemic_risk",
)
DEPLOYER_ROLES = ("deployer", "provider", "provider_and_deployer")
# GDPR Art. 6(1)(a)-(f) and Art. 9(2)(a)-(j), by name.
ARTICLE_6_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
)
ARTICLE_9_CONDITIONS = (
    "explicit_consent",
    "employment_social_protection",
    "vital_interests",
    "not_for_profit_body",
    "made_public",
    "legal_claims",
    "substantial_public_interest",
    "health_care",
    "public_health",
    "research_statistics",
)


@dataclass(frozen=True, slots=True)
class Approval:
    """Who approved a model build, when (ISO date), under which assessment or DPIA."""

    by: str
    date: str
    assessment: str


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model build in the register (`models.yaml`).

    `weights_digest` is `sha256:<hex>` of the manifest of the model directory (or, for the
    simulator, of its configuration); the gateway routes only to workers advertising it.
    """

    name: str
    display_name: str
    provider: str
    licence: str
    version: str
    weights_digest: str
    intended_purposes: tuple[str, ...]
    known_limitations: tuple[str, ...]
    ai_act_category: str
    deployer_role: str
    approval: Approval
    status: ModelStatus


@dataclass(frozen=True, slots=True)
class LegalBasis:
    """GDPR Art. 6 basis, the Art. 9 condition where special-category data is allowed."""

    article_6: str
    article_9: str | None = None
    reference: str = ""  # the national law or decision relied on, free text


@dataclass(frozen=True, slots=True)
class Purpose:
    """One registered processing purpose (`purposes.yaml`)."""

    id: str
    description: str
    legal_basis: LegalBasis
    departments: frozenset[str]
    models: frozenset[str]
    classifications: frozenset[str]
    retention_records_days: int
    retention_text_days: int


@dataclass(frozen=True, slots=True)
class Register:
    """Both registers as loaded; either may be absent (None), which keeps the old behaviour."""

    models: Mapping[str, ModelEntry] | None = None
    purposes: Mapping[str, Purpose] | None = None
    retention_floor_days: int = DEFAULT_RETENTION_FLOOR_DAYS
    special_categories: frozenset[str] = field(default_factory=frozenset)

    def model(self, name: str) -> ModelEntry | None:
        """The register entry of `name`, or None (no register, or not registered)."""
        return self.models.get(name) if self.models is not None else None

    def purposes_for(self, department: str, model: str) -> tuple[str, ...]:
        """The ids of the purposes `department` may pursue with `model`, sorted."""
        if self.purposes is None:
            return ()
        return tuple(
            sorted(
                p.id
                for p in self.purposes.values()
                if department in p.departments and model in p.models
            )
        )
