"""A known mix of requests, each on a new connection, and the scraped totals it must produce."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth.devkeys import mint_dev_token
from tests.gateway.observability.scrape import sample_total
from tests.helpers import ROOT, bearer

LLAMA = "llama-3.1-8b-instruct"
LIMITS_POLICY = ROOT / "tests" / "fixtures" / "limits_policy"
# Department `rate` allows 5 requests per minute per user and data up to `internal`.
DEPARTMENT = "rate"
SERVED_TOKENS = 8  # max_tokens of every served request: the simulated engine produces them all
PROMPTS = ("Summarise the ward round", "Plan the shift")
# One round, by (outcome, gRPC status): what `send_round` sends and the gateway must count.
ROUND = Counter(
    {
        ("denied", "PERMISSION_DENIED"): 2,
        ("ok", "OK"): 5,
        ("rate_limited", "RESOURCE_EXHAUSTED"): 2,
        ("cancelled", "CANCELLED"): 1,
    }
)
REQUESTS_PER_ROUND = sum(ROUND.values())


@dataclass
class MixGateway:
    """A running gateway of `processes` processes, as the known-mix test sees it."""

    target: str
    metrics_url: str
    processes: int
    data_dir: Path  # holds the development key its tokens are signed with
    # Every access log line written so far, as JSON objects (with the writer's `process` name).
    access_lines: Callable[[], list[dict[str, Any]]]
    # Empties the limiter, so that the next round meets the same limits as the first.
    fresh_limits: Callable[[], None]

    def token(self, subject: str) -> str:
        return mint_dev_token(self.data_dir, department=DEPARTMENT, subject=subject)


def _request(**fields: object) -> pb.GenerateRequest:
    base: dict[str, object] = {
        "model": LLAMA,
        "prompt": PROMPTS[0],
        "sampling": pb.SamplingParams(max_tokens=SERVED_TOKENS, seed=1),
    }
    base.update(fields)
    return pb.GenerateRequest(**base)  # type: ignore[arg-type]


def _connect(gateway: MixGateway) -> grpc.aio.Channel:
    """A new connection, so that the kernel picks a process for it (SO_REUSEPORT)."""
    return grpc.aio.insecure_channel(
        gateway.target, options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def _generate(
    gateway: MixGateway, request: pb.GenerateRequest, token: str
) -> pb.GenerateResponse:
    async with _connect(gateway) as channel:
        stub = gateway_pb2_grpc.InferenceServiceStub(channel)
        response: pb.GenerateResponse = await stub.Generate(
            request, metadata=bearer(token), timeout=30
        )
        return response


async def _refused(
    gateway: MixGateway, request: pb.GenerateRequest, token: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _generate(gateway, request, token)
    assert refused.value.code() == code, refused.value.details()


async def send_round(gateway: MixGateway) -> None:
    """Send ROUND, every request on a new connection, in an order that makes outcomes certain."""
    alice, bob = gateway.token("alice"), gateway.token("bob")
    # Refused by policy (health data is above the department's clearance): no rate used.
    for _ in range(2):
        await _refused(
            gateway, _request(classification="health"), alice, grpc.StatusCode.PERMISSION_DENIED
        )
    # Served up to the user's per-minute limit, then refused by the limit.
    for _ in range(5):
        response = await _generate(gateway, _request(), alice)
        assert response.usage.completion_tokens == SERVED_TOKENS
    for _ in range(2):
        await _refused(gateway, _request(), alice, grpc.StatusCode.RESOURCE_EXHAUSTED)
    # Cancelled by its caller after the first token.
    async with _connect(gateway) as channel:
        call = gateway_pb2_grpc.InferenceServiceStub(channel).GenerateStream(
            pb.GenerateStreamRequest(
                model=LLAMA, prompt=PROMPTS[1], sampling=pb.SamplingParams(max_tokens=2000)
            ),
            metadata=bearer(bob),
            timeout=30,
        )
        await call.read()
        call.cancel()


Totals = dict[tuple[str, ...], float]


def requests_by_outcome(text: str) -> Totals:
    """llmgw_requests_total of DEPARTMENT by (model, outcome, gRPC status), all interfaces."""
    return _by_labels(text, "llmgw_requests_total", ("model", "outcome", "grpc_status"))


def _by_labels(text: str, name: str, keys: tuple[str, ...]) -> Totals:
    totals: Totals = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("department", DEPARTMENT) == DEPARTMENT:
                totals[tuple(sample.labels.get(k, "") for k in keys)] += sample.value
    return totals


def _delta(after: Totals, before: Totals) -> Totals:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def all_counted(before: str, after: str, rounds: int, lines: list[dict[str, Any]]) -> bool:
    """Whether every request of `rounds` rounds has ended in the gateway. A cancelled call ends
    a moment after its caller left; a request's audit record is written after its metrics and
    its access line, so a scrape can see the one without the other."""
    cancelled = (LLAMA, "cancelled", "CANCELLED")
    now, then = requests_by_outcome(after), requests_by_outcome(before)
    appends = "llmgw_audit_spool_appends_total"
    return (
        now.get(cancelled, 0.0) - then.get(cancelled, 0.0) == rounds
        and len(lines) == REQUESTS_PER_ROUND * rounds
        and sample_total(after, appends) - sample_total(before, appends) == len(lines)
    )


def assert_totals(before: str, after: str, rounds: int, lines: list[dict[str, Any]]) -> None:
    """The scrape `after` minus the scrape `before` counts exactly `rounds` rounds of ROUND."""
    expected = {(LLAMA, *key): n * rounds for key, n in ROUND.items()}
    assert _delta(requests_by_outcome(after), requests_by_outcome(before)) == expected

    # Every request's duration, by error type ("" when served).
    duration = "gen_ai_server_request_duration_seconds_count"
    keys = ("gen_ai_request_model", "error_type")
    by_error = _delta(_by_labels(after, duration, keys), _by_labels(before, duration, keys))
    assert by_error == {
        (LLAMA, "" if status == "OK" else status): n * rounds for (_, status), n in ROUND.items()
    }

    # A first token for every served request and every cancelled stream (cancelled after it).
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    first_tokens = _delta(_by_labels(after, ttft, keys[:1]), _by_labels(before, ttft, keys[:1]))
    assert first_tokens == {
        (LLAMA,): (ROUND["ok", "OK"] + ROUND["cancelled", "CANCELLED"]) * rounds
    }

    # One access line per request, with no prompt text and no token in it.
    assert len(lines) == REQUESTS_PER_ROUND * rounds
    assert Counter((line["outcome"], line["grpc_status"]) for line in lines) == {
        key: n * rounds for key, n in ROUND.items()
    }
    for line in lines:
        assert line["request_id"] and line["department"] == DEPARTMENT and line["model"] == LLAMA
        text = json.dumps(line)
        assert not any(prompt in text for prompt in PROMPTS)
        assert "Bearer" not in text and "eyJ" not in text  # no JWT (base64 of '{"')
    served = [line for line in lines if line["outcome"] == "ok"]
    assert {line["output_tokens"] for line in served} == {SERVED_TOKENS}

    # Token totals and the GenAI token usage histogram: what the access lines report, the served
    # requests' 8 each plus what the cancelled streams produced before they were cancelled.
    with_tokens = [line for line in lines if line["input_tokens"] or line["output_tokens"]]
    assert len(with_tokens) >= len(served)
    for kind in ("input", "output"):
        reported = sum(line[f"{kind}_tokens"] for line in lines)
        labels = {"department": DEPARTMENT, "model": LLAMA, "gen_ai_token_type": kind}
        tokens = sample_total(after, "llmgw_tokens_total", labels) - sample_total(
            before, "llmgw_tokens_total", labels
        )
        assert tokens == reported, kind
        usage = {"gen_ai_request_model": LLAMA, "gen_ai_token_type": kind}
        count, total = (
            sample_total(after, f"gen_ai_client_token_usage_{part}", usage)
            - sample_total(before, f"gen_ai_client_token_usage_{part}", usage)
            for part in ("count", "sum")
        )
        assert (count, total) == (len(with_tokens), reported), kind
    assert sum(line["output_tokens"] for line in served) == SERVED_TOKENS * 5 * rounds

    # Every request left an audit record in the (per-process) local spool.
    appends = "llmgw_audit_spool_appends_total"
    assert sample_total(after, appends) - sample_total(before, appends) == len(lines)
