"""Coarsening old checkpoints: all kept while recent, then the last of each day per source."""

from __future__ import annotations

from audit.ledger import Ledger

DAY_NS = 86_400 * 1_000_000_000
KEEP_ALL_DAYS = 30


def coarsen_checkpoints(ledger: Ledger, now_ns: int, keep_all_days: int = KEEP_ALL_DAYS) -> int:
    """Delete old checkpoints that prove nothing a kept one does not; returns how many went.

    Kept: every checkpoint younger than `keep_all_days`; for each older UTC day and each source,
    the last checkpoint of that day that signs a head of the source; and the newest checkpoint
    of all. A chain only grows, so a later signed head commits to every record before it: each
    record covered before is still covered by a kept checkpoint (the newest at least), and the
    time at which an old record is proven to have existed loses precision to one day at most.
    Checkpoints are read in one streaming pass; only day/source winners are held in memory.
    """
    cutoff = now_ns - keep_all_days * DAY_NS
    winner: dict[tuple[int, str], int] = {}  # (day, source) -> id of the last checkpoint
    old: list[int] = []
    newest = None
    for cp_id, cp in ledger.iter_checkpoints():
        newest = cp_id
        if cp.created_ns >= cutoff:
            continue
        try:
            sources = list(cp.heads()) or [""]
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable: keep it for verify to report
        old.append(cp_id)
        for source in sources:
            winner[(cp.created_ns // DAY_NS, source)] = cp_id  # ids grow: the last one wins
    keep = set(winner.values()) | {newest}
    doomed = [i for i in old if i not in keep]
    return ledger.delete_checkpoints(doomed) if doomed else 0
