"""One chain verified in one streaming pass: links, columns, side tables and signed heads."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from audit.chain import GENESIS, Link, content_commitment, link_hash, subject_commitment
from audit.ledger import DENORMALISED, Ledger
from audit.retention_rules import TextExpiry, text_expired

# How many records either side of a broken link are looked at to say what happened there
# (reordered, inserted, deleted). The break itself is always found; only its naming is local.
WINDOW = 1024
PROGRESS_EVERY = 4096


@dataclass(frozen=True, slots=True)
class Problem:
    """One verification failure; `record_id`/`sequence` name the record where it shows."""

    kind: str  # altered | deleted | reordered | inserted | truncated | checkpoint | stale
    source: str
    record_id: str
    sequence: int | None
    message: str


@dataclass(slots=True)
class ChainPlan:
    """What one chain is checked against, built from the checkpoints before the scan.

    `signed` maps a chain index to the (hash, checkpoint created_ns) first signed for it;
    `conflicts` holds any other hash signed for an index (one of them must then mismatch).
    `start` is where the scan begins: None is genesis. It is the single place where a chain may
    start later than its first record (incremental runs start at an already verified head).
    `cut` is the newest signed pruning cut (chain index, hash): the records up to it were removed
    by retention, so the chain starts after it, at a record that must link to that hash.
    `text_expiries` are the signed statements that account for text removed by retention.
    """

    source: str
    signed: dict[int, tuple[str, int]] = field(default_factory=dict)
    conflicts: list[tuple[int, str, int]] = field(default_factory=list)
    start: tuple[int, str] | None = None
    cut: tuple[int, str] | None = None
    text_expiries: list[TextExpiry] = field(default_factory=list)

    def pruned_start(self) -> bool:
        """Whether the scan starts after a pruning cut rather than at a kept record."""
        return self.cut is not None and (self.start is None or self.cut[0] >= self.start[0])

    def max_signed(self) -> tuple[int, int] | None:
        """(highest signed chain index, created_ns of a checkpoint that signed it)."""
        if not self.signed:
            return None
        index = max(self.signed)
        return index, self.signed[index][1]


@dataclass(slots=True)
class ChainOutcome:
    source: str
    records: int = 0
    last: tuple[int, str] | None = None  # the last verified link: (chain index, hash)
    problems: list[Problem] = field(default_factory=list)


def _seq(body: str) -> int | None:
    try:
        value = json.loads(body).get("sequence")
    except (ValueError, TypeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _name(link: Link) -> str:
    return f"record {link.record_id} (sequence {_seq(link.body)}, chain index {link.chain_index})"


def _problem(kind: str, link: Link, why: str) -> Problem:
    return Problem(kind, link.source, link.record_id, _seq(link.body), f"{_name(link)}{why}")


def _break(links: list[Link], i: int, expected: int) -> tuple[str, Link, str]:
    """Classify a broken link at position i: (kind, record to name, explanation)."""
    link = links[i]
    by_hash = {x.hash: n for n, x in enumerate(links)}
    linked_to = {x.prev_hash for x in links}
    j = by_hash.get(link.prev_hash)
    if j is not None and j > i:
        return "reordered", link, f"it is placed before its predecessor {links[j].record_id}"
    if j is not None and j < i:
        # Either rows j+1..i-1 were slipped in, or this row was: a genuine row is linked to.
        if link.hash in linked_to:
            return "inserted", links[j + 1], f"it was inserted after {links[j].record_id}"
        return "inserted", link, f"it links to {links[j].record_id}, not to the record before it"
    if link.chain_index > expected:
        return "deleted", link, f"the record(s) at chain index {expected}..{link.chain_index - 1} "
    return "inserted", link, "it does not link to the record before it (forged or relinked)"


def _columns(link: Link, data: dict[str, Any], row: tuple[Any, ...]) -> str | None:
    """Why a row's queryable columns disagree with its hashed body, or None."""
    if data.get("record_id") != link.record_id or data.get("chain_index") != link.chain_index:
        return "its record_id or chain index column differs from its hashed content"
    for col, value in zip(DENORMALISED, row[5:15], strict=True):
        if data.get(col) != value:
            return f"column {col!r} differs from its hashed content"
    return None


def _side_tables(data: dict[str, Any], row: tuple[Any, ...]) -> tuple[str, str] | None:
    """(kind, why) when the subject link or content text disagree with the hashed body."""
    pseudonym, salt_hex, content_id, prompt, answer = row[15:20]
    salt = b""
    if pseudonym is not None:
        try:
            salt = bytes.fromhex(salt_hex)
        except (TypeError, ValueError):
            return "altered", "its subject link has a malformed salt"
        if subject_commitment(salt, pseudonym) != data.get("subject_commitment"):
            return "altered", "its subject link differs from the subject committed in its hash"
    captured = bool(data.get("prompt_text_captured")) or bool(data.get("answer_text_captured"))
    if content_id is None:
        if captured and pseudonym is not None:  # erasure removes link and text together
            return "deleted", "its text was deleted but its subject was not erased"
        return None
    if not captured:
        return "inserted", "text is attached, but its hashed content says none was captured"
    if pseudonym is None:
        return "inserted", "text is attached, but its subject link (and salt) were erased"
    flags = (prompt is not None, answer is not None)
    if flags != (bool(data.get("prompt_text_captured")), bool(data.get("answer_text_captured"))):
        return "altered", "its text differs from what its hashed content says was captured"
    committed = data.get("content_commitment")
    if committed is not None and content_commitment(salt, prompt, answer) != committed:
        return "altered", "its text differs from the text committed in its hash"
    return None


def _mismatch(link: Link, signed: tuple[tuple[str, int], ...]) -> Problem | None:
    """A problem when a checkpoint signed another hash for this link's index."""
    for signed_hash, created in signed:
        if signed_hash != link.hash:
            why = f" differs from the head signed in checkpoint {created}: the chain was rewritten"
            return _problem("checkpoint", link, why)
    return None


def _recomputed(link: Link) -> str | None:
    """The link's hash recomputed, or None when its stored fields are not even well-formed."""
    try:
        return link_hash(link.prev_hash, link.body)
    except (ValueError, TypeError, AttributeError):
        return None


def _body(link: Link) -> dict[str, Any] | None:
    try:
        data = json.loads(link.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _record_problem(
    link: Link,
    row: tuple[Any, ...],
    plan: ChainPlan,
    extra: dict[int, tuple[tuple[str, int], ...]],
) -> Problem | None:
    """What is wrong with a well-linked record: its body, columns, side tables, signed head."""
    data = _body(link)
    if data is None:
        return _problem("altered", link, ": its hashed content is not a record")
    why_col = _columns(link, data, row)
    if why_col is not None:
        return _problem("altered", link, f": {why_col}")
    side = _side_tables(data, row)
    if (
        side is not None
        and side[0] == "deleted"
        and text_expired(plan.text_expiries, link.chain_index, data, row[15])
    ):
        side = None  # expired by retention under a signed statement that covers this record
    if side is not None:
        return _problem(side[0], link, f": {side[1]}")
    signed = plan.signed.get(link.chain_index)
    if signed is not None:
        return _mismatch(link, (signed, *extra.get(link.chain_index, ())))
    return None


def check_chain(
    ledger: Ledger, plan: ChainPlan, on_records: Callable[[int], None] | None = None
) -> ChainOutcome:
    """Verify one source's chain in one pass; stops at the chain's first problem."""
    if plan.pruned_start():
        assert plan.cut is not None
        scan = ledger.scan(plan.source, plan.cut[0] + 1)
    else:
        scan = ledger.scan(plan.source, plan.start[0] if plan.start else 0)
    with contextlib.closing(scan):  # a chain that breaks early must not leave its cursor open
        return _check_rows(plan, scan, on_records)


def _check_rows(
    plan: ChainPlan, rows: Iterator[tuple[Any, ...]], on_records: Callable[[int], None] | None
) -> ChainOutcome:
    out = ChainOutcome(plan.source)
    prev, expected = GENESIS, 1
    if plan.pruned_start():
        assert plan.cut is not None
        prev, expected = plan.cut[1], plan.cut[0] + 1
        out.last = plan.cut
    elif plan.start is not None:
        first = next(rows, None)
        if first is None or (first[0], first[4]) != plan.start:
            at = "no record" if first is None else f"record {first[1]}"
            out.problems.append(
                Problem(
                    "checkpoint", plan.source, "" if first is None else first[1], None,
                    f"source {plan.source}: chain index {plan.start[0]} holds {at}, not the head "
                    "verified by the last run (state file): the chain was rewritten or "
                    "truncated since; run a full verify",
                )
            )  # fmt: skip
            return out
        prev, expected = plan.start[1], plan.start[0] + 1
        out.last = plan.start
    recent: collections.deque[Link] = collections.deque(maxlen=WINDOW)
    extra: dict[int, tuple[tuple[str, int], ...]] = {}
    for index, other_hash, created in plan.conflicts:
        extra[index] = (*extra.get(index, ()), (other_hash, created))
    for row in rows:
        link = Link(plan.source, row[0], row[1], row[2], row[3], row[4])
        out.records += 1
        if on_records is not None and out.records % PROGRESS_EVERY == 0:
            on_records(PROGRESS_EVERY)
        # Order matters: a moved record has an intact body but its position column changed,
        # which is a reorder, not an alteration; so links are checked before columns.
        if _recomputed(link) != link.hash:
            out.problems.append(
                _problem("altered", link, ": its hashed content or hash was changed")
            )
            break
        if link.prev_hash != prev:
            window = [
                *recent,
                link,
                *(Link(plan.source, *r[:5]) for r in itertools.islice(rows, WINDOW)),
            ]
            kind, named, why = _break(window, len(recent), expected)
            if kind == "deleted":
                msg = f"{why}were deleted before {_name(named)}"
                out.problems.append(
                    Problem(kind, plan.source, named.record_id, _seq(named.body), msg)
                )
            else:
                out.problems.append(_problem(kind, named, f" {kind}: {why}"))
            break
        bad = _record_problem(link, row, plan, extra)
        if bad is not None:
            out.problems.append(bad)
            break
        recent.append(link)
        prev, expected = link.hash, link.chain_index + 1
        out.last = (link.chain_index, link.hash)
    if on_records is not None:
        on_records(out.records % PROGRESS_EVERY)
    if not out.problems:
        _check_end(plan, out, recent[-1] if recent else None)
    return out


def _check_end(plan: ChainPlan, out: ChainOutcome, last: Link | None) -> None:
    """A chain that ends before a head a checkpoint signed was truncated."""
    end = out.last[0] if out.last else 0
    top = plan.max_signed()
    if top is not None and top[0] > end:
        where = _name(last) if last else "no record"
        out.problems.append(
            Problem(
                "truncated", plan.source, last.record_id if last else "",
                _seq(last.body) if last else None,
                f"source {plan.source}: chain ends at {where}, but checkpoint {top[1]} "
                f"signed chain index {top[0]}: the tail was deleted",
            )
        )  # fmt: skip
