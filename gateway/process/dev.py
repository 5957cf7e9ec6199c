"""The embedded default stack: gateway and audit store here, a simulated worker beside them.

The worker runs as its own `llm-worker` process, as in production: the gateway package never
imports worker code.

Everything listens on loopback; all state (development key, audit keys, spool, ledger) lives under
the data directory, so `llm-audit verify --db DATA/audit.db` and `llm-audit query --db
DATA/audit.db` show the requests made against the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from pathlib import Path

from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.store import serve_store
from common.eventloop import wait_for_shutdown_signal
from gateway.auth.devkeys import dev_auth_settings, mint_dev_token
from gateway.process.metrics_server import MetricsSettings
from gateway.process.server import start_gateway
from gateway.routing.settings import RoutingSettings
from gateway.settings import GatewaySettings, HttpSettings, ServerSettings
from policy.settings import PolicySettings

log = logging.getLogger(__name__)
EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "policy" / "examples" / "health-region"
DEV_TOKEN_FILE = "dev-token"


async def run_dev_stack(
    port: int, data_dir: Path, policy_dir: Path = EXAMPLE_POLICY, http_port: int = 8080
) -> None:
    """Start the stack, print how to call it, run until SIGTERM/SIGINT."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(data_dir / "audit-store-keys"),
            listen="127.0.0.1:0",
            db_path=str(data_dir / "audit.db"),
        )
    )
    worker, worker_target = await start_sim_worker()
    settings = GatewaySettings(
        server=ServerSettings(listen=f"127.0.0.1:{port}"),
        http=HttpSettings(listen=f"127.0.0.1:{http_port}"),
        routing=RoutingSettings(workers=(worker_target,)),
        auth=dev_auth_settings(data_dir),
        policy=PolicySettings(policy_dir, reload_interval_s=2.0),
        audit=AuditSpoolSettings(
            spool_path=str(data_dir / "audit-spool.db"),
            source="dev-gateway",
            store_target=f"127.0.0.1:{store.port}",
        ),
        metrics=MetricsSettings(listen="127.0.0.1:0"),
        data_dir=data_dir,
    )
    gateway = await start_gateway(settings)
    token = mint_dev_token(
        data_dir,
        department="emergency",
        subject="dev-clinician",
        roles=("clinician",),
        clearance="health",
        purpose="treatment",
        ttl_s=12 * 3600,
    )
    token_file = data_dir / DEV_TOKEN_FILE
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    metrics = gateway.metrics.url if gateway.metrics else "off"
    openai_url = gateway.http.base_url if gateway.http else "off"
    print(
        "llm-gateway dev stack ready\n"
        f"  gateway     : 127.0.0.1:{gateway.port}\n"
        f"  OpenAI HTTP : {openai_url}\n"
        f"  worker      : {worker_target} (simulated GPU, process {worker.pid})\n"
        f"  audit store : 127.0.0.1:{store.port} (ledger {data_dir / 'audit.db'})\n"
        f"  policy      : {policy_dir}\n"
        f"  metrics     : {metrics}\n"
        f"  dev token   : {token_file} (department emergency, subject dev-clinician)\n"
        f"{token}\n"
        "try:\n"
        f"  .venv/bin/llm-gateway ask --target 127.0.0.1:{gateway.port} "
        f"--token-file {token_file} --classification internal 'Summarise the ward round'\n"
        f'  curl {openai_url}/models -H "Authorization: Bearer $(cat {token_file})"\n'
        f"  .venv/bin/llm-audit query --db {data_dir / 'audit.db'}\n"
        "Ctrl-C stops the stack.",
        flush=True,
    )
    try:
        await wait_for_shutdown_signal()
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        await gateway.stop(grace=2.0)
        await stop_process(worker)
        await store.stop()


_LISTENING = re.compile(rb"listening on port (\d+)")


async def start_sim_worker() -> tuple[asyncio.subprocess.Process, str]:
    """Start `llm-worker serve --engine sim` on a free loopback port; the process and its target."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "serve",
        "--engine",
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--pool",
        "onprem-gpu",
        "--grace",
        "1",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            while line := await process.stdout.readline():
                if match := _LISTENING.search(line):
                    return process, f"127.0.0.1:{int(match.group(1))}"
    except TimeoutError:
        pass
    await stop_process(process)
    raise RuntimeError("the simulated worker did not start; its log is above")


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then wait; SIGKILL if it does not stop within 10 s."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
