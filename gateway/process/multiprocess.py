"""Several gateway processes on one port (SO_REUSEPORT): one Python process per core.

The kernel spreads new connections across the processes. Each process has its own audit spool
(and source id, since chains are per source), so no two processes ever write the same file.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from dataclasses import replace

from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def settings_for_process(settings: GatewaySettings, index: int) -> GatewaySettings:
    """The settings of process `index`: own spool file, own audit source, own local state."""
    audit = settings.audit
    if audit is not None:
        audit = replace(
            audit, spool_path=f"{audit.spool_path}.{index}", source=f"{audit.source}-{index}"
        )
    metrics = settings.metrics
    if metrics is not None and index > 0:
        metrics = None  # one metrics endpoint per host port; process 0 serves it
    return replace(
        settings, audit=audit, metrics=metrics, data_dir=settings.data_dir / f"process-{index}"
    )


def _child(settings: GatewaySettings) -> None:
    from common.eventloop import run_event_loop
    from gateway.process.server import serve

    run_event_loop(serve(settings))


def run_processes(settings: GatewaySettings) -> int:
    """Start `server.processes` gateway processes and wait; SIGTERM/SIGINT stop them all."""
    count = settings.server.processes
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(settings_for_process(settings, i),), name=f"gw-{i}")
        for i in range(count)
    ]
    for child in children:
        child.start()
    log.info("started %d gateway processes on %s", count, settings.server.listen)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each child drains gracefully

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
