"""Benchmark 1: what the gateway's request path costs, against a bare hop and the worker itself.

Run: ``python -m load_tests.bench_overhead [--seconds S] [--concurrency C] [--unloaded N]``.
Three targets answer the same generation from one zero-think-time sim worker: the worker called
directly, a bare grpc.aio pass-through proxy (one hop, no logic), and the full gateway (dev-key
JWT, policy, Redis limiter on a real redis-server, durable audit spool, tracing off). The proxy
and the gateway run on their own CPU; the load generator, the worker and Redis on the other.
Prints closed-loop throughput, the hop's CPU per request, unloaded latency p50/p99 and the
ratios the project's goals are stated in. The targets are measured in interleaved rounds, so the
shared VM's drifts in speed affect them alike. A fourth target is the same gateway with request
metrics off (LLMGW_REQUEST_METRICS=0): the CPU difference is what recording them costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc
from llmgateway.worker.v1 import worker_pb2 as wpb
from llmgateway.worker.v1 import worker_pb2_grpc as wpb_grpc

from load_tests import bench_common as bc
from load_tests import procstat

PROMPT = (
    "Summarise the ward round for the handover: two admissions, one discharge planned for "
    "tomorrow morning, medication review pending for bed four."
)


@dataclass
class Row:
    """One target's figures."""

    name: str
    rate: float
    cpu_us: float
    p50_ms: float
    p99_ms: float
    main_thread_cpu_us: float


@dataclass
class Tally:
    """What one target did over every round: calls, seconds, server CPU, unloaded latencies."""

    calls: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    main_thread_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def measure(
    targets: list[tuple[str, bc.Call, bc.Child]], args: argparse.Namespace
) -> list[Row]:
    """Warm up, then `--rounds` rounds: in each, every target in turn runs a closed loop
    (throughput, server CPU per call) and a share of the sequential calls (unloaded latency).

    The shared VM's speed drifts over tens of seconds; interleaving short windows makes every
    target see the same drift, so the ratios between targets hold better than with one long
    window per target.
    """
    for _, call, _ in targets:
        await bc.closed_loop(call, args.concurrency, args.warmup)
    tallies = [Tally() for _ in targets]
    for _ in range(args.rounds):
        for (_, call, server), tally in zip(targets, tallies, strict=True):
            cpu_before, main_before = server.cpu_seconds(), server.main_thread_cpu_seconds()
            loop = await bc.closed_loop(call, args.concurrency, args.seconds / args.rounds)
            tally.cpu_s += server.cpu_seconds() - cpu_before
            tally.main_thread_cpu_s += server.main_thread_cpu_seconds() - main_before
            tally.calls += loop.calls
            tally.seconds += loop.seconds
            tally.latencies += await bc.sequential(call, args.unloaded // args.rounds)
    return [
        Row(
            name,
            t.calls / t.seconds,
            t.cpu_s / max(t.calls, 1) * 1e6,
            bc.percentile(t.latencies, 50) * 1000,
            bc.percentile(t.latencies, 99) * 1000,
            t.main_thread_cpu_s / max(t.calls, 1) * 1e6,
        )
        for (name, _, _), t in zip(targets, tallies, strict=True)
    ]


async def run(args: argparse.Namespace) -> list[Row]:
    gateway_cpus, other_cpus = procstat.cpu_sets()
    procstat.pin(0, other_cpus)
    children: list[bc.Child] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        redis, redis_url = bc.start_redis(other_cpus)
        children.append(redis)
        worker = await bc.start_worker({"max_num_seqs": 256}, other_cpus)
        children.append(worker)
        proxy = await bc.start_proxy(worker.target, gateway_cpus)
        children.append(proxy)
        stack = await bc.start_gateway(
            [worker.target], workdir / "gateway", gateway_cpus, redis_url=redis_url
        )
        children.append(stack.child)
        os.environ["LLMGW_REQUEST_METRICS"] = "0"  # the child process inherits it
        try:
            quiet = await bc.start_gateway(
                [worker.target], workdir / "gateway-quiet", gateway_cpus, redis_url=redis_url
            )
        finally:
            del os.environ["LLMGW_REQUEST_METRICS"]
        children.append(quiet.child)
        sampling = pb.SamplingParams(max_tokens=args.tokens)
        request = pb.GenerateRequest(model=bc.MODEL, prompt=PROMPT, sampling=sampling)
        worker_request = wpb.GenerateRequest(
            model=bc.MODEL, prompt=PROMPT, sampling=wpb.SamplingParams(max_tokens=args.tokens)
        )
        async with (
            grpc.aio.insecure_channel(worker.target) as w_channel,
            grpc.aio.insecure_channel(proxy.target) as p_channel,
            grpc.aio.insecure_channel(stack.child.target) as g_channel,
            grpc.aio.insecure_channel(quiet.child.target) as q_channel,
        ):
            w_stub = wpb_grpc.WorkerServiceStub(w_channel)
            p_stub = pb_grpc.InferenceServiceStub(p_channel)
            g_stub = pb_grpc.InferenceServiceStub(g_channel)
            q_stub = pb_grpc.InferenceServiceStub(q_channel)

            async def direct() -> int:
                tokens = 0
                async for message in w_stub.Generate(worker_request):
                    tokens += message.token_count
                return tokens

            async def bare() -> int:
                reply = await p_stub.Generate(request)
                return int(reply.usage.completion_tokens)

            async def full() -> int:
                reply = await g_stub.Generate(request, metadata=stack.metadata)
                return int(reply.usage.completion_tokens)

            async def no_metrics() -> int:
                reply = await q_stub.Generate(request, metadata=quiet.metadata)
                return int(reply.usage.completion_tokens)

            calls = (("worker", direct), ("bare", bare), ("full", full), ("quiet", no_metrics))
            for name, call in calls:
                if await call() != args.tokens:
                    raise RuntimeError(f"{name}: did not return {args.tokens} tokens")
            rows = await measure(
                [
                    ("worker directly", direct, worker),
                    ("bare grpc.aio hop", bare, proxy),
                    ("full gateway", full, stack.child),
                    ("gateway, metrics off", no_metrics, quiet.child),
                ],
                args,
            )
    finally:
        for child in reversed(children):
            child.stop()
    return rows


def report(rows: list[Row]) -> None:
    direct, bare, full, quiet = rows
    bc.print_table(
        ["target", "req/s", "server CPU us/req", "unloaded p50 ms", "p99 ms", "+p50 ms", "+p99 ms"],
        [
            [r.name, r.rate, r.cpu_us, r.p50_ms, r.p99_ms,
             r.p50_ms - direct.p50_ms, r.p99_ms - direct.p99_ms]
            for r in rows
        ],
    )  # fmt: skip
    print(
        f"full/bare throughput: {full.rate / bare.rate:.2f} (goal >= 0.75); "
        f"per gateway core (1/CPU per request): {1e6 / full.cpu_us:,.0f} vs "
        f"{1e6 / bare.cpu_us:,.0f} req/s, ratio {bare.cpu_us / full.cpu_us:.2f}"
    )
    print(
        "server CPU per request in the main thread (event loop) / all other threads (gRPC core, "
        f"audit spool writer): bare hop {bare.main_thread_cpu_us:,.0f} / "
        f"{bare.cpu_us - bare.main_thread_cpu_us:,.0f} us, gateway {full.main_thread_cpu_us:,.0f}"
        f" / {full.cpu_us - full.main_thread_cpu_us:,.0f} us"
    )
    print(
        f"request metrics: {full.cpu_us - quiet.cpu_us:+,.1f} us CPU per request, "
        f"{(full.cpu_us - quiet.cpu_us) / full.cpu_us:+.1%} of the gateway's CPU per request "
        "(goal < 5 %)"
    )
    print(
        f"added latency over the worker: p50 +{full.p50_ms - direct.p50_ms:.2f} ms (goal <= 1.0),"
        f" p99 +{full.p99_ms - direct.p99_ms:.2f} ms (goal <= 2.0)"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="closed loop per target, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--unloaded", type=int, default=2000, help="sequential calls for latency")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of each generation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    report(asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
