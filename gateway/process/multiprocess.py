"""Several gateway processes on one port (SO_REUSEPORT): one Python process per core.

The kernel spreads new connections across the processes. Each process has its own audit spool
and audit source (`<source>-p<index>`, since chains are per source), so no two processes ever
write the same file; all share the deployment's audit secret, so a person has one pseudonym.
The parent supervises: it serves the replica's one metrics and probe endpoint (the sum over its
processes, through prometheus_client's multiprocess mode), forwards SIGTERM/SIGINT so that every
process drains, and stops them all if one dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from audit.pseudonym import load_or_create_key
from common.egress import EgressGuard
from gateway.request.auditing import dev_key_file
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
# prometheus_client reads it when first imported: set before any process is spawned.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SERVING_METRIC = "llmgw_process_serving"


def settings_for_process(settings: GatewaySettings, index: int) -> GatewaySettings:
    """The settings of process `index`: own spool file, audit source and local state."""
    audit = settings.audit
    if audit is not None:
        audit = replace(
            audit, spool_path=f"{audit.spool_path}.{index}", source=f"{audit.source}-p{index}"
        )
    return replace(
        settings, audit=audit, metrics=None, data_dir=settings.data_dir / f"process-{index}"
    )


def shared_audit_secret(settings: GatewaySettings) -> GatewaySettings:
    """Without `audit.pseudonym_key_file` (development), one generated secret for all processes."""
    audit = settings.audit
    if audit is None or audit.pseudonym_key_file:
        return settings
    path = dev_key_file(settings.data_dir)
    load_or_create_key(path)
    return replace(settings, audit=replace(audit, pseudonym_key_file=str(path)))


def _child(settings: GatewaySettings) -> None:
    from prometheus_client import multiprocess

    from common.eventloop import run_event_loop
    from gateway.process.logging_setup import configure_logging
    from gateway.process.server import serve

    configure_logging(settings.logging)
    try:
        run_event_loop(serve(settings))
    except Exception:
        log.exception("gateway process failed")
        sys.exit(1)
    finally:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def run_processes(settings: GatewaySettings) -> int:
    """Run `server.processes` gateway processes until SIGTERM/SIGINT; 0 when all drained cleanly."""
    from gateway.process.server import check_egress, check_production

    # Refuse a bad configuration once, here, rather than once per process.
    check_production(settings)
    check_egress(settings, EgressGuard(settings.residency))
    settings = shared_audit_secret(settings)
    metrics_dir = Path(tempfile.mkdtemp(prefix="llmgw-metrics-"))  # fresh per start
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)
    try:
        return _supervise(settings, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(settings: GatewaySettings, metrics_dir: Path) -> int:
    from prometheus_client import multiprocess

    from gateway.process.metrics_server import (
        multiprocess_registry,
        sample_sum,
        start_metrics_server,
    )

    count = settings.server.processes
    context = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = [
        context.Process(target=_child, args=(settings_for_process(settings, i),), name=f"gw-{i}")
        for i in range(count)
    ]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping %d gateway processes", signal.Signals(signum).name, count)
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each child goes NOT_SERVING and drains

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    metrics = None
    if settings.metrics is not None and settings.metrics.listen:
        registry = multiprocess_registry(metrics_dir)
        metrics = start_metrics_server(
            settings.metrics.listen,
            registry=registry,
            ready=lambda: not stopping and sample_sum(registry, SERVING_METRIC) >= count,
        )
    for child in children:
        if not stopping:
            child.start()
    log.info("started %d gateway processes on %s", count, settings.server.listen)
    failed = False
    running = [c for c in children if c.pid is not None]
    while running:
        wait([c.sentinel for c in running])
        for child in [c for c in running if not c.is_alive()]:
            running.remove(child)
            assert child.pid is not None
            multiprocess.mark_process_dead(child.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
            if child.exitcode != 0:
                failed = True
            if not stopping:
                log.error(
                    "gateway process %s exited (status %s); stopping the others",
                    child.name,
                    child.exitcode,
                )
                forward(signal.SIGTERM, None)
                failed = True
    if metrics is not None:
        metrics.stop()
    return 1 if failed else 0
