"""Refusals before authentication, audited without amplification.

Anyone can send a junk token, and each refusal used to cost an audit record (an fsync, a
shipment, ledger space). Here the first refusal of each (peer host, reason, door) in a window is
audited as usual; the ones after it in the same window are only counted, and when the window
ends one record with `repeats` = that count stands for them. A flood from one address costs two
records per reason and window, whatever its rate; the number of keys is bounded too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from audit.record import AuditRecord, Outcome
from audit.spool import SpoolFull
from gateway.request.auditing import AuditTrail
from gateway.request.call import new_request_id

log = logging.getLogger(__name__)

WINDOW_S = 10.0
# Distinct (peer, reason) keys per window; past it, refusals share one overflow key.
MAX_KEYS = 4096
OVERFLOW_PEER = "*"

AGGREGATED = Counter(
    "llmgw_auth_refusals_aggregated_total",
    "Refusals before authentication counted into an aggregate audit record, not written alone",
)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Refusals of one kind from one peer in one window, beyond the first (which was audited)."""

    peer: str
    reason: str
    interface: str
    status_code: str
    count: int


class AnonymousRefusals:
    """Decides which pre-authentication refusals are audited alone, and writes the aggregates."""

    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._started = clock()
        # (peer host, reason, door) -> the status code of its first refusal in the window
        self._seen: dict[tuple[str, str, str], str] = {}
        self._counts: dict[tuple[str, str, str], int] = {}
        self._due: list[Aggregate] = []

    def first(self, peer: str, reason: str, status_code: str, interface: str) -> bool:
        """True if this refusal is the first of its kind in the window (audit it now)."""
        self._roll()
        key = (peer_host(peer), reason, interface)
        if key not in self._seen and len(self._seen) >= MAX_KEYS:
            key = (OVERFLOW_PEER, reason, interface)
        if key not in self._seen:
            self._seen[key] = status_code
            return True
        self._counts[key] = self._counts.get(key, 0) + 1
        AGGREGATED.inc()
        return False

    def _roll(self) -> None:
        if self._clock() - self._started < self._window_s:
            return
        self._due.extend(
            Aggregate(peer, reason, interface, self._seen[(peer, reason, interface)], count)
            for (peer, reason, interface), count in self._counts.items()
        )
        self._seen.clear()
        self._counts.clear()
        self._started = self._clock()

    async def flush(self, audit: AuditTrail, *, everything: bool = False) -> int:
        """Write one record per finished window's aggregate (all counted ones with `everything`)."""
        if everything:
            self._started -= self._window_s
        self._roll()
        due, self._due = self._due, []
        for aggregate in due:
            record = AuditRecord(
                record_id=new_request_id(),
                time_ns=time.time_ns(),
                subject_pseudonym="",
                department="",
                outcome=Outcome.DENIED,
                status_code=aggregate.status_code,
                rules_fired=(aggregate.reason,),
                interface=aggregate.interface,
                peer=aggregate.peer,
                repeats=aggregate.count,
            )
            try:
                await audit.append(record)
            except SpoolFull:
                log.error("audit spool full: %d refusals from %s not recorded", aggregate.count,
                          aggregate.peer)  # fmt: skip
        return len(due)

    async def run(self, audit: AuditTrail) -> None:
        """Write the aggregates of each window as it ends, until cancelled."""
        while True:
            await asyncio.sleep(self._window_s)
            try:
                await self.flush(audit)
            except Exception:  # a background writer: log and go on, never stop aggregating
                log.exception("could not write the aggregated refusals")


def peer_host(peer: str) -> str:
    """The address of a gRPC peer string without its port (`ipv4:10.0.0.7:5512` -> `10.0.0.7`)."""
    _, _, address = peer.partition(":") if peer.startswith(("ipv4:", "ipv6:")) else ("", "", peer)
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else address
