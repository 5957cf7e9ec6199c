"""The store's checkpoint timer: signs when heads moved, re-signs idle heads hourly, coarsens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import audit.store
from audit.checkpoint import load_or_create_signing_key, sign_checkpoint
from audit.coarsen import DAY_NS
from audit.settings import AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from audit.store import serve_store
from tests.audit.conftest import MakeRecord


def _settings(tmp_path: Path) -> AuditStoreSettings:
    return AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"),
        listen="127.0.0.1:0",
        db_path=str(tmp_path / "l.db"),
        checkpoint_interval_s=3600,
    )


async def test_signs_only_when_heads_moved_also_across_restarts(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    store = await serve_store(_settings(tmp_path))
    assert await store.gate.checkpoint() is None  # no records yet
    await store.gate.append([make_record()])
    assert await store.gate.checkpoint() is not None
    assert await store.gate.checkpoint() is None  # unchanged
    await store.gate.append([make_record()])
    assert await store.gate.checkpoint() is not None
    await store.stop(grace=0)  # the stop-time checkpoint has nothing new to sign
    store = await serve_store(_settings(tmp_path))
    assert await store.gate.checkpoint() is None  # a restart does not re-sign the same heads
    await store.stop(grace=0)
    ledger = SqliteLedger(tmp_path / "l.db")
    assert len(ledger.checkpoints()) == 2
    ledger.close()


async def test_idle_heads_are_signed_again_and_old_checkpoints_coarsened(
    tmp_path: Path, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SqliteLedger(tmp_path / "l.db")
    key = load_or_create_signing_key(tmp_path / "keys")
    old = time.time_ns() - 60 * DAY_NS
    for i in range(5):  # five checkpoints on one day two months ago
        ledger.append([make_record()])
        ledger.add_checkpoint(sign_checkpoint(key, ledger.heads(), old + i))
    ledger.close()
    monkeypatch.setattr(audit.store, "RESIGN_IDLE_NS", 0)
    store = await serve_store(_settings(tmp_path))
    assert await store.gate.checkpoint() is not None  # same heads, but the last one is old
    kept = await store.gate.run(lambda ledger: ledger.checkpoints())
    await store.stop(grace=0)
    assert len(kept) == 2  # that day's last one, and the new one
    assert kept[0].created_ns == old + 4
