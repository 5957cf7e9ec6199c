"""Retention: prune each chain's expired prefix and expire kept text, under signed statements."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.chain import GENESIS, content_commitment, link_hash
from audit.checkpoint import sign_retention
from audit.ledger import Ledger
from audit.retention_rules import DAY_NS, Holds, RetentionRules

HOLD_KINDS = ("subject", "department")


def load_rules(policy_dir: str | Path, default_days: int | None = None) -> RetentionRules:
    """The retention of each registered purpose, from the policy directory's purpose register.

    `default_days` (records and text of an empty or unregistered purpose) must respect the
    register's floor; without it such records are never pruned.
    """
    from policy import PolicyError, load_directory

    try:
        policy = load_directory(policy_dir)
    except PolicyError as err:
        raise ValueError(f"--policy-dir {policy_dir}: {err}") from None
    register = policy.register
    if register.purposes is None:
        raise ValueError(
            f"--policy-dir {policy_dir}: no purposes.yaml; retention needs the purpose register"
        )
    if default_days is not None and default_days < register.retention_floor_days:
        raise ValueError(
            f"--default-retention-days {default_days}: below the register's floor of "
            f"{register.retention_floor_days} days (retention_floor_days)"
        )
    purposes = {
        p.id: (p.retention_records_days, p.retention_text_days) for p in register.purposes.values()
    }
    return RetentionRules(policy.version, purposes, default_days)


def active_holds(ledger: Ledger) -> Holds:
    holds = ledger.holds()
    return Holds(
        frozenset(h.value for h in holds if h.kind == "department"),
        frozenset(h.value for h in holds if h.kind == "subject"),
    )


@dataclass(slots=True)
class SourceRetention:
    """What one run did (or, dry, would do) to one source."""

    source: str
    pruned: int = 0
    first_index: int = 1
    cut: tuple[int, str] | None = None
    stopped: str = ""
    text_expired: int = 0
    text_range: tuple[int, int] | None = None
    refused: str = ""  # why this source was left alone (its chain does not verify)


def _fmt(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _last_cut(ledger: Ledger) -> dict[str, tuple[int, str]]:
    """Each source's newest cut, as this store signed it (first index - 1, hash there)."""
    cuts: dict[str, tuple[int, str]] = {}
    for cp in ledger.iter_retention_checkpoints():
        data = json.loads(cp.payload)
        if data.get("kind") == "prune":
            cuts[data["source"]] = (int(data["cut_index"]), str(data["cut_hash"]))
    return cuts


@dataclass(slots=True)
class _Prefix:
    cut: tuple[int, str] | None = None
    removed: int = 0
    latest_expiry_ns: int = 0
    last_time_ns: int = 0
    stopped: str = "end of chain"
    broken: str = ""


def _plan_prefix(
    rows: Iterator[tuple[Any, ...]],
    start: tuple[int, str],
    rules: RetentionRules,
    holds: Holds,
    as_of_ns: int,
) -> _Prefix:
    """The longest prefix whose every record expired and is not held; checks each link first.

    A cut is signed, so it must never cover a gap or an altered record: retention reads each
    record's time, purpose and department from its hashed body and stops at a broken link.
    """
    out = _Prefix()
    prev_index, prev_hash = start
    for index, record_id, body, prev, stored_hash, pseudonym in rows:
        if index != prev_index + 1 or prev != prev_hash or link_hash(prev, body) != stored_hash:
            out.broken = f"record {record_id} (chain index {index}) does not chain on"
            break
        data = json.loads(body)
        days = rules.days(str(data.get("purpose", "")))
        if days is None:
            out.stopped = f"chain index {index}: purpose {data.get('purpose')!r} has no retention"
            break
        expiry = int(data["time_ns"]) + days[0] * DAY_NS
        if expiry > as_of_ns:
            out.stopped = f"chain index {index}: kept until {_fmt(expiry)}"
            break
        if holds.held(str(data.get("department", "")), pseudonym):
            out.stopped = f"chain index {index}: legal hold"
            break
        out.cut = (index, stored_hash)
        out.removed += 1
        out.latest_expiry_ns = max(out.latest_expiry_ns, expiry)
        out.last_time_ns = int(data["time_ns"])
        prev_index, prev_hash = index, stored_hash
    return out


def _expiring_text(
    ledger: Ledger, source: str, rules: RetentionRules, holds: Holds, as_of_ns: int, after: int
) -> tuple[list[str], int, int, str]:
    """Record ids whose text expired, their index range, and why any was left (tampered)."""
    ids: list[str] = []
    lo = hi = 0
    note = ""
    with contextlib.closing(ledger.text_rows(source)) as rows:
        for index, record_id, body, pseudonym, salt, prompt, answer in rows:
            if index <= after:  # pruned with its record (a dry run has not deleted it yet)
                continue
            data = json.loads(body)
            days = rules.days(str(data.get("purpose", "")))
            if days is None or int(data["time_ns"]) + days[1] * DAY_NS > as_of_ns:
                continue
            if holds.held(str(data.get("department", "")), pseudonym):
                continue
            committed = data.get("content_commitment")
            if pseudonym is None or (
                committed is not None
                and content_commitment(bytes.fromhex(salt), prompt, answer) != committed
            ):
                note = f"text of record {record_id} differs from its commitment: kept; run verify"
                continue  # deleting it would hide the alteration
            ids.append(record_id)
            lo = index if not lo else min(lo, index)
            hi = max(hi, index)
    return ids, lo, hi, note


def retain(
    ledger: Ledger,
    rules: RetentionRules,
    key: Ed25519PrivateKey | None,
    as_of_ns: int,
    *,
    dry_run: bool = False,
) -> list[SourceRetention]:
    """Prune each source's expired prefix and expire kept text as of `as_of_ns`.

    Each change is stored with its signed statement in the same transaction. `as_of_ns` may
    lie in the future only for a dry run: the statement's time must not precede it.
    """
    now = time.time_ns()
    if as_of_ns > now and not dry_run:
        raise ValueError("--as-of lies in the future: it would prune records early; use --dry-run")
    if key is None and not dry_run:
        raise ValueError("retention needs the store's signing key (--keys-dir)")
    holds = active_holds(ledger)
    cuts = _last_cut(ledger)
    base = {"as_of_ns": as_of_ns, **rules.statement(), **holds.statement()}
    results = []
    for source in ledger.sources():
        res = SourceRetention(source)
        results.append(res)
        start = cuts.get(source, (0, GENESIS))
        res.first_index = start[0] + 1
        with contextlib.closing(ledger.chain_rows(source)) as rows:
            prefix = _plan_prefix(rows, start, rules, holds, as_of_ns)
        res.stopped = prefix.stopped
        if prefix.broken and prefix.cut is None:
            res.refused = prefix.broken + ": nothing pruned; run verify"
        elif prefix.broken:
            res.stopped = prefix.broken + "; run verify"
        if prefix.cut is not None:
            res.pruned, res.cut = prefix.removed, prefix.cut
            statement = {
                **base,
                "kind": "prune",
                "source": source,
                "first_index": res.first_index,
                "cut_index": prefix.cut[0],
                "cut_hash": prefix.cut[1],
                "removed": prefix.removed,
                "cut_time_ns": prefix.last_time_ns,
                "latest_expiry_ns": prefix.latest_expiry_ns,
            }
            if not dry_run:
                assert key is not None
                cp = sign_retention(key, statement, time.time_ns())
                ledger.prune_prefix(source, prefix.cut[0], cp)
        ids, lo, hi, note = _expiring_text(
            ledger, source, rules, holds, as_of_ns, prefix.cut[0] if prefix.cut else 0
        )
        if note:
            res.refused = note
        if ids:
            res.text_expired, res.text_range = len(ids), (lo, hi)
            statement = {
                **base,
                "kind": "text",
                "source": source,
                "first_index": lo,
                "last_index": hi,
                "expired": len(ids),
            }
            if not dry_run:
                assert key is not None
                ledger.expire_text(ids, sign_retention(key, statement, time.time_ns()))
    return results


def describe(results: list[SourceRetention], dry_run: bool) -> list[str]:
    """One line per source for the operator."""
    verb = "would prune" if dry_run else "pruned"
    lines = []
    for r in results:
        text = f"source {r.source}: {verb} {r.pruned:,} record(s)"
        if r.cut is not None:
            text += f" (chain index {r.first_index}..{r.cut[0]})"
        text += f"; stopped at {r.stopped}"
        if r.text_expired:
            assert r.text_range is not None
            text += (
                f"; text of {r.text_expired:,} record(s) expired "
                f"(chain index {r.text_range[0]}..{r.text_range[1]})"
            )
        if r.refused:
            text += f"; WARNING {r.refused}"
        lines.append(text)
    return lines
