"""The embedded default stack: a gateway and a simulated worker in one process, on loopback."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from gateway.server import start_gateway, wait_for_shutdown_signal
from gateway.settings import GatewaySettings, RoutingSettings, ServerSettings
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine

log = logging.getLogger(__name__)


async def run_dev_stack(port: int, data_dir: Path) -> None:
    """Start the stack, print how to call it, run until SIGTERM/SIGINT."""
    worker = await start_worker(SimEngine(SimConfig()), pool="onprem-gpu", worker_id="sim-0")
    settings = GatewaySettings(
        server=replace(ServerSettings(), listen=f"127.0.0.1:{port}"),
        routing=RoutingSettings(workers=(worker.target,)),
        data_dir=data_dir,
    )
    gateway = await start_gateway(settings)
    print(
        f"llm-gateway dev stack ready\n"
        f"  gateway : 127.0.0.1:{gateway.port}\n"
        f"  worker  : {worker.target} (sim engine, models {', '.join(worker.engine.models)})\n"
        f"  data dir: {data_dir}\n"
        f"try: llm-gateway ask --target 127.0.0.1:{gateway.port} 'Summarise the ward round'\n"
        "Ctrl-C stops the stack.",
        flush=True,
    )
    try:
        await wait_for_shutdown_signal()
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        await gateway.stop(grace=2.0)
        await worker.stop(grace=1.0)
