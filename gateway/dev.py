"""The embedded default stack: gateway, simulated worker and audit store in one process.

Everything listens on loopback; all state (development key, audit keys, spool, ledger) lives under
the data directory, so `llm-audit verify --db DATA/audit.db` and `llm-audit query --db
DATA/audit.db` show the requests made against the stack.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from audit.settings import AuditSpoolSettings, AuditStoreSettings
from audit.store import serve_store
from gateway.auth.devkeys import dev_auth_settings, mint_dev_token
from gateway.metrics_server import MetricsSettings
from gateway.routing.settings import RoutingSettings
from gateway.server import start_gateway, wait_for_shutdown_signal
from gateway.settings import GatewaySettings, ServerSettings
from policy.settings import PolicySettings
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine

log = logging.getLogger(__name__)
EXAMPLE_POLICY = Path(__file__).resolve().parents[1] / "policy" / "examples" / "health-region"
DEV_TOKEN_FILE = "dev-token"


async def run_dev_stack(port: int, data_dir: Path, policy_dir: Path = EXAMPLE_POLICY) -> None:
    """Start the stack, print how to call it, run until SIGTERM/SIGINT."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await serve_store(
        AuditStoreSettings(
            keys_dir=str(data_dir / "audit-store-keys"),
            listen="127.0.0.1:0",
            db_path=str(data_dir / "audit.db"),
        )
    )
    worker = await start_worker(SimEngine(SimConfig()), pool="onprem-gpu", worker_id="sim-0")
    settings = GatewaySettings(
        server=ServerSettings(listen=f"127.0.0.1:{port}"),
        routing=RoutingSettings(workers=(worker.target,)),
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
    print(
        "llm-gateway dev stack ready\n"
        f"  gateway     : 127.0.0.1:{gateway.port}\n"
        f"  worker      : {worker.target} (sim engine: {', '.join(worker.engine.models)})\n"
        f"  audit store : 127.0.0.1:{store.port} (ledger {data_dir / 'audit.db'})\n"
        f"  policy      : {policy_dir}\n"
        f"  metrics     : {metrics}\n"
        f"  dev token   : {token_file} (department emergency, subject dev-clinician)\n"
        f"{token}\n"
        "try:\n"
        f"  .venv/bin/llm-gateway ask --target 127.0.0.1:{gateway.port} "
        f"--token-file {token_file} --classification internal 'Summarise the ward round'\n"
        f"  .venv/bin/llm-audit query --db {data_dir / 'audit.db'}\n"
        "Ctrl-C stops the stack.",
        flush=True,
    )
    try:
        await wait_for_shutdown_signal()
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        await gateway.stop(grace=2.0)
        await worker.stop(grace=1.0)
        await store.stop()
