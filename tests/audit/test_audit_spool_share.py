"""The spool's share for unauthenticated calls: anonymous records cannot fill it for the rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from audit.spool import AuditSpool, SpoolFull
from tests.audit.conftest import MakeRecord


async def _fill_anonymous(spool: AuditSpool, make_record: MakeRecord) -> int:
    written = 0
    with pytest.raises(SpoolFull, match="unauthenticated"):
        for _ in range(10_000):
            await spool.append(make_record(subject_pseudonym=""), anonymous=True)
            written += 1
    return written


async def test_anonymous_records_stop_at_their_share_and_the_rest_stays_usable(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    spool = AuditSpool(tmp_path / "s.db", quota_bytes=20_000, source="gw-0", anonymous_share=0.1)
    try:
        assert await _fill_anonymous(spool, make_record) > 0
        assert 2_000 <= spool.anonymous_bytes < 2_000 + 1_000  # one record of overshoot at most
        assert not spool.is_full
        authenticated = 0
        with pytest.raises(SpoolFull, match="quota 20000"):
            for _ in range(10_000):
                await spool.append(make_record())
                authenticated += 1
        assert spool.pending_bytes >= 20_000
        assert spool.pending_bytes - spool.anonymous_bytes >= 17_000  # ~90 % was theirs
    finally:
        await spool.close()


async def test_delivery_frees_the_anonymous_share_and_a_reopened_spool_remembers_it(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "s.db"
    spool = AuditSpool(path, quota_bytes=20_000, source="gw-0", anonymous_share=0.1)
    await _fill_anonymous(spool, make_record)
    used = spool.anonymous_bytes
    await spool.close()

    spool = AuditSpool(path, quota_bytes=20_000, source="gw-0", anonymous_share=0.1)
    try:
        assert spool.anonymous_bytes == used
        pending = await spool.pending(10_000)
        await spool.mark_delivered([r.sequence for r in pending])
        assert spool.anonymous_bytes == 0 and spool.pending_bytes == 0
        await spool.append(make_record(subject_pseudonym=""), anonymous=True)
    finally:
        await spool.close()


async def test_a_spool_from_before_the_share_opens_with_its_records_as_authenticated(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE spool (sequence INTEGER PRIMARY KEY AUTOINCREMENT, "
            "record_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, size INTEGER NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('source', 'gw-0');"
        )
    spool = AuditSpool(path, quota_bytes=20_000, source="gw-0")
    try:
        await spool.append(make_record())
        assert spool.pending_bytes > 0 and spool.anonymous_bytes == 0
    finally:
        await spool.close()


def test_share_must_be_a_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="anonymous_share"):
        AuditSpool(tmp_path / "s.db", quota_bytes=1000, source="gw-0", anonymous_share=1.5)
