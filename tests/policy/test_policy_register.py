"""The model and purpose registers: schema errors, the retention floor, engine rules."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy import PolicyError, PolicyRequest, evaluate, load_directory
from policy.checker import main as check
from policy.register import ModelStatus
from tests.helpers import EXAMPLE_POLICY

LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"


@dataclass(frozen=True)
class Who:
    department: str
    roles: frozenset[str] = frozenset()
    clearance: str | None = "health"
    purpose: str | None = None


def ask(
    model: str = LLAMA, classification: str = "internal", purpose: str | None = None
) -> PolicyRequest:
    return PolicyRequest(model, ("hello",), 10, None, classification, purpose)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    directory = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, directory)
    return directory


def edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))


def issues(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load_directory(directory)
    return [f"{i.key}: {i.message}" for i in err.value.issues]


def test_the_example_registers_load() -> None:
    register = load_directory(EXAMPLE_POLICY).register
    assert register.models is not None and register.purposes is not None
    llama = register.models[LLAMA]
    assert llama.status is ModelStatus.APPROVED and llama.approval.date == "2026-10-01"
    assert llama.weights_digest.startswith("sha256:")
    treatment = register.purposes["treatment"]
    assert treatment.legal_basis.article_9 == "health_care"
    assert treatment.retention_records_days == 3650 and treatment.retention_text_days == 30
    assert register.retention_floor_days == 183


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        (
            "models.yaml",
            "    status: approved\n",
            "    status: paused\n",
            "models.llama-3.1-8b-instruct.status: expected one of",
        ),
        (
            "models.yaml",
            "    licence: Apache-2.0\n",
            "    licence: Apache-2.0\n    licence_url: x\n",
            "licence_url: unknown key",
        ),
        (
            "models.yaml",
            "weights_digest: sha256:4e7a",
            "weights_digest: md5:4e7a",
            "weights_digest: expected sha256:",
        ),
        (
            "models.yaml",
            "      date: 2026-10-01\n",
            "      date: first of October\n",
            "approval.date: expected a date",
        ),
        (
            "models.yaml",
            "  qwen2.5-7b-instruct:\n",
            "  mistral-7b:\n",
            "models.mistral-7b: not a model of the catalog",
        ),
        (
            "models.yaml",
            "[treatment, administration, research]",
            "[treatment, triage]",
            "unknown purpose 'triage'",
        ),
        (
            "purposes.yaml",
            "      records_days: 730\n",
            "      records_days: 90\n",
            "below the floor of 183 days",
        ),
        (
            "purposes.yaml",
            "      article_9: health_care\n",
            "",
            "name the GDPR Art. 9(2) condition",
        ),
        (
            "purposes.yaml",
            "      article_6: public_task\n",
            "      article_6: because\n",
            "article_6: expected one of",
        ),
        (
            "purposes.yaml",
            "    departments: [research]\n",
            "    departments: [radiology]\n",
            "unknown department 'radiology'",
        ),
        (
            "purposes.yaml",
            "      text_days: 30\n",
            "      text_days: 4000\n",
            "kept text cannot outlive its record",
        ),
    ],
)
def test_register_errors_name_the_key(
    copy: Path, name: str, old: str, new: str, expected: str
) -> None:
    edit(copy, name, old, new)
    found = issues(copy)
    assert any(expected in issue for issue in found), found


def test_every_catalog_model_must_be_registered(copy: Path) -> None:
    text = (copy / "models.yaml").read_text()
    (copy / "models.yaml").write_text(text[: text.index("  qwen2.5-7b-instruct:")])
    assert any("catalog model 'qwen2.5-7b-instruct' is not registered" in i for i in issues(copy))


def test_the_floor_is_configurable(copy: Path) -> None:
    edit(copy, "purposes.yaml", "retention_floor_days: 183", "retention_floor_days: 1000")
    found = issues(copy)
    assert any("records are kept 730 days, below the floor of 1000" in i for i in found), found


def test_registered_purpose_needs_the_purpose_register(copy: Path) -> None:
    (copy / "purposes.yaml").unlink()
    (copy / "models.yaml").write_text(
        (copy / "models.yaml").read_text().replace("[treatment, administration, research]", "[]")
    )
    assert any("data.registered_purpose" in i for i in issues(copy))


def test_without_registers_the_policy_behaves_as_before(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (copy / "purposes.yaml").unlink()
    (copy / "models.yaml").unlink()
    edit(copy, "research.yaml", "  registered_purpose: true\n", "")
    policy = load_directory(copy)
    decision = evaluate(policy, Who("emergency"), ask())
    assert decision.allowed and decision.model_digest == ""
    assert check([str(copy)]) == 0
    assert check([str(copy), "--require-register"]) == 1
    assert "models.yaml:0: -: missing" in capsys.readouterr().err


def test_suspended_and_retired_models_are_refused(copy: Path) -> None:
    edit(copy, "models.yaml", "    status: approved\n", "    status: suspended\n")
    edit(copy, "models.yaml", "    status: approved\n", "    status: retired\n")
    policy = load_directory(copy)
    for model, rule in ((LLAMA, "register.model_suspended"), (QWEN, "register.model_retired")):
        decision = evaluate(policy, Who("emergency"), ask(model))
        assert decision.denial is not None and decision.denial.rule_id == rule
        assert decision.denial.kind == "permission_denied"


def test_approved_model_decisions_carry_the_registered_digest() -> None:
    policy = load_directory(EXAMPLE_POLICY)
    decision = evaluate(policy, Who("emergency"), ask())
    assert policy.register.models is not None
    assert (
        decision.allowed and decision.model_digest == policy.register.models[LLAMA].weights_digest
    )


@pytest.mark.parametrize(
    ("purpose", "classification", "rule"),
    [
        (None, "internal", "purpose.required"),
        ("fishing", "internal", "purpose.unregistered"),
        ("administration", "internal", "purpose.department_not_allowed"),
        ("research", "internal", None),
    ],
)
def test_research_names_a_registered_purpose(
    purpose: str | None, classification: str, rule: str | None
) -> None:
    decision = evaluate(
        load_directory(EXAMPLE_POLICY), Who("research"), ask(LLAMA, classification, purpose)
    )
    assert (decision.denial.rule_id if decision.denial else None) == rule


def test_a_purpose_limits_models_and_classifications(copy: Path) -> None:
    edit(
        copy,
        "purposes.yaml",
        "[llama-3.1-8b-instruct]\n    classifications: [public, internal, confidential]\n",
        "[llama-3.1-8b-instruct]\n    classifications: [public]\n",
    )
    policy = load_directory(copy)
    decision = evaluate(policy, Who("research"), ask(LLAMA, "internal", "research"))
    assert decision.denial is not None
    assert decision.denial.rule_id == "purpose.classification_not_allowed"
    edit(copy, "research.yaml", "models: [llama-3.1-8b-instruct]", "models: [general]")
    policy = load_directory(copy)
    decision = evaluate(policy, Who("research"), ask(QWEN, "public", "research"))
    assert decision.denial is not None and decision.denial.rule_id == "purpose.model_not_allowed"
