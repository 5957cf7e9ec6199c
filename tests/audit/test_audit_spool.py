"""The durable spool: SIGKILL survival, group commit, quota."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audit.spool import AuditSpool, SpoolFull
from tests.audit.conftest import MakeRecord

_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from audit.record import AuditRecord, Outcome
    from audit.spool import AuditSpool

    async def main() -> None:
        spool = AuditSpool(sys.argv[1], quota_bytes=10**9, source="gw-0")
        n = 0
        async def writer(w: int) -> None:
            nonlocal n
            while True:
                n += 1
                rid = f"r-{w}-{n}"
                await spool.append(AuditRecord(
                    record_id=rid, time_ns=n, subject_pseudonym="p", department="d",
                    outcome=Outcome.OK, status_code="OK"))
                sys.stdout.write(rid + "\\n")
                sys.stdout.flush()
        await asyncio.gather(*(writer(w) for w in range(8)))

    asyncio.run(main())
    """
)


def _append_then_sigkill(path: Path, at_least: int) -> list[str]:
    """Run a spool writer, SIGKILL it mid-stream; the ids whose append had returned."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) >= at_least:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acknowledged += [line.strip() for line in proc.stdout if line.endswith("\n")]
    proc.stdout.close()
    return acknowledged


async def test_every_returned_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    acknowledged = await asyncio.to_thread(_append_then_sigkill, path, 300)
    spool = AuditSpool(path, quota_bytes=10**9, source="gw-0")
    try:
        records = await spool.pending(100_000)
    finally:
        await spool.close()
    stored = {r.record_id for r in records}
    assert set(acknowledged) <= stored
    sequences = [r.sequence for r in records]
    assert sequences == sorted(set(sequences))
    assert all(r.source == "gw-0" for r in records)


async def test_concurrent_appends_share_commits(tmp_path: Path, make_record: MakeRecord) -> None:
    grouped = AuditSpool(tmp_path / "g.db", quota_bytes=10**9, source="gw-0")
    single = AuditSpool(tmp_path / "s.db", quota_bytes=10**9, source="gw-0", max_batch=1)
    try:
        for spool in (grouped, single):
            await asyncio.gather(*(spool.append(make_record()) for _ in range(200)))
            assert spool.appends == 200
            assert await spool.pending_count() == 200
        assert single.commits == 200
        assert grouped.commits <= 20  # 200 appends in at most 20 fsyncs
    finally:
        await grouped.close()
        await single.close()


async def test_sequences_increase_and_survive_delivery(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=10**9, source="gw-0")
    for _ in range(3):
        await spool.append(make_record())
    first = await spool.pending(10)
    await spool.mark_delivered([r.sequence for r in first])
    await spool.close()
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=10**9, source="gw-0")
    await spool.append(make_record())
    later = await spool.pending(10)
    await spool.close()
    assert [r.sequence for r in first] == [1, 2, 3]
    assert [r.sequence for r in later] == [4]  # never reused after delivery


async def test_duplicate_record_id_is_spooled_once(tmp_path: Path, make_record: MakeRecord) -> None:
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=10**9, source="gw-0")
    record = make_record()
    await spool.append(record)
    await spool.append(record)
    assert await spool.pending_count() == 1
    await spool.close()


async def test_quota_makes_spool_full_until_delivered(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=3000, source="gw-0")
    try:
        while not spool.is_full:
            await spool.append(make_record())
        with pytest.raises(SpoolFull, match="quota 3000"):
            await spool.append(make_record())
        pending = await spool.pending(100)
        await spool.mark_delivered([r.sequence for r in pending])
        assert not spool.is_full
        await spool.append(make_record())
    finally:
        await spool.close()


async def test_spool_of_another_source_is_refused(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=100, source="gw-0")
    await spool.close()
    with pytest.raises(ValueError, match="belongs to source 'gw-0'"):
        AuditSpool(tmp_path / "s.db", quota_bytes=100, source="gw-1")
