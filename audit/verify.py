"""Verification: names the first altered, deleted, reordered or inserted record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain import GENESIS, Link, link_hash
from audit.checkpoint import Checkpoint, raw_public_key
from audit.ledger import DENORMALISED, Ledger


@dataclass(frozen=True, slots=True)
class Problem:
    """One verification failure; `record_id`/`sequence` name the record where it shows."""

    kind: str  # altered | deleted | reordered | inserted | truncated | checkpoint
    source: str
    record_id: str
    sequence: int | None
    message: str


@dataclass(slots=True)
class VerifyResult:
    records: int = 0
    sources: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _seq(link: Link) -> int | None:
    try:
        value = json.loads(link.body).get("sequence")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _name(link: Link) -> str:
    return f"record {link.record_id} (sequence {_seq(link)}, chain index {link.chain_index})"


def _columns_altered(ledger: Ledger, link: Link) -> str | None:
    """Why a link's columns disagree with its hashed body, or None."""
    body = json.loads(link.body)
    if body.get("record_id") != link.record_id or body.get("chain_index") != link.chain_index:
        return "its record_id or chain index column differs from its hashed content"
    columns = ledger.denormalised(link.record_id)
    for col in DENORMALISED:
        hashed = body.get(col)
        if col in columns and columns[col] != hashed:
            return f"column {col!r} differs from its hashed content"
    return None


def _break(links: list[Link], i: int) -> tuple[str, Link, str]:
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
    expected = links[i - 1].chain_index + 1 if i else 1
    if link.chain_index > expected:
        return "deleted", link, f"the record(s) at chain index {expected}..{link.chain_index - 1} "
    return "inserted", link, "it does not link to the record before it (forged or relinked)"


def verify_chain(ledger: Ledger, source: str, result: VerifyResult) -> list[Link]:
    """Check one source's chain; returns the verified prefix (up to the first problem)."""
    links = list(ledger.links(source))
    head = GENESIS
    for i, link in enumerate(links):
        result.records += 1
        # Order matters: a moved record has an intact body but its position column changed,
        # which is a reorder, not an alteration; so links are checked before columns.
        if link_hash(link.prev_hash, link.body) != link.hash:
            why = "its hashed content or hash was changed"
            result.problems.append(
                Problem("altered", source, link.record_id, _seq(link), f"{_name(link)}: {why}")
            )
            return links[:i]
        if link.prev_hash != head:
            kind, named, why = _break(links, i)
            if kind == "deleted":
                msg = f"{why}were deleted before {_name(named)}"
            else:
                msg = f"{_name(named)} {kind}: {why}"
            result.problems.append(Problem(kind, source, named.record_id, _seq(named), msg))
            return links[: links.index(named)]
        column = _columns_altered(ledger, link)
        if column is not None:
            result.problems.append(
                Problem("altered", source, link.record_id, _seq(link), f"{_name(link)}: {column}")
            )
            return links[:i]
        head = link.hash
    return links


def check_checkpoint(
    cp: Checkpoint,
    chains: dict[str, list[Link]],
    broken: set[str],
    key: Ed25519PublicKey | None,
    result: VerifyResult,
) -> None:
    result.checkpoints += 1
    if key is not None and cp.public_key != raw_public_key(key).hex():
        result.problems.append(
            Problem(
                "checkpoint", "", "", None, f"checkpoint {cp.created_ns}: signed by another key"
            )
        )
        return
    if key is not None and not cp.signature_valid(key):
        result.problems.append(
            Problem("checkpoint", "", "", None, f"checkpoint {cp.created_ns}: bad signature")
        )
        return
    for source, signed in cp.heads().items():
        chain = chains.get(source, [])
        at = next((x for x in chain if x.chain_index == signed.chain_index), None)
        if at is None and source not in broken:
            last = f"{_name(chain[-1])}" if chain else "no record"
            result.problems.append(
                Problem(
                    "truncated",
                    source,
                    chain[-1].record_id if chain else "",
                    _seq(chain[-1]) if chain else None,
                    f"source {source}: chain ends at {last}, but checkpoint {cp.created_ns} "
                    f"signed chain index {signed.chain_index}: the tail was deleted",
                )
            )
        elif at is not None and at.hash != signed.hash:
            result.problems.append(
                Problem(
                    "checkpoint",
                    source,
                    at.record_id,
                    _seq(at),
                    f"{_name(at)} differs from the head signed in checkpoint {cp.created_ns}: "
                    "the chain was rewritten",
                )
            )


def verify(
    ledger: Ledger,
    public_key: Ed25519PublicKey | None = None,
    witness: Sequence[Checkpoint] = (),
) -> VerifyResult:
    """Recompute every chain and check it against every checkpoint (the ledger's and a witness's).

    Without `public_key` the signatures are not checked (the key in the ledger proves nothing
    to someone who could rewrite it); the signed heads are still compared with the chains.
    """
    result = VerifyResult()
    chains: dict[str, list[Link]] = {}
    broken: set[str] = set()
    for source in ledger.sources():
        result.sources += 1
        before = len(result.problems)
        chains[source] = verify_chain(ledger, source, result)
        if len(result.problems) > before:
            broken.add(source)
    for cp in [*ledger.checkpoints(), *witness]:
        check_checkpoint(cp, chains, broken, public_key, result)
    return result
