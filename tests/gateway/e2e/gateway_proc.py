"""A gateway and a sim worker in a process of their own, so that a test can SIGKILL it.

Run: python -m tests.gateway.e2e.gateway_proc DATA_DIR STORE_TARGET (from the repository root).
It prints one JSON line `{"port": P}` once the gateway accepts calls, then serves until SIGTERM
(graceful stop, exit 0) or SIGKILL. The dev key, audit keys and spool live under DATA_DIR, so a
second process started on the same DATA_DIR continues where a killed one stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from audit.settings import AuditSpoolSettings
from common.eventloop import wait_for_shutdown_signal
from gateway.auth.devkeys import dev_auth_settings
from gateway.process.server import start_gateway
from gateway.routing.settings import RoutingSettings
from gateway.settings import GatewaySettings, ServerSettings
from policy.settings import PolicySettings
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine

ROOT = Path(__file__).resolve().parents[3]
SOURCE = "crash-gw"
SPOOL = "audit-spool.db"
STARTUP_TIMEOUT_S = 30.0


async def serve(data_dir: Path, store_target: str) -> None:
    """Run worker and gateway until SIGTERM; the port is the first line on stdout."""
    sim = SimConfig(time_to_first_token_ms=5, inter_token_latency_ms=3, prefill_ms_per_token=0)
    worker = await start_worker(SimEngine(sim), pool="onprem-gpu", worker_id="sim-crash")
    settings = GatewaySettings(
        server=ServerSettings(listen="127.0.0.1:0"),
        routing=RoutingSettings(workers=(worker.target,)),
        auth=dev_auth_settings(data_dir),
        policy=PolicySettings(ROOT / "tests" / "fixtures" / "policy", reload_interval_s=0),
        audit=AuditSpoolSettings(
            spool_path=str(data_dir / SPOOL), source=SOURCE, store_target=store_target
        ),
        data_dir=data_dir,
    )
    gateway = await start_gateway(settings)
    print(json.dumps({"port": gateway.port}), flush=True)
    try:
        await wait_for_shutdown_signal()
    finally:
        await gateway.stop(grace=1.0)
        await worker.stop(grace=0)


@dataclass
class GatewayProcess:
    """A running `gateway_proc` child, as seen from the test process."""

    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, no atexit."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self) -> int:
        """SIGTERM and the exit status of the graceful stop."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), STARTUP_TIMEOUT_S)


async def start_gateway_process(data_dir: Path, store_target: str) -> GatewayProcess:
    """Start the child and wait for its port; its stderr goes to a log file beside DATA_DIR."""
    log = data_dir.parent / f"gateway-proc-{os.urandom(3).hex()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGW_", "OTEL_"))}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.gateway.e2e.gateway_proc",
            str(data_dir),
            store_target,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        line = b""
    if not line:
        await process.wait()
        raise AssertionError(f"gateway process did not start:\n{log.read_text()[-4000:]}")
    return GatewayProcess(process, int(json.loads(line)["port"]), log)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2]))
