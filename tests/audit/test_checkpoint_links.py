"""Linked checkpoints: one signature check per run of links, and each break checked alone.

A checkpoint names the one signed before it (`prev`, the SHA-256 of its payload and signature),
so a valid signature on the last of a run proves every checkpoint before it. Whatever breaks a
link (an edited or forged checkpoint, coarsening, checkpoints signed before links existed) ends
the run, and the checkpoint before the break is checked on its own signature.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import audit.verify
from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.cli import main
from audit.settings import AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from audit.store import serve_store
from audit.verify import VerifyResult, verify
from tests.audit.conftest import MakeRecord

KEY = Ed25519PrivateKey.generate()


def _history(path: Path, make_record: MakeRecord, n: int = 6, *, linked: bool = True) -> None:
    """A ledger of n records with a checkpoint after each, as the store's timer signs them."""
    ledger = SqliteLedger(path)
    now = time.time_ns()
    for i in range(n):
        ledger.append([make_record()])
        after = ledger.newest_checkpoint() if linked else None
        ledger.add_checkpoint(sign_checkpoint(KEY, ledger.heads(), now - (n - i) * 1000, after))
    ledger.close()


def _verify(path: Path, *, all_signatures: bool = False) -> VerifyResult:
    ledger = SqliteLedger(path)
    try:
        return verify(ledger, KEY.public_key(), all_signatures=all_signatures)
    finally:
        ledger.close()


def _checkpoints(path: Path) -> list[Checkpoint]:
    ledger = SqliteLedger(path)
    try:
        return ledger.checkpoints()
    finally:
        ledger.close()


def _named(result: VerifyResult) -> list[str]:
    return [p.message for p in result.problems if p.kind == "checkpoint"]


async def test_the_store_links_each_checkpoint_to_the_one_before(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    settings = AuditStoreSettings(
        keys_dir=str(tmp_path / "keys"), listen="127.0.0.1:0", db_path=str(tmp_path / "l.db")
    )
    store = await serve_store(settings)
    signed = []
    for _ in range(3):
        await store.gate.append([make_record()])
        signed.append(await store.gate.checkpoint())
    await store.stop(grace=0)
    first, second, third = signed
    assert first is not None and second is not None and third is not None
    assert "prev" not in json.loads(first.payload)  # nothing before it
    assert json.loads(second.payload)["prev"] == first.link
    assert json.loads(third.payload)["prev"] == second.link


def test_a_linked_history_needs_one_signature_an_unlinked_one_each(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    _history(tmp_path / "linked.db", make_record)
    _history(tmp_path / "old.db", make_record, linked=False)
    linked, old = _verify(tmp_path / "linked.db"), _verify(tmp_path / "old.db")
    assert linked.ok and old.ok
    assert (linked.checkpoints, linked.signatures) == (6, 1)
    assert (old.checkpoints, old.signatures) == (6, 6)
    every = _verify(tmp_path / "linked.db", all_signatures=True)
    assert every.ok and every.signatures == 6


def test_an_edited_checkpoint_inside_a_run_is_named(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "l.db"
    _history(path, make_record)
    third = _checkpoints(path)[2]
    payload = json.loads(third.payload)
    payload["heads"]["gw-0"]["hash"] = "00" * 32  # claims another head, same signature
    forged = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE checkpoints SET payload = ? WHERE id = 3", (forged,))
    result = _verify(path)
    assert _named(result) == [f"checkpoint {third.created_ns}: bad signature"]
    assert result.newest is not None and result.newest.created_ns > third.created_ns


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_forged_checkpoint_linked_into_the_run_is_caught(
    tmp_path: Path, make_record: MakeRecord, where: str
) -> None:
    path = tmp_path / "l.db"
    _history(path, make_record)
    genuine = _checkpoints(path)
    before = genuine[2] if where == "middle" else genuine[-1]
    # Linked correctly and claiming the pinned key, but signed by someone else's key.
    forged = sign_checkpoint(
        Ed25519PrivateKey.generate(), before.heads(), before.created_ns + 1, before
    )
    row_id = 4 if where == "middle" else 7
    with sqlite3.connect(path) as conn:
        if where == "middle":  # make room after the third
            conn.execute("UPDATE checkpoints SET id = id + 100 WHERE id > 3")
        conn.execute(
            "INSERT INTO checkpoints (id, created_ns, payload, signature, public_key) "
            "VALUES (?, ?, ?, ?, ?)",
            (row_id, forged.created_ns, forged.payload, forged.signature, genuine[0].public_key),
        )
    result = _verify(path)
    assert _named(result) == [f"checkpoint {forged.created_ns}: bad signature"]
    assert result.newest == genuine[-1]  # the genuine ones still count


@pytest.mark.parametrize("column", ["payload", "signature"])
def test_any_change_to_a_checkpoint_inside_a_run_breaks_its_link(
    tmp_path: Path, make_record: MakeRecord, column: str
) -> None:
    """The link hashes payload and signature: the next checkpoint no longer names the changed
    one, which is then checked on its own signature and named."""
    path = tmp_path / "l.db"
    _history(path, make_record)
    second = _checkpoints(path)[1]
    changed = second.payload.replace('"heads"', '"heads" ', 1) if column == "payload" else "00" * 64
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE checkpoints SET {column} = ? WHERE id = 2", (changed,))
    result = _verify(path)
    assert _named(result) == [f"checkpoint {second.created_ns}: bad signature"]
    assert result.signatures == 1 + 2 + 1  # run [1, 2] fails, so 1 and 2 alone; then [3..6]


def test_a_coarsened_history_verifies_one_signature_per_run(
    tmp_path: Path, make_record: MakeRecord
) -> None:
    path = tmp_path / "l.db"
    _history(path, make_record)
    with sqlite3.connect(path) as conn:  # as coarsening removes old ones
        conn.execute("DELETE FROM checkpoints WHERE id IN (2, 4)")
    result = _verify(path)
    assert result.ok
    assert (result.checkpoints, result.signatures) == (4, 3)  # runs: [1], [3], [5, 6]
    with sqlite3.connect(path) as conn:  # truncation is still caught
        conn.execute(
            "DELETE FROM records WHERE chain_index = (SELECT MAX(chain_index) FROM records)"
        )
    assert not _verify(path).ok


def test_cli_counts_and_can_check_every_signature(
    tmp_path: Path, make_record: MakeRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "l.db"
    _history(path, make_record)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    base = ["verify", "--db", str(path), "--public-key", str(pub)]
    assert main(base) == 0
    assert "6 checkpoint(s), 1 signature(s) checked" in capsys.readouterr().out
    assert main([*base, "--all-signatures"]) == 0
    assert "6 checkpoint(s), 6 signature(s) checked" in capsys.readouterr().out


def test_a_long_run_is_checked_in_bounded_pieces(
    tmp_path: Path, make_record: MakeRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory holds at most MAX_RUN checkpoints' heads: a long run costs a signature per piece."""
    monkeypatch.setattr(audit.verify, "MAX_RUN", 4)
    path = tmp_path / "l.db"
    _history(path, make_record, n=10)
    result = _verify(path)
    assert result.ok and (result.checkpoints, result.signatures) == (10, 3)  # 4 + 4 + 2
    with sqlite3.connect(path) as conn:  # a forgery inside the second piece is still named
        conn.execute("UPDATE checkpoints SET signature = ? WHERE id = 6", ("00" * 64,))
    assert len(_named(_verify(path))) == 1
