"""Helpers of the router-level tests: settings, a WorkerCall builder, run one generation."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

from llmgateway.worker.v1 import worker_pb2 as pb

from gateway.routing.router import RouteOutcome, Router, WorkerCall
from gateway.routing.settings import RoutingSettings

MODEL = "llama-3.1-8b-instruct"
# Quick health checks and ejections so that suites stay well under a minute.
FAST_ROUTING = RoutingSettings(
    connect_timeout_s=0.5,
    health_check_s=0.05,
    load_report_ms=10,
    eject_after_failures=2,
    eject_base_s=0.3,
    eject_max_s=2.0,
)
StartRouter = Callable[..., Awaitable[Router]]
_ids = itertools.count()


def call(
    prompt: str = "Summarise the ward round",
    *,
    max_tokens: int = 8,
    seed: int = 7,
    **fields: object,
) -> WorkerCall:
    """A WorkerCall for MODEL with a unique request id."""
    message = pb.GenerateRequest(
        request_id=f"req-{next(_ids)}",
        model=MODEL,
        prompt=prompt,
        sampling=pb.SamplingParams(max_tokens=max_tokens, seed=seed),
    )
    return WorkerCall(message=message, **fields)  # type: ignore[arg-type]


async def run(router: Router, worker_call: WorkerCall) -> tuple[str, RouteOutcome]:
    """Route one generation to the end: its text and what routing did."""
    outcome = RouteOutcome()
    text = "".join([m.text async for m in router.generate(worker_call, outcome)])
    return text, outcome
