"""Verify's view of retention: signed cuts where chains start, and the text they let go missing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain_check import ChainPlan, Problem
from audit.checkpoint import Checkpoint
from audit.retention_rules import RetentionRules, TextExpiry


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(slots=True)
class RetentionFindings:
    """What the retention statements say, for the report, and what is wrong with them."""

    prunings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _problem(cp: Checkpoint, why: str, source: str = "") -> Problem:
    return Problem("checkpoint", source, "", None, f"retention checkpoint {cp.created_ns}: {why}")


def _statement(
    cp: Checkpoint, key: Ed25519PublicKey | None, key_hex: str
) -> tuple[dict[str, Any], RetentionRules] | str:
    """The checked statement and its rules, or why it cannot be relied on."""
    if key is not None and cp.public_key != key_hex:
        return "signed by another key"
    if key is not None and not cp.signature_valid(key):
        return "bad signature"
    try:
        data = json.loads(cp.payload)
        rules = RetentionRules.from_statement(data)
        as_of = int(data["as_of_ns"])
        kind, source = data["kind"], str(data["source"])
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return "malformed payload"
    if data.get("created_ns") != cp.created_ns:
        return "its time differs from the signed time"
    if kind not in ("prune", "text") or not source:
        return "malformed payload"
    if as_of > cp.created_ns:
        return (
            f"source {source}: retention was evaluated as of {_when(as_of)}, after the "
            "statement was signed: records or text were removed before their retention ended"
        )
    return data, rules


def _prune(
    cp: Checkpoint, data: dict[str, Any], rules: RetentionRules, plan: ChainPlan
) -> str | None:
    """Chain the cut onto the source's previous one; None when it holds, else why not."""
    try:
        first, cut = int(data["first_index"]), int(data["cut_index"])
        cut_hash, removed = str(data["cut_hash"]), int(data["removed"])
        latest = int(data["latest_expiry_ns"])
    except (KeyError, TypeError, ValueError):
        return "malformed payload"
    expected = plan.cut[0] + 1 if plan.cut else 1
    if first != expected:
        return (
            f"it prunes from chain index {first}, but the previous cut of {plan.source} ends at "
            f"{expected - 1}: a retention checkpoint was deleted"
        )
    if cut < first or removed != cut - first + 1:
        return f"it says {removed} record(s) were removed from {first} to {cut}"
    if latest > int(data["as_of_ns"]):
        return "it removed a record whose retention had not passed when it was evaluated"
    plan.cut = (cut, cut_hash)
    return None


def collect_retention(
    checkpoints: Iterable[Checkpoint],
    key: Ed25519PublicKey | None,
    key_hex: str,
    plan_of: Callable[[str], ChainPlan],
) -> RetentionFindings:
    """Read the retention statements into the plans: each source's cut and text expiries."""
    found = RetentionFindings()
    counted: dict[str, list[str]] = {}
    for cp in checkpoints:
        checked = _statement(cp, key, key_hex)
        if isinstance(checked, str):
            found.problems.append(_problem(cp, checked))
            continue
        data, rules = checked
        plan = plan_of(str(data["source"]))
        when = f"on {_when(cp.created_ns)} (as of {_when(int(data['as_of_ns']))})"
        under = f"under register {rules.register_version[:12]}"
        if data["kind"] == "prune":
            why = _prune(cp, data, rules, plan)
            if why is not None:
                found.problems.append(_problem(cp, why, plan.source))
                continue
            counted.setdefault(plan.source, []).append(
                f"source {plan.source}: {int(data['removed']):,} records pruned up to chain "
                f"index {data['cut_index']} {when} {under}"
            )
            continue
        try:
            expiry = TextExpiry(
                int(data["first_index"]),
                int(data["last_index"]),
                int(data["as_of_ns"]),
                rules,
                frozenset(str(d) for d in data["held_departments"]),
                frozenset(str(s) for s in data["held_subjects"]),
            )
        except (KeyError, TypeError, ValueError):
            found.problems.append(_problem(cp, "malformed payload", plan.source))
            continue
        plan.text_expiries.append(expiry)
        counted.setdefault(plan.source, []).append(
            f"source {plan.source}: text of {int(data['expired']):,} records expired (chain "
            f"index {expiry.first}..{expiry.last}) {when} {under}"
        )
    found.prunings = [line for source in sorted(counted) for line in counted[source]]
    return found
