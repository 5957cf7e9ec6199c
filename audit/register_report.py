"""`llm-audit register-report`: the governance board's view of a period, per model and purpose."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from audit.ledger import Ledger, QueryFilter, UsageRow
from policy.register import ModelEntry, Purpose, Register

_NS = 1_000_000_000
# Records scanned for the builds (digests) that answered; totals come from exact aggregates.
_DIGEST_SCAN_LIMIT = 10_000_000
CSV_COLUMNS = (
    "model",
    "model_status",
    "purpose",
    "legal_basis_art6",
    "legal_basis_art9",
    "retention_records_days",
    "retention_text_days",
    "department",
    "requests",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass
class Usage:
    """Requests and tokens, with the departments they came from."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    departments: set[str] = field(default_factory=set)

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.departments.add(row.department)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class RegisterReport:
    """The period's usage joined with the registers in force when the report is made."""

    since_ns: int
    until_ns: int
    register: Register
    rows: tuple[UsageRow, ...]
    builds: Mapping[str, Counter[str]]  # model -> digest -> answered requests

    def by(self, key: str) -> dict[str, Usage]:
        totals: dict[str, Usage] = defaultdict(Usage)
        for row in self.rows:
            totals[getattr(row, key)].add(row)
        return dict(sorted(totals.items()))

    def total(self) -> Usage:
        usage = Usage()
        for row in self.rows:
            usage.add(row)
        return usage

    def mismatched(self, model: str) -> dict[str, int]:
        """Builds that answered `model` in the period but are not the registered one now."""
        entry = self.register.model(model)
        seen = self.builds.get(model, Counter())
        if entry is None:
            return {}
        return {d: n for d, n in sorted(seen.items()) if d and d != entry.weights_digest}


def build_report(
    ledger: Ledger, register: Register, since_ns: int, until_ns: int
) -> RegisterReport:
    """Aggregate [since, until) of the ledger against `register`."""
    flt = QueryFilter(since_ns=since_ns, until_ns=until_ns)
    rows = tuple(ledger.usage(flt))
    builds: dict[str, Counter[str]] = defaultdict(Counter)
    for record in ledger.query(flt, _DIGEST_SCAN_LIMIT):
        if record["outcome"] == "ok":
            builds[record["model"]][record.get("model_digest") or ""] += 1
    return RegisterReport(since_ns, until_ns, register, rows, dict(builds))


def render_markdown(report: RegisterReport) -> str:
    """The report as Markdown: totals, models, purposes, and usage by model, purpose, department."""
    out = io.StringIO()
    total = report.total()
    out.write(f"# Model and purpose register report, {_day(report.since_ns)} to ")
    out.write(f"{_day(report.until_ns)} (exclusive)\n\n")
    out.write(
        f"Requests: {total.requests}; prompt tokens: {total.prompt_tokens}; completion tokens: "
        f"{total.completion_tokens}; departments: {_names(total.departments)}.\n\n"
    )
    models = report.register.models or {}
    by_model = report.by("model")
    out.write("## Models\n\n")
    out.write(
        "| model | status | provider, licence, version | AI Act category / role | approval "
        "| registered build | departments | requests | tokens | other builds seen |\n"
    )
    out.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for name in sorted(set(models) | set(by_model)):
        out.write(_model_line(name, models.get(name), by_model.get(name, Usage()), report))
    purposes = report.register.purposes or {}
    by_purpose = report.by("purpose")
    out.write("\n## Purposes\n\n")
    out.write(
        "| purpose | legal basis (GDPR Art. 6 / Art. 9) | retention (records / text, days) "
        "| departments allowed | departments using | requests | tokens |\n"
    )
    out.write("|---|---|---|---|---|---|---|\n")
    for name in sorted(set(purposes) | set(by_purpose)):
        out.write(_purpose_line(name, purposes.get(name), by_purpose.get(name, Usage())))
    out.write("\n## Usage by model, purpose and department\n\n")
    out.write("| model | purpose | department | requests | prompt tokens | completion tokens |\n")
    out.write("|---|---|---|---|---|---|\n")
    for key, usage in _by_triple(report.rows).items():
        model, purpose, department = key
        out.write(
            f"| {model or '-'} | {purpose or '(none)'} | {department or '-'} | {usage.requests} "
            f"| {usage.prompt_tokens} | {usage.completion_tokens} |\n"
        )
    return out.getvalue()


def render_csv(report: RegisterReport) -> str:
    """One row per (model, purpose, department) with the register facts that govern it."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    register = report.register
    for (model, purpose_id, department), usage in _by_triple(report.rows).items():
        entry = register.model(model)
        purpose = (register.purposes or {}).get(purpose_id)
        writer.writerow(
            [
                model,
                entry.status.value if entry else "unregistered",
                purpose_id,
                purpose.legal_basis.article_6 if purpose else "",
                (purpose.legal_basis.article_9 or "") if purpose else "",
                purpose.retention_records_days if purpose else "",
                purpose.retention_text_days if purpose else "",
                department,
                usage.requests,
                usage.prompt_tokens,
                usage.completion_tokens,
            ]
        )
    return buf.getvalue()


def _by_triple(rows: Iterable[UsageRow]) -> dict[tuple[str, str, str], Usage]:
    totals: dict[tuple[str, str, str], Usage] = defaultdict(Usage)
    for row in rows:
        totals[(row.model, row.purpose, row.department)].add(row)
    return dict(sorted(totals.items()))


def _model_line(name: str, entry: ModelEntry | None, usage: Usage, report: RegisterReport) -> str:
    other = report.mismatched(name)
    seen = "; ".join(f"{_short(d)} ({n} answers)" for d, n in other.items()) or "none"
    if entry is None:
        return (
            f"| {name or '-'} | not registered | | | | | {_names(usage.departments)} "
            f"| {usage.requests} | {usage.tokens} | {seen} |\n"
        )
    approval = entry.approval
    return (
        f"| {name} ({entry.display_name}) | {entry.status.value} | {entry.provider}, "
        f"{entry.licence}, {entry.version} | {entry.ai_act_category} / {entry.deployer_role} "
        f"| {approval.by}, {approval.date}, {approval.assessment} | {_short(entry.weights_digest)} "
        f"| {_names(usage.departments)} | {usage.requests} | {usage.tokens} | {seen} |\n"
    )


def _purpose_line(name: str, purpose: Purpose | None, usage: Usage) -> str:
    if purpose is None:
        return (
            f"| {name or '(none)'} | not registered | | | {_names(usage.departments)} "
            f"| {usage.requests} | {usage.tokens} |\n"
        )
    basis = purpose.legal_basis
    legal = basis.article_6 + (f" / {basis.article_9}" if basis.article_9 else "")
    if basis.reference:
        legal += f" ({basis.reference})"
    return (
        f"| {name} | {legal} | {purpose.retention_records_days} / {purpose.retention_text_days} "
        f"| {_names(purpose.departments)} | {_names(usage.departments)} | {usage.requests} "
        f"| {usage.tokens} |\n"
    )


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(n or "-" for n in names)) or "none"


def _short(digest: str) -> str:
    return digest[:19] if digest else "none"


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns / _NS, UTC).isoformat(timespec="seconds")
