"""Decisions of the example health-region policy, one rule at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.auth.principal import Principal
from policy import AuditContent, PolicyRequest, PolicySet, evaluate, load_directory
from policy.limits import FailureMode
from tests.policy.conftest import FIXTURES

CPR = "010190-1234"
LLAMA = "llama-3.1-8b-instruct"
QWEN = "qwen2.5-7b-instruct"


def who(department: str, clearance: str | None = "health", purpose: str | None = None) -> Principal:
    return Principal(subject="u1", department=department, clearance=clearance, purpose=purpose)


def ask(
    model: str = LLAMA,
    *texts: str,
    prompt_tokens: int = 100,
    requested_max_tokens: int | None = None,
    classification: str | None = None,
    purpose: str | None = None,
) -> PolicyRequest:
    return PolicyRequest(
        model, texts or ("hello",), prompt_tokens, requested_max_tokens, classification, purpose
    )


def test_allowed_request_carries_department_settings(health_region: PolicySet) -> None:
    decision = evaluate(
        health_region, who("emergency"), ask(classification="health", purpose="treatment")
    )

    assert decision.allowed and decision.denial is None
    assert decision.rules_fired == ()
    assert decision.effective_model == LLAMA
    assert decision.priority == 100 and decision.priority_class == "emergency"
    assert decision.allowed_pools == ("onprem-gpu",)
    assert decision.max_output_tokens == 512  # the defaults' default_output
    assert decision.limits.failure_mode is FailureMode.OPEN
    assert decision.limits.department == "emergency"
    assert decision.policy_version == health_region.version
    assert decision.audit_content is AuditContent.HASHES
    assert decision.audit_required and not decision.capture_content
    assert decision.redacted_texts is None and decision.redactions == {}


def test_health_data_never_goes_to_the_cloud_pool(health_region: PolicySet) -> None:
    public = evaluate(health_region, who("emergency"), ask(QWEN, classification="public"))
    health = evaluate(
        health_region, who("emergency"), ask(QWEN, classification="health", purpose="care")
    )

    assert public.allowed_pools == ("onprem-gpu", "eu-cloud")
    assert health.allowed and health.allowed_pools == ("onprem-gpu",)


def test_unknown_department_is_denied(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("radiology"), ask())

    assert not decision.allowed and decision.denial is not None
    assert decision.denial.kind == "permission_denied"
    assert decision.denial.rule_id == "department.unknown"
    assert decision.rules_fired == ("department.unknown",)
    assert "radiology" in decision.denial.message


@pytest.mark.parametrize(
    ("department", "model", "kind", "rule"),
    [
        ("administration", LLAMA, "permission_denied", "models.not_allowed"),
        ("research", QWEN, "permission_denied", "models.not_allowed"),
        ("administration", "gpt-4o", "invalid_argument", "models.unknown"),
    ],
)
def test_model_access(
    health_region: PolicySet, department: str, model: str, kind: str, rule: str
) -> None:
    decision = evaluate(health_region, who(department), ask(model, classification="internal"))

    assert decision.denial is not None
    assert (decision.denial.kind, decision.denial.rule_id) == (kind, rule)
    assert decision.rules_fired == (rule,)


def test_model_denial_says_which_models_to_use(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("administration"), ask(LLAMA))

    assert decision.denial is not None
    assert decision.denial.message.endswith(f"use one of: {QWEN}")


def test_classification_above_clearance(health_region: PolicySet) -> None:
    principal = who("emergency", clearance="confidential")

    denied = evaluate(health_region, principal, ask(classification="health", purpose="care"))
    allowed = evaluate(health_region, principal, ask(classification="confidential", purpose="x"))

    assert denied.denial is not None
    assert denied.denial.rule_id == "classification.above_clearance"
    assert denied.denial.kind == "permission_denied"
    assert allowed.allowed


def test_missing_clearance_uses_the_default_clearance(health_region: PolicySet) -> None:
    principal = who("emergency", clearance=None)  # defaults: clearance_default internal

    assert evaluate(health_region, principal, ask(classification="internal")).allowed
    denied = evaluate(health_region, principal, ask(classification="confidential", purpose="x"))
    assert denied.denial is not None
    assert denied.denial.rule_id == "classification.above_clearance"


def test_unknown_clearance_is_denied(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("emergency", "top-secret"), ask(classification="public"))

    assert decision.denial is not None and decision.denial.rule_id == "clearance.unknown"


def test_classification_required(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("emergency"), ask())

    assert decision.denial is not None
    assert (decision.denial.kind, decision.denial.rule_id) == (
        "invalid_argument",
        "classification.required",
    )


def test_classification_defaulted(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("administration"), ask(QWEN))

    assert decision.allowed
    assert decision.classification == "internal"
    assert decision.rules_fired == ("classification.default",)


@pytest.mark.parametrize(
    ("classification", "kind", "rule"),
    [
        ("health", "permission_denied", "classification.not_allowed"),
        ("secret", "invalid_argument", "classification.unknown"),
    ],
)
def test_classification_not_allowed_or_unknown(
    health_region: PolicySet, classification: str, kind: str, rule: str
) -> None:
    decision = evaluate(
        health_region, who("administration"), ask(QWEN, classification=classification, purpose="x")
    )

    assert decision.denial is not None
    assert (decision.denial.kind, decision.denial.rule_id) == (kind, rule)


def test_purpose_required(health_region: PolicySet) -> None:
    missing = evaluate(health_region, who("emergency"), ask(classification="health"))
    from_token = evaluate(
        health_region, who("emergency", purpose="treatment"), ask(classification="health")
    )
    from_request = evaluate(
        health_region,
        who("emergency", purpose="treatment"),
        ask(classification="health", purpose="quality assurance"),
    )
    not_needed = evaluate(health_region, who("emergency"), ask(classification="internal"))

    assert missing.denial is not None
    assert (missing.denial.kind, missing.denial.rule_id) == ("invalid_argument", "purpose.required")
    assert from_token.allowed and from_token.purpose == "treatment"
    assert from_request.allowed and from_request.purpose == "quality assurance"
    assert not_needed.allowed and not_needed.purpose is None


def test_model_served_by_no_cleared_pool(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    defaults = directory / "defaults.yaml"
    defaults.write_text(
        defaults.read_text().replace("small: {pools: [onprem, cloud]}", "small: {pools: [cloud]}")
    )
    (directory / "alpha.yaml").write_text(
        "version: 1\ndepartment: alpha\nmodels: [all]\n"
        "data: {allowed: [internal, health], pools: {health: [onprem]}}\n"
    )
    policy = load_directory(directory)

    denied = evaluate(policy, who("alpha"), ask("small", classification="health"))
    allowed = evaluate(policy, who("alpha"), ask("large", classification="health"))

    assert denied.denial is not None
    assert (denied.denial.kind, denied.denial.rule_id) == ("permission_denied", "pools.not_cleared")
    assert denied.denial.message.endswith("use one of: large")
    assert allowed.allowed and allowed.allowed_pools == ("onprem",)


def test_max_prompt_tokens(health_region: PolicySet) -> None:
    over = evaluate(health_region, who("administration"), ask(QWEN, prompt_tokens=4097))
    at = evaluate(health_region, who("administration"), ask(QWEN, prompt_tokens=4096))

    assert over.denial is not None
    assert (over.denial.kind, over.denial.rule_id) == ("invalid_argument", "tokens.max_prompt")
    assert at.allowed


def test_max_output_clamped(health_region: PolicySet) -> None:
    principal = who("emergency")
    clamped = evaluate(
        health_region, principal, ask(classification="public", requested_max_tokens=5000)
    )
    within = evaluate(
        health_region, principal, ask(classification="public", requested_max_tokens=100)
    )

    assert clamped.allowed and clamped.max_output_tokens == 2048
    assert clamped.rules_fired == ("tokens.max_output.clamp",)
    assert within.allowed and within.max_output_tokens == 100 and within.rules_fired == ()


def test_max_output_refused(health_region: PolicySet) -> None:
    principal = who("administration")
    refused = evaluate(health_region, principal, ask(QWEN, requested_max_tokens=1025))
    at_cap = evaluate(health_region, principal, ask(QWEN, requested_max_tokens=1024))
    unset = evaluate(health_region, principal, ask(QWEN))

    assert refused.denial is not None
    assert refused.denial.rule_id == "tokens.max_output.refuse"
    assert refused.denial.kind == "invalid_argument"
    assert at_cap.allowed and at_cap.max_output_tokens == 1024
    assert unset.allowed and unset.max_output_tokens == 256  # administration's default_output


def test_zero_max_output_is_invalid(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("administration"), ask(QWEN, requested_max_tokens=0))

    assert decision.denial is not None and decision.denial.rule_id == "tokens.max_output.invalid"


def test_cpr_blocked_without_echoing_it(health_region: PolicySet) -> None:
    decision = evaluate(
        health_region, who("administration"), ask(QWEN, "fine", f"patient {CPR} called", "x")
    )

    assert decision.denial is not None
    assert (decision.denial.kind, decision.denial.rule_id) == (
        "permission_denied",
        "guard.cpr.block",
    )
    assert decision.detections == {"cpr": 1}
    assert CPR not in decision.denial.message and "0101" not in decision.denial.message
    assert decision.redacted_texts is None


def test_cpr_redacted_before_the_worker_sees_it(health_region: PolicySet) -> None:
    texts = (
        "You are a triage assistant.",
        f"Patient {CPR} (alt. 0202021234) phones from +45 12 34 56 78 about chest pain.",
    )
    decision = evaluate(
        health_region,
        who("emergency"),
        ask(LLAMA, *texts, classification="health", purpose="treatment"),
    )

    assert decision.allowed
    assert decision.redacted_texts is not None
    assert decision.redacted_texts[0] == texts[0]
    sent = decision.redacted_texts[1]
    assert sent == (
        "Patient [REDACTED:cpr] (alt. [REDACTED:cpr]) phones from [REDACTED:phone] "
        "about chest pain."
    )
    for secret in (CPR, "0101901234", "0202021234", "12 34 56 78"):
        assert secret not in sent
    assert decision.redactions == {"cpr": 2, "phone": 1}
    assert decision.rules_fired == ("guard.cpr.redact", "guard.phone.redact")


def test_iban_blocked_for_emergency_even_though_cpr_is_redacted(health_region: PolicySet) -> None:
    decision = evaluate(
        health_region,
        who("emergency"),
        ask(LLAMA, f"{CPR} pays to DK5000400440116243", classification="internal"),
    )

    assert decision.denial is not None and decision.denial.rule_id == "guard.iban.block"


def test_custom_patterns(health_region: PolicySet) -> None:
    principal = who("research")
    blocked = evaluate(
        health_region,
        principal,
        ask(LLAMA, "summarise prn-1234567", classification="internal", purpose="research"),
    )
    redacted = evaluate(
        health_region,
        principal,
        ask(
            LLAMA,
            "SUBJ-0042 and SUBJ-0043 mailed pi@uni.dk",
            classification="internal",
            purpose="research",
        ),
    )

    assert blocked.denial is not None
    assert blocked.denial.rule_id == "guard.patient_record.block"
    assert redacted.allowed
    assert redacted.redacted_texts == (
        "[REDACTED:study_subject] and [REDACTED:study_subject] mailed [REDACTED:email]",
    )
    assert redacted.redactions == {"email": 1, "study_subject": 2}


def test_allowed_detector_is_not_applied(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("administration"), ask(QWEN, "mail anna@regionh.dk"))

    assert decision.allowed and decision.redacted_texts is None and decision.detections == {}


def test_audit_settings(health_region: PolicySet) -> None:
    decision = evaluate(health_region, who("administration"), ask(QWEN))

    assert decision.audit_content is AuditContent.FULL
    assert not decision.audit_required


def test_denials_never_contain_prompt_text(health_region: PolicySet) -> None:
    prompt = "SECRET-PROMPT-TEXT"
    requests = [
        (who("administration"), ask(LLAMA, prompt)),
        (who("administration"), ask(QWEN, prompt, prompt_tokens=10**6)),
        (who("emergency"), ask(LLAMA, prompt)),
        (who("emergency"), ask(LLAMA, prompt, classification="health")),
        (who("administration"), ask(QWEN, prompt, requested_max_tokens=10**6)),
    ]
    for principal, request in requests:
        decision = evaluate(health_region, principal, request)
        assert decision.denial is not None
        assert prompt not in decision.denial.message
