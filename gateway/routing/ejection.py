"""Passive outlier ejection: consecutive failed generations take a worker out for a backoff."""

from __future__ import annotations

import logging
import time

from gateway.routing.metrics import EJECTIONS, READMISSIONS
from gateway.routing.settings import RoutingSettings
from gateway.routing.worker import WorkerState

log = logging.getLogger(__name__)


class OutlierEjector:
    """Counts failures per worker and ejects a worker after `eject_after_failures` in a row.

    The ejection lasts `eject_base_s`, doubled for each ejection that follows within a quiet
    period, up to `eject_max_s`. An ejected worker is not readmitted when the time is up: the health
    monitor probes it first and calls `readmit` only when the probe succeeds.
    """

    def __init__(self, settings: RoutingSettings) -> None:
        self._settings = settings

    def failure(self, worker: WorkerState) -> None:
        worker.consecutive_failures += 1
        if worker.ejected or worker.consecutive_failures < self._settings.eject_after_failures:
            return
        now = time.monotonic()
        # A worker that behaved for a long while starts again from the base backoff.
        if now - worker.last_ejected > 2 * self._settings.eject_max_s:
            worker.ejections = 0
        worker.ejections += 1
        backoff = min(
            self._settings.eject_base_s * 2 ** (worker.ejections - 1), self._settings.eject_max_s
        )
        worker.ejected_until = now + backoff
        worker.last_ejected = now
        EJECTIONS.inc()
        log.warning(
            "worker %s ejected for %.1f s after %d consecutive failures",
            worker.name,
            backoff,
            worker.consecutive_failures,
        )

    def eject_now(self, worker: WorkerState) -> None:
        """The worker's engine failed fatally: out at once, for the longest backoff.

        It exits and is restarted; the health monitor readmits it only once a probe succeeds.
        """
        if worker.ejected:
            return
        now = time.monotonic()
        worker.ejections += 1
        worker.ejected_until = now + self._settings.eject_max_s
        worker.last_ejected = now
        EJECTIONS.inc()
        log.warning("worker %s ejected: its engine failed fatally", worker.name)

    def success(self, worker: WorkerState) -> None:
        worker.consecutive_failures = 0

    def readmit(self, worker: WorkerState) -> None:
        """The probe of an ejected worker whose backoff is over succeeded."""
        worker.ejected_until = None
        worker.consecutive_failures = 0
        READMISSIONS.inc()
        log.info("worker %s readmitted after a successful probe", worker.name)
