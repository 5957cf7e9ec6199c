"""The policy engine: decide one request of one principal against a loaded `PolicySet`.

`evaluate` is pure (no I/O, no clock) and its cost does not depend on how many departments the
policy has: the department is found by a dict lookup and only its own rules run. Checks run
cheapest first; the sensitive-data guard, which scans the prompt, runs last.
"""

from __future__ import annotations

from collections.abc import Collection

from policy.decision import Decision, Denial, PolicyRequest, Subject
from policy.definitions import DepartmentPolicy, OnExcess
from policy.limits import DepartmentLimits
from policy.policyset import PolicySet
from policy.register import ModelStatus

_MAX_ECHO = 64  # longest caller-supplied name echoed back in a message


def evaluate(policy: PolicySet, subject: Subject, request: PolicyRequest) -> Decision:
    """Decide whether `subject` may run `request`, and under which model, caps and limits."""
    department = policy.department(subject.department)
    if department is None:
        denial = Denial(
            "permission_denied",
            "department.unknown",
            f"your department {_echo(subject.department)} has no policy on this gateway; "
            "ask the gateway administrators to add one",
        )
        return Decision(
            allowed=False,
            department=subject.department,
            policy_version=policy.version,
            limits=DepartmentLimits(department=subject.department),
            denial=denial,
            rules_fired=(denial.rule_id,),
        )
    return _Evaluation(policy, department, subject, request).run()


def _echo(name: str) -> str:
    return repr(name if len(name) <= _MAX_ECHO else name[:_MAX_ECHO] + "...")


def _listing(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


class _Evaluation:
    """One evaluation; the steps share the department and the facts found so far."""

    def __init__(
        self, policy: PolicySet, dept: DepartmentPolicy, subject: Subject, req: PolicyRequest
    ) -> None:
        self.policy = policy
        self.dept = dept
        self.subject = subject
        self.req = req
        self.rules: list[str] = []
        self.classification: str | None = None
        self.purpose = req.purpose or subject.purpose or None
        self.pools: tuple[str, ...] = ()
        self.max_output = 0
        self.detections: dict[str, int] = {}
        self.redactions: dict[str, int] = {}
        self.redacted: tuple[str, ...] | None = None
        self.model_digest = ""

    def run(self) -> Decision:
        for step in (
            self._model,
            self._register,
            self._classification,
            self._purpose,
            self._registered_purpose,
            self._pools,
            self._tokens,
            self._guard,
        ):
            denial = step()
            if denial is not None:
                self.rules.append(denial.rule_id)
                return self._decision(denial)
        return self._decision(None)

    def _model(self) -> Denial | None:
        model, dept = self.req.model, self.dept
        if model not in self.policy.catalog.models:
            return Denial(
                "invalid_argument",
                "models.unknown",
                f"model {_echo(model)} does not exist; use one of: {_listing(dept.models)}",
            )
        if model not in dept.models:
            return Denial(
                "permission_denied",
                "models.not_allowed",
                f"department {dept.name!r} may not use model {model!r}; "
                f"use one of: {_listing(dept.models)}",
            )
        return None

    def _register(self) -> Denial | None:
        entry = self.policy.register.model(self.req.model)
        if entry is None:  # no model register: the catalog alone decides
            return None
        if entry.status is not ModelStatus.APPROVED:
            return Denial(
                "permission_denied",
                f"register.model_{entry.status.value}",
                f"model {self.req.model!r} is {entry.status.value} in the model register; "
                f"use another of: {_listing(self._approved())}",
            )
        self.model_digest = entry.weights_digest
        return None

    def _approved(self) -> list[str]:
        register = self.policy.register
        return [
            m
            for m in self.dept.models
            if (entry := register.model(m)) is not None and entry.status is ModelStatus.APPROVED
        ]

    def _classification(self) -> Denial | None:
        data, classes = self.dept.data, self.policy.catalog.classifications
        name = self.req.classification
        if name is None:
            if data.required or data.default is None:
                return Denial(
                    "invalid_argument",
                    "classification.required",
                    f"department {self.dept.name!r} requires a data classification on every "
                    "request; "
                    f"set classification to one of: {_listing(data.allowed)}",
                )
            name = data.default
            self.rules.append("classification.default")
        kind = classes.get(name)
        if kind is None:
            return Denial(
                "invalid_argument",
                "classification.unknown",
                f"classification {_echo(name)} is not known; use one of: {', '.join(classes)}",
            )
        if name not in data.allowed:
            return Denial(
                "permission_denied",
                "classification.not_allowed",
                f"department {self.dept.name!r} may not send {name!r} data; "
                f"allowed: {_listing(data.allowed)}",
            )
        clearance = self.subject.clearance or self.policy.catalog.clearance_default
        cleared = classes.get(clearance)
        if cleared is None:
            return Denial(
                "permission_denied",
                "clearance.unknown",
                "your token's clearance is not a classification this gateway knows; "
                "ask your identity administrator to correct the clearance claim",
            )
        if kind.rank > cleared.rank:
            return Denial(
                "permission_denied",
                "classification.above_clearance",
                f"{name!r} data is above your clearance ({clearance!r}); "
                "send data at or below your clearance or ask for a higher one",
            )
        self.classification = name
        return None

    def _purpose(self) -> Denial | None:
        if self.classification in self.dept.data.purpose_required and not self.purpose:
            return Denial(
                "invalid_argument",
                "purpose.required",
                f"{self.classification!r} data requires a purpose or legal basis; "
                "set the request's purpose field",
            )
        return None

    def _registered_purpose(self) -> Denial | None:
        if not self.dept.data.registered_purpose:
            return None
        register, model = self.policy.register, self.req.model
        usable = register.purposes_for(self.dept.name, model)
        if not self.purpose:
            return Denial(
                "invalid_argument",
                "purpose.required",
                f"department {self.dept.name!r} requires a registered purpose on every request; "
                f"set purpose to one of: {_listing(usable)}",
            )
        purpose = (register.purposes or {}).get(self.purpose)
        if purpose is None:
            return Denial(
                "invalid_argument",
                "purpose.unregistered",
                f"purpose {_echo(self.purpose)} is not in the purpose register; "
                f"use one of: {_listing(usable)}",
            )
        if self.dept.name not in purpose.departments:
            return Denial(
                "permission_denied",
                "purpose.department_not_allowed",
                f"department {self.dept.name!r} may not process data for purpose {purpose.id!r}; "
                f"use one of: {_listing(usable)}",
            )
        if model not in purpose.models:
            return Denial(
                "permission_denied",
                "purpose.model_not_allowed",
                f"purpose {purpose.id!r} does not allow model {model!r}; "
                f"use one of: {_listing(purpose.models & self.dept.models)}",
            )
        if self.classification not in purpose.classifications:
            return Denial(
                "permission_denied",
                "purpose.classification_not_allowed",
                f"purpose {purpose.id!r} does not allow {self.classification!r} data; "
                f"allowed: {_listing(purpose.classifications)}",
            )
        return None

    def _pools(self) -> Denial | None:
        assert self.classification is not None  # set by _classification, which ran first
        cleared = self.dept.data.pools.get(self.classification, frozenset())
        served = self.policy.catalog.models[self.req.model]
        self.pools = tuple(pool for pool in served if pool in cleared)
        if self.pools:
            return None
        usable = [
            m for m in self.dept.models if cleared.intersection(self.policy.catalog.models[m])
        ]
        return Denial(
            "permission_denied",
            "pools.not_cleared",
            f"model {self.req.model!r} runs on no pool cleared for {self.classification!r} data; "
            f"use one of: {_listing(usable)}",
        )

    def _tokens(self) -> Denial | None:
        caps, req = self.dept.tokens, self.req
        if req.prompt_tokens > caps.max_prompt:
            return Denial(
                "invalid_argument",
                "tokens.max_prompt",
                f"the prompt has about {req.prompt_tokens} tokens, more than the {caps.max_prompt} "
                f"department {self.dept.name!r} allows; shorten it",
            )
        wanted = req.requested_max_tokens
        if wanted is None:
            self.max_output = caps.default_output
        elif wanted < 1:
            return Denial(
                "invalid_argument",
                "tokens.max_output.invalid",
                "max_tokens must be at least 1; raise it or leave it unset",
            )
        elif wanted <= caps.max_output:
            self.max_output = wanted
        elif caps.on_excess is OnExcess.CLAMP:
            self.max_output = caps.max_output
            self.rules.append("tokens.max_output.clamp")
        else:
            return Denial(
                "invalid_argument",
                "tokens.max_output.refuse",
                f"max_tokens {wanted} exceeds the {caps.max_output} department {self.dept.name!r} "
                "allows; lower it",
            )
        return None

    def _guard(self) -> Denial | None:
        guard, texts = self.dept.guard, self.req.texts
        for detector in guard.block:
            found = sum(detector.count(text) for text in texts)
            if found:
                self.detections[detector.name] = found
                return Denial(
                    "permission_denied",
                    f"guard.{detector.name}.block",
                    f"the prompt contains {found} match(es) of {detector.name!r}, which department "
                    f"{self.dept.name!r} may not send; remove them and retry",
                )
        redacted = list(texts)
        for detector in guard.redact:
            total = 0
            for index, text in enumerate(redacted):
                redacted[index], found = detector.redact(text)
                total += found
            if total:
                self.detections[detector.name] = total
                self.redactions[detector.name] = total
                self.rules.append(f"guard.{detector.name}.redact")
        if self.redactions:
            self.redacted = tuple(redacted)
        return None

    def _decision(self, denial: Denial | None) -> Decision:
        dept = self.dept
        return Decision(
            allowed=denial is None,
            department=dept.name,
            policy_version=self.policy.version,
            limits=dept.limits,
            denial=denial,
            rules_fired=tuple(self.rules),
            effective_model=self.req.model,
            classification=self.classification,
            purpose=self.purpose,
            max_output_tokens=self.max_output,
            priority=dept.priority,
            priority_class=dept.priority_class,
            allowed_pools=self.pools,
            detections=self.detections,
            redactions=self.redactions,
            redacted_texts=self.redacted,
            audit_content=dept.audit.content,
            audit_required=dept.audit.required,
            capture_content=dept.audit.capture_content_in_traces,
            model_digest=self.model_digest,
        )
