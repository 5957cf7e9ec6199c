"""Benchmark: CPU per request of the OpenAI-compatible HTTP door against the gRPC door.

Run: ``python -m load_tests.bench_http [--seconds S] [--rounds R] [--concurrency C]``.
One gateway process (dev-key JWT, the `bench` department's policy, in-process limiter, durable
audit spool, tracing off) serves both doors from one zero-think-time sim worker; the gateway
runs on its own CPU, the load generator and the worker on the other. Four targets are measured
in interleaved rounds (so the shared VM's drifts hit them alike): unary gRPC `Generate`, a
non-streaming chat completion, gRPC `GenerateStream` and a streamed chat completion (SSE with
usage). The table gives closed-loop throughput, the gateway's CPU per request and each HTTP
target's CPU per request as a ratio of its gRPC counterpart measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc

from load_tests import bench_common as bc
from load_tests import procstat

PROMPT = (
    "Summarise the ward round for the handover: two admissions, one discharge planned for "
    "tomorrow morning, medication review pending for bed four."
)


@dataclass
class Tally:
    """What one target did over every round: calls, seconds, gateway CPU seconds."""

    calls: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / max(self.calls, 1) * 1e6


async def measure(
    targets: list[tuple[str, bc.Call]], gateway: bc.Child, args: argparse.Namespace
) -> list[Tally]:
    for _, call in targets:
        await bc.closed_loop(call, args.concurrency, args.warmup)
    tallies = [Tally() for _ in targets]
    for _ in range(args.rounds):
        for (_, call), tally in zip(targets, tallies, strict=True):
            before = gateway.cpu_seconds()
            loop = await bc.closed_loop(call, args.concurrency, args.seconds / args.rounds)
            tally.cpu_s += gateway.cpu_seconds() - before
            tally.calls += loop.calls
            tally.seconds += loop.seconds
    return tallies


async def run(args: argparse.Namespace) -> list[tuple[str, Tally]]:
    gateway_cpus, other_cpus = procstat.cpu_sets()
    procstat.pin(0, other_cpus)
    children: list[bc.Child] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    http_port = bc.free_port()
    try:
        worker = await bc.start_worker({"max_num_seqs": 256}, other_cpus)
        children.append(worker)
        stack = await bc.start_gateway(
            [worker.target], workdir / "gateway", gateway_cpus, http_port=http_port
        )
        children.append(stack.child)
        url = f"http://127.0.0.1:{http_port}/v1/chat/completions"
        sampling = pb.SamplingParams(max_tokens=args.tokens)
        chat = pb.ChatInput(messages=[pb.ChatMessage(role=pb.ROLE_USER, content=PROMPT)])
        unary = pb.GenerateRequest(model=bc.MODEL, chat=chat, sampling=sampling)
        streamed = pb.GenerateStreamRequest(model=bc.MODEL, chat=chat, sampling=sampling)
        body = {
            "model": bc.MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": args.tokens,
        }
        stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        headers = {"Authorization": f"Bearer {stack.token}"}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with (
            grpc.aio.insecure_channel(stack.child.target) as channel,
            aiohttp.ClientSession(headers=headers, connector=connector) as session,
        ):
            stub = pb_grpc.InferenceServiceStub(channel)

            async def grpc_unary() -> int:
                reply = await stub.Generate(unary, metadata=stack.metadata)
                return int(reply.usage.completion_tokens)

            async def grpc_stream() -> int:
                tokens = 0
                async for message in stub.GenerateStream(streamed, metadata=stack.metadata):
                    tokens += message.token_count
                return tokens

            async def http_unary() -> int:
                async with session.post(url, json=body) as response:
                    answer = await response.json()
                return int(answer["usage"]["completion_tokens"])

            async def http_stream() -> int:
                tokens = 0
                async with session.post(url, json=stream_body) as response:
                    async for line in response.content:
                        if line.startswith(b"data: {") and b'"usage":{' in line:
                            tokens = json.loads(line[6:])["usage"]["completion_tokens"]
                return tokens

            targets: list[tuple[str, bc.Call]] = [
                ("gRPC Generate", grpc_unary),
                ("HTTP chat completion", http_unary),
                ("gRPC GenerateStream", grpc_stream),
                ("HTTP chat completion, SSE", http_stream),
            ]
            for name, call in targets:
                if await call() != args.tokens:
                    raise RuntimeError(f"{name}: did not return {args.tokens} tokens")
            tallies = await measure(targets, stack.child, args)
    finally:
        for child in reversed(children):
            child.stop()
    return [(name, tally) for (name, _), tally in zip(targets, tallies, strict=True)]


def report(rows: list[tuple[str, Tally]]) -> None:
    cells = []
    for i, (name, tally) in enumerate(rows):
        baseline = rows[i - i % 2][1]  # each HTTP row follows its gRPC counterpart
        cells.append([name, tally.rate, tally.cpu_us, tally.cpu_us / baseline.cpu_us])
    bc.print_table(["target", "req/s", "gateway CPU us/req", "CPU vs gRPC"], cells)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="closed loop per target, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved measurement rounds")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens of each generation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    report(asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
