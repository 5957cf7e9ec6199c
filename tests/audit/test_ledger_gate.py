"""The store's ledger gate runs one ledger call at a time, even when its caller is cancelled.

`server.stop(grace)` cancels an Export whose append is still running in a thread. The thread
cannot be stopped, so nothing may run beside it: in particular not `close`, which, on a SQLite
connection in use by another thread, crashed the process (found as a segfault in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.ledger import AppendResult
from audit.record import AuditRecord
from audit.sqlite_ledger import SqliteLedger
from audit.store import LedgerGate
from tests.audit.conftest import MakeRecord


class HeldLedger(SqliteLedger):
    """A SQLite ledger whose appends wait, inside the ledger thread, until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def append(self, records: Sequence[AuditRecord]) -> AppendResult:
        self.entered.set()
        assert self.release.wait(10), "the test never released the append"
        return super().append(records)


async def _cancelled(task: asyncio.Task[AppendResult]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_close_waits_for_an_append_whose_caller_was_cancelled(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    ledger = HeldLedger(tmp_path / "l.db")
    gate = LedgerGate(ledger, Ed25519PrivateKey.generate())
    append = asyncio.create_task(gate.append([make_record()]))
    assert await asyncio.to_thread(ledger.entered.wait, 10)
    await _cancelled(append)  # as server.stop(grace=0) does to the Export awaiting it

    closing = asyncio.create_task(gate.close())
    await asyncio.sleep(0.3)
    assert not closing.done(), "close ran beside an append still using the connection"
    ledger.release.set()
    await asyncio.wait_for(closing, 10)

    reopened = SqliteLedger(tmp_path / "l.db")
    assert reopened.count() == 1  # the append the caller gave up on still completed, whole
    reopened.close()


async def test_a_call_cancelled_before_it_started_never_runs(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    ledger = HeldLedger(tmp_path / "l.db")
    gate = LedgerGate(ledger, Ed25519PrivateKey.generate())
    first = asyncio.create_task(gate.append([make_record()]))
    assert await asyncio.to_thread(ledger.entered.wait, 10)
    queued = asyncio.create_task(gate.run(lambda held: held.count()))
    second = asyncio.create_task(gate.append([make_record()]))
    await asyncio.sleep(0.1)
    await _cancelled(second)
    ledger.release.set()
    assert (await first).stored == 1
    assert await queued == 1  # calls run in arrival order: after the first append only
    assert await gate.run(lambda held: held.count()) == 1  # the cancelled append never ran
    await gate.close()
