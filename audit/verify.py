"""Verification: names the first altered, deleted, reordered or inserted record of each chain.

Linear and bounded: checkpoints are read once into the heads they sign (per source, by chain
index), then each chain is streamed once and checked against them as the scan reaches each
index. Memory holds the distinct signed heads and a window of recent links, never a chain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain_check import ChainOutcome, ChainPlan, Problem, check_chain
from audit.checkpoint import Checkpoint, raw_public_key
from audit.ledger import Ledger
from audit.retention_check import collect_retention

__all__ = ["DEFAULT_MAX_CHECKPOINT_AGE_S", "Problem", "VerifyResult", "verify"]

# A store signs changed heads every minute and unchanged ones at least hourly; a day without a
# checkpoint means the store stopped, or someone removed what it signed since.
DEFAULT_MAX_CHECKPOINT_AGE_S = 86_400.0
_NS = 1_000_000_000


@dataclass(slots=True)
class VerifyResult:
    records: int = 0
    sources: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    newest: Checkpoint | None = None  # newest checkpoint with a valid signature by the pinned key
    uncovered: int = 0  # records after the newest checkpoint's heads (appended since it)
    incremental_from: int | None = None  # created_ns of the checkpoint an incremental run began at
    retention: list[str] = field(default_factory=list)  # what signed retention statements removed
    signatures: int = 0  # checkpoint signatures checked (one per run of linked checkpoints)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _Plans:
    """The per-source plans and what the checkpoint pass found."""

    by_source: dict[str, ChainPlan] = field(default_factory=dict)
    last_created: int | None = None

    def plan(self, source: str) -> ChainPlan:
        p = self.by_source.get(source)
        if p is None:
            p = self.by_source[source] = ChainPlan(source)
        return p


def _cp_problem(cp: Checkpoint, why: str) -> Problem:
    return Problem("checkpoint", "", "", None, f"checkpoint {cp.created_ns}: {why}")


_Heads = dict[str, tuple[int, str]]
# A run is checked (its last signature) at the latest after this many checkpoints, so that memory
# stays bounded on a history that coarsening never thinned: ~4 MB held, one signature per 1,024.
MAX_RUN = 1024


def _parse(cp: Checkpoint) -> tuple[_Heads, object] | str:
    """The heads a checkpoint signs and its `prev` link, or what is wrong with its payload."""
    try:
        payload = json.loads(cp.payload)
        heads = {s: (int(h["chain_index"]), str(h["hash"])) for s, h in payload["heads"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return "malformed payload"
    if payload.get("created_ns") != cp.created_ns:
        return "its time differs from the signed time"
    return heads, payload.get("prev")


def _check_one(
    cp: Checkpoint,
    plans: _Plans,
    key: Ed25519PublicKey | None,
    key_hex: str,
    result: VerifyResult,
) -> None:
    """Check one checkpoint's own signature and record the heads it signs (no chain is read)."""
    if key is not None and cp.public_key != key_hex:
        result.problems.append(_cp_problem(cp, "signed by another key"))
        return
    if key is not None and not _signature_valid(cp, key, result):
        result.problems.append(_cp_problem(cp, "bad signature"))
        return
    parsed = _parse(cp)
    if isinstance(parsed, str):
        result.problems.append(_cp_problem(cp, parsed))
        return
    _record(cp, parsed[0], plans, key, result)


def _signature_valid(cp: Checkpoint, key: Ed25519PublicKey, result: VerifyResult) -> bool:
    result.signatures += 1
    return cp.signature_valid(key)


def _record(
    cp: Checkpoint, heads: _Heads, plans: _Plans, key: Ed25519PublicKey | None, result: VerifyResult
) -> None:
    """Record the heads of a checkpoint whose signature holds (or of any, without a key)."""
    if key is not None and (result.newest is None or cp.created_ns > result.newest.created_ns):
        result.newest = cp
    for source, (index, head_hash) in heads.items():
        plan = plans.plan(source)
        if plan.cut is not None and index <= plan.cut[0]:  # pruned: nothing left to compare
            if index == plan.cut[0] and head_hash != plan.cut[1]:
                result.problems.append(
                    _cp_problem(cp, f"signs another hash for {source}'s pruning cut at {index}")
                )
            continue
        if plan.start is not None and index < plan.start[0]:
            result.problems.append(
                _cp_problem(
                    cp, f"signs chain index {index} of {source}, behind the head "
                    "verified by the last run: the chain was rewritten; run a full verify",
                )
            )  # fmt: skip
            continue
        first = plan.signed.setdefault(index, (head_hash, cp.created_ns))
        if first[0] != head_hash:
            plan.conflicts.append((index, head_hash, cp.created_ns))


@dataclass(slots=True)
class _Runs:
    """Checks the signatures of checkpoints linked by `prev` with one check per run of links.

    A checkpoint's signed `prev` is the hash of the checkpoint before it (payload and
    signature), so a valid signature on the last of an unbroken run proves every checkpoint in
    it. A run ends where a link does not match (an edited, inserted or removed
    checkpoint, coarsening, one signed before links existed): the checkpoint before the break is
    then checked on its own signature. Anything irregular, and every member of a run whose last
    signature fails, is checked alone, so each bad checkpoint is still named. With
    `all_signatures` every checkpoint is checked alone (the cost the links save: ~0.1 ms each).
    """

    plans: _Plans
    key: Ed25519PublicKey | None
    key_hex: str
    result: VerifyResult
    all_signatures: bool = False
    run: list[tuple[Checkpoint, _Heads]] = field(default_factory=list)
    run_link: str = ""

    def add(self, cp: Checkpoint) -> None:
        self.result.checkpoints += 1
        linkable = self.key is not None and not self.all_signatures
        parsed = _parse(cp) if linkable and cp.public_key == self.key_hex else ""
        if isinstance(parsed, str):  # no key to check, or something to report: one by one
            self.settle()
            _check_one(cp, self.plans, self.key, self.key_hex, self.result)
            return
        heads, prev = parsed
        if self.run and prev != self.run_link:
            self.settle()
        self.run.append((cp, heads))
        self.run_link = cp.link
        if len(self.run) >= MAX_RUN:
            self.settle()  # the next one still links here and starts a run of its own

    def settle(self) -> None:
        """Check the run's last signature; record the run, or check each member alone."""
        run, self.run = self.run, []
        if not run:
            return
        assert self.key is not None
        if _signature_valid(run[-1][0], self.key, self.result):
            for cp, heads in run:
                _record(cp, heads, self.plans, self.key, self.result)
            return
        for cp, _ in run:
            _check_one(cp, self.plans, self.key, self.key_hex, self.result)


def _collect(
    ledger: Ledger,
    witness: Iterable[Checkpoint],
    key: Ed25519PublicKey | None,
    plans: _Plans,
    result: VerifyResult,
    after_ns: int | None,
    all_signatures: bool,
) -> None:
    seen: set[str] = set()
    key_hex = raw_public_key(key).hex() if key is not None else ""
    runs = _Runs(plans, key, key_hex, result, all_signatures)
    for _, cp in ledger.iter_checkpoints(after_ns):
        if plans.last_created is not None and cp.created_ns < plans.last_created:
            result.problems.append(_cp_problem(cp, "stored after a newer checkpoint (reordered)"))
        plans.last_created = max(cp.created_ns, plans.last_created or cp.created_ns)
        seen.add(cp.signature)
        runs.add(cp)
    runs.settle()
    for cp in witness:
        if after_ns is not None and cp.created_ns <= after_ns:
            continue
        if cp.signature in seen:
            result.checkpoints += 1  # the same signed statement: already checked
            continue
        runs.add(cp)
    runs.settle()


def _freshness(result: VerifyResult, max_age_s: float | None, now_ns: int) -> None:
    if max_age_s is None or result.sources == 0:  # an empty ledger has nothing to cover
        return
    limit = f"--max-checkpoint-age {max_age_s:g}s"
    if result.newest is None:
        result.problems.append(
            Problem(
                "stale", "", "", None,
                "no checkpoint signed by the pinned key covers the ledger: nothing shows that "
                "records were not deleted or rewritten (deleting checkpoints with a truncated "
                f"tail looks like this). Sign one (`llm-audit checkpoint`), or pass {limit} "
                "larger only for a copy known to be old",
            )
        )  # fmt: skip
        return
    age_s = (now_ns - result.newest.created_ns) / _NS
    if age_s > max_age_s:
        result.problems.append(
            Problem(
                "stale", "", "", None,
                f"the newest checkpoint signed by the pinned key is {age_s / 3600:.1f} h old, "
                f"older than {limit}: the store stopped signing, or later records and their "
                "checkpoints were deleted; check the store, or verify against a witness file",
            )
        )  # fmt: skip


def _uncovered(result: VerifyResult, outcomes: Sequence[ChainOutcome]) -> None:
    signed = result.newest.heads() if result.newest else {}
    for o in outcomes:
        end = o.last[0] if o.last else 0
        head = signed.get(o.source)
        result.uncovered += max(0, end - (head.chain_index if head else 0))


def verify(
    ledger: Ledger,
    public_key: Ed25519PublicKey | None = None,
    witness: Iterable[Checkpoint] = (),
    *,
    max_checkpoint_age_s: float | None = DEFAULT_MAX_CHECKPOINT_AGE_S,
    start: Checkpoint | None = None,
    run_chains: Callable[[list[ChainPlan]], list[ChainOutcome]] | None = None,
    on_records: Callable[[int], None] | None = None,
    now_ns: int | None = None,
    all_signatures: bool = False,
) -> VerifyResult:
    """Recompute every chain and check it against every checkpoint (the ledger's and a witness's).

    Without `public_key` the signatures are not checked (the key in the ledger proves nothing
    to someone who could rewrite it) and neither is freshness; the signed heads are still
    compared with the chains. With it, the newest valid checkpoint must be younger than
    `max_checkpoint_age_s` (None: not checked). `start` (a checkpoint verified by an earlier
    run) makes the run incremental: each chain is read only after that checkpoint's head.
    `run_chains` runs the per-chain checks elsewhere (parallel processes); by default here.
    Checkpoints linked by `prev` need one signature check per unbroken run (see `_Runs`);
    `all_signatures` checks each one's own signature as well.
    """
    result = VerifyResult()
    plans = _Plans()
    after_ns = None
    if start is not None:
        after_ns = result.incremental_from = start.created_ns
        result.newest = start
        for source, head in start.heads().items():
            plans.plan(source).start = (head.chain_index, head.hash)
    found = collect_retention(
        ledger.iter_retention_checkpoints(),
        public_key,
        raw_public_key(public_key).hex() if public_key is not None else "",
        plans.plan,
    )
    result.problems.extend(found.problems)
    result.retention = found.prunings
    _collect(ledger, witness, public_key, plans, result, after_ns, all_signatures)
    sources = sorted(set(ledger.sources()) | set(plans.by_source))
    todo = [plans.plan(s) for s in sources]
    if run_chains is None:
        outcomes = [check_chain(ledger, p, on_records) for p in todo]
    else:
        outcomes = run_chains(todo)
    chain_problems = [p for o in outcomes for p in o.problems]
    result.problems[:0] = chain_problems  # a chain's own problem names the record: list it first
    result.sources = len(sources)
    result.records = sum(o.records for o in outcomes)
    if start is None:
        for table, record_id in ledger.orphan_side_rows():
            result.problems.append(
                Problem(
                    "inserted", "", record_id, None,
                    f"{table} row for record {record_id}, which is not in the ledger",
                )
            )  # fmt: skip
    if public_key is not None:  # without a pinned key no checkpoint counts as covering
        _uncovered(result, outcomes)
        _freshness(result, max_checkpoint_age_s, time.time_ns() if now_ns is None else now_ns)
    return result


def load_state(path: Path, key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint a previous run verified, re-checked against the pinned key."""
    try:
        cp = Checkpoint.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a verify state file ({err}); run a full verify") from err
    if cp.public_key != raw_public_key(key).hex() or not cp.signature_valid(key):
        raise ValueError(f"{path}: not signed by the pinned key; run a full verify")
    return cp


def save_state(path: Path, cp: Checkpoint) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(cp.to_json() + "\n")
    tmp.replace(path)
