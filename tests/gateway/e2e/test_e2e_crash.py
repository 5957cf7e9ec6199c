"""End to end: a gateway killed with SIGKILL under load keeps the record of every answer it gave.

The gateway runs in a process of its own (`gateway_proc.py`); load comes from this process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc

from audit.settings import AuditStoreSettings
from audit.sqlite_ledger import SqliteLedger
from audit.store import serve_store
from audit.verify import verify
from tests.gateway.e2e.gateway_proc import SOURCE, SPOOL, start_gateway_process
from tests.helpers import wait_until
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CLIENTS = 8


def ids(db: Path, table: str) -> set[str]:
    """The record ids in a SQLite table (the spool's `spool` or the ledger's `records`)."""
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute(f"SELECT record_id FROM {table}")}
    finally:
        conn.close()


async def test_sigkill_under_load_loses_no_record_of_an_answered_request(
    tmp_path: Path, data_dir: Path, mint: Callable[..., str]
) -> None:
    auth = [("authorization", f"Bearer {mint()}")]  # also creates the key the child trusts
    # The store is down while the first process runs, so every record it wrote is still in
    # its spool when it dies.
    first = await start_gateway_process(data_dir, f"127.0.0.1:{free_port()}")
    answered: set[str] = set()
    cut_mid_stream = 0
    request = pb.GenerateStreamRequest(
        model="llama-3.1-8b-instruct", prompt="Summarise the ward round"
    )
    request.sampling.max_tokens = 20

    async def client(stub: gateway_pb2_grpc.InferenceServiceAsyncStub) -> None:
        nonlocal cut_mid_stream
        while True:
            tokens = 0
            try:
                async for message in stub.GenerateStream(request, metadata=auth, timeout=10):
                    tokens += message.token_count
                    if message.finish_reason:  # the final message: the answer is complete
                        answered.add(message.request_id)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                cut_mid_stream += tokens > 0
                return

    async with grpc.aio.insecure_channel(first.target) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        clients = [asyncio.create_task(client(stub)) for _ in range(CLIENTS)]
        await wait_until(lambda: len(answered) >= 60, within=30)
        await first.kill()
        await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert cut_mid_stream >= 1  # killed under load: streams were running

    spooled = ids(data_dir / SPOOL, "spool")
    assert answered <= spooled, f"{len(answered - spooled)} answered request(s) lost"

    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(tmp_path / "store-keys"),
            listen="127.0.0.1:0",
            db_path=str(tmp_path / "ledger.db"),
            checkpoint_interval_s=3600,
        )
    )
    try:
        second = await start_gateway_process(data_dir, f"127.0.0.1:{store.port}")
        ledger = tmp_path / "ledger.db"
        await wait_until(lambda: ids(ledger, "records") == spooled, within=20)
        await wait_until(lambda: not ids(data_dir / SPOOL, "spool"), within=10)
        assert await second.terminate() == 0
    finally:
        await store.stop(grace=0)

    checked = SqliteLedger(ledger)
    try:
        result = verify(checked)
        sources = checked.sources()
    finally:
        checked.close()
    assert result.ok, result.problems
    assert result.records == len(spooled) and sources == [SOURCE]
