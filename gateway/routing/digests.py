"""Workers whose model digest differs from the register: logged once per change, counted, shown."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gateway.routing.metrics import DIGEST_MISMATCH
from gateway.routing.worker import WorkerState

log = logging.getLogger(__name__)
_HEALTH_SHOWN = 5  # mismatches listed in health details; the log has every one


class DigestWatch:
    """What the candidate index found when it left a worker out for its digest.

    `observe` is called when a (model, pools, digest) candidate set is built, which happens only
    after the worker list, a worker's GetInfo or the register's digest changed: so a mismatch is
    logged once when it appears and once when it is resolved, never per request. The gauge
    `llmgw_routing_digest_mismatch{model,worker}` is 1 while the worker is left out (its label
    values are bounded by the fleet: one series per worker and model).
    """

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[str, str]] = {}  # (worker, model) -> digests

    def observe(self, model: str, expected: str, workers: Iterable[WorkerState]) -> None:
        """Record which `workers` serving `model` advertise another digest than `expected`."""
        for worker in workers:
            if model not in worker.models:
                continue
            key = (worker.name, model)
            advertised = worker.model_digests.get(model, "")
            previous = self._found.get(key)
            if advertised == expected:
                if previous is not None:
                    del self._found[key]
                    DIGEST_MISMATCH.labels(model=model, worker=worker.name).set(0)
                    log.info("worker %s now serves the registered build of %s", worker.name, model)
                continue
            if previous == (expected, advertised):
                continue
            self._found[key] = (expected, advertised)
            DIGEST_MISMATCH.labels(model=model, worker=worker.name).set(1)
            log.error(
                "worker %s (%s) gets no %s traffic: it advertises digest %s, the model register "
                "approves %s",
                worker.name,
                worker.target,
                model,
                advertised or "none",
                expected,
            )

    def mismatched(self, model: str) -> list[str]:
        """The workers left out for `model` now."""
        return sorted(worker for worker, m in self._found if m == model)

    def health(self) -> dict[str, str]:
        """`routing.digest_mismatch`: the count, and the first few as worker/model/digests."""
        if not self._found:
            return {"routing.digest_mismatch": "0"}
        shown = [
            f"{worker} {model}: advertises {adv or 'none'}, register {exp}"
            for (worker, model), (exp, adv) in sorted(self._found.items())[:_HEALTH_SHOWN]
        ]
        return {
            "routing.digest_mismatch": str(len(self._found)),
            "routing.digest_mismatch_workers": "; ".join(shown),
        }
