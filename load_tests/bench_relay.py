"""Benchmark 3: token relay, streaming through the gateway vs straight from the worker.

Run: ``python -m load_tests.bench_relay [--streams 64] [--tokens 512] [--seconds S]``.
`--streams` callers each stream generations of `--tokens` tokens back to back from one
zero-think-time sim worker, first directly, then through the full gateway (on its own CPU).
Tokens relayed per second of gateway CPU is the relay's capacity per core; messages per stream
on both paths show that the gateway forwards the worker's coalesced messages without splitting
them. Time to first token is measured unloaded (one stream at a time) on both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc
from llmgateway.worker.v1 import worker_pb2 as wpb
from llmgateway.worker.v1 import worker_pb2_grpc as wpb_grpc

from load_tests import bench_common as bc
from load_tests import procstat

PROMPT = "Write the discharge letter for the general practitioner."


@dataclass
class Row:
    """One path's figures."""

    name: str
    tokens_per_s: float
    messages: int
    tokens: int
    cpu_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float

    @property
    def tokens_per_message(self) -> float:
        return self.tokens / max(self.messages, 1)

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_s if self.cpu_s else float("nan")


@dataclass
class Counts:
    messages: int = 0


Stream = "grpc.aio.UnaryStreamCall[object, object]"


async def measure(
    name: str, open_stream: object, server: bc.Child, args: argparse.Namespace
) -> Row:
    counts = Counts()

    async def stream_once() -> int:
        tokens = 0
        async for message in open_stream():  # type: ignore[operator]
            counts.messages += 1
            tokens += message.token_count
        return tokens

    async def first_token() -> float:
        # The whole stream is read: a cancelled one would still be winding down in the
        # server while the next sample starts.
        started = time.perf_counter()
        first = 0.0
        async for message in open_stream():  # type: ignore[operator]
            if message.token_count and not first:
                first = time.perf_counter() - started
        return first

    await bc.closed_loop(stream_once, args.streams, args.warmup)
    counts.messages = 0
    cpu_before = server.cpu_seconds()
    loop = await bc.closed_loop(stream_once, args.streams, args.seconds)
    cpu = server.cpu_seconds() - cpu_before
    ttfts = [await first_token() for _ in range(args.ttft_samples)]
    return Row(
        name,
        loop.unit_rate,
        counts.messages,
        loop.units,
        cpu,
        bc.percentile(ttfts, 50) * 1000,
        bc.percentile(ttfts, 99) * 1000,
    )


async def run(args: argparse.Namespace) -> list[Row]:
    gateway_cpus, other_cpus = procstat.cpu_sets()
    procstat.pin(0, other_cpus)
    children: list[bc.Child] = []
    try:
        redis, redis_url = bc.start_redis(other_cpus)
        children.append(redis)
        worker = await bc.start_worker({"max_num_seqs": args.streams * 2}, other_cpus)
        children.append(worker)
        stack = await bc.start_gateway(
            [worker.target],
            Path(tempfile.mkdtemp(prefix="bench-relay-")),
            gateway_cpus,
            redis_url=redis_url,
        )
        children.append(stack.child)
        async with (
            grpc.aio.insecure_channel(worker.target) as w_channel,
            grpc.aio.insecure_channel(stack.child.target) as g_channel,
        ):
            w_stub = wpb_grpc.WorkerServiceStub(w_channel)
            g_stub = pb_grpc.InferenceServiceStub(g_channel)
            w_request = wpb.GenerateRequest(
                model=bc.MODEL, prompt=PROMPT, sampling=wpb.SamplingParams(max_tokens=args.tokens)
            )
            g_request = pb.GenerateStreamRequest(
                model=bc.MODEL, prompt=PROMPT, sampling=pb.SamplingParams(max_tokens=args.tokens)
            )
            rows = [
                await measure("worker directly", lambda: w_stub.Generate(w_request), worker, args),
                await measure(
                    "through the gateway",
                    lambda: g_stub.GenerateStream(g_request, metadata=stack.metadata),
                    stack.child,
                    args,
                ),
            ]
    finally:
        for child in reversed(children):
            child.stop()
    return rows


def report(rows: list[Row], streams: int) -> None:
    direct, gateway = rows
    bc.print_table(
        ["path", "tokens/s", "tokens/msg", "server CPU s", "tokens per server CPU s",
         "TTFT p50 ms", "TTFT p99 ms"],
        [
            [r.name, r.tokens_per_s, r.tokens_per_message, r.cpu_s, r.tokens_per_cpu_s,
             r.ttft_p50_ms, r.ttft_p99_ms]
            for r in rows
        ],
    )  # fmt: skip
    print(
        f"gateway relay at {streams} streams: {gateway.tokens_per_cpu_s:,.0f} tokens/s per "
        f"gateway core (goal >= 50,000); throughput "
        f"{gateway.tokens_per_s / direct.tokens_per_s:.2f} x direct; "
        f"TTFT p50 +{gateway.ttft_p50_ms - direct.ttft_p50_ms:.2f} ms"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=512, help="max_tokens per generation")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--ttft-samples", type=int, default=200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    report(asyncio.run(run(args)), args.streams)


if __name__ == "__main__":
    main()
