"""Benchmark 4: gateway memory with many concurrent open streams, sampled over time.

Run: ``python -m load_tests.bench_memory [--streams 2000] [--seconds 600]``. A slow sim worker
(one token per `--itl-ms`, a batch slot for every stream) keeps `--streams` generations open
through the full gateway (Redis limiter, audit spool) for `--seconds`; the gateway's RSS is
sampled every `--interval` seconds. Prints idle RSS, RSS once every stream is open, the peak,
the last sample and the growth between the first and last minute (or half) of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc

from load_tests import bench_common as bc
from load_tests import procstat

MB = 1024 * 1024
CHANNELS = 8  # several HTTP/2 connections, as many clients would open


async def run(args: argparse.Namespace) -> dict[str, float]:
    children: list[bc.Child] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        redis, redis_url = bc.start_redis(None)
        children.append(redis)
        # One sim worker process holds at most ~1,000 streams (its gRPC server sends GOAWAY
        # near 1,300), so the streams are spread over several workers.
        workers = []
        for _ in range(args.workers):
            worker = await bc.start_worker(
                {
                    "time_to_first_token_ms": 0,
                    "inter_token_latency_ms": args.itl_ms,
                    "slowdown_per_sequence": 0.0,
                    "max_num_seqs": args.streams // args.workers + 64,
                    "context_length": 1_000_000,
                },
                None,
            )
            children.append(worker)
            workers.append(worker.target)
        stack = await bc.start_gateway(
            workers,
            Path(tempfile.mkdtemp(prefix="bench-memory-")),
            None,
            redis_url=redis_url,
        )
        children.append(stack.child)
        idle = procstat.rss_bytes(stack.child.pid)
        # Enough tokens that no stream ends before the run does.
        max_tokens = int(args.seconds * 1000 / args.itl_ms) + 100
        request = pb.GenerateStreamRequest(
            model=bc.MODEL,
            prompt="Keep the ward log.",
            sampling=pb.SamplingParams(max_tokens=max_tokens),
        )
        # A local subchannel pool: each channel its own TCP connection, as separate clients.
        channels = [
            grpc.aio.insecure_channel(
                stack.child.target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(CHANNELS)
        ]
        stubs: list[pb_grpc.InferenceServiceAsyncStub] = [
            pb_grpc.InferenceServiceStub(c) for c in channels
        ]
        first_token = 0
        tokens = 0

        async def hold(stub: pb_grpc.InferenceServiceAsyncStub) -> None:
            nonlocal first_token, tokens
            started = False
            async for message in stub.GenerateStream(request, metadata=stack.metadata):
                if message.token_count and not started:
                    started = True
                    first_token += 1
                tokens += message.token_count

        for i in range(args.streams):
            tasks.append(asyncio.create_task(hold(stubs[i % CHANNELS])))
        deadline = time.monotonic() + 60
        while first_token < args.streams:
            if time.monotonic() > deadline or any(t.done() for t in tasks):
                _raise_first_failure(tasks)
                raise RuntimeError(f"only {first_token} of {args.streams} streams started")
            await asyncio.sleep(0.1)
        open_rss = procstat.rss_bytes(stack.child.pid)
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.seconds:
            if any(t.done() for t in tasks):
                _raise_first_failure(tasks)
                raise RuntimeError("a stream ended before the run did")
            samples.append((elapsed, procstat.rss_bytes(stack.child.pid)))
            await asyncio.sleep(args.interval)
        samples.append((time.monotonic() - started, procstat.rss_bytes(stack.child.pid)))
        window = min(60.0, args.seconds / 2)
        early = [r for t, r in samples if t <= window]
        late = [r for t, r in samples if t >= samples[-1][0] - window]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
        return {
            "streams": args.streams,
            "seconds": samples[-1][0],
            "samples": len(samples),
            "tokens": tokens,
            "idle_mb": idle / MB,
            "open_mb": open_rss / MB,
            "peak_mb": max(r for _, r in samples) / MB,
            "last_mb": samples[-1][1] / MB,
            "growth_mb": (max(late) - max(early)) / MB,
            "kb_per_stream": (open_rss - idle) / 1024 / args.streams,
        }
    finally:
        for task in tasks:
            task.cancel()
        for child in reversed(children):
            child.stop()


def _raise_first_failure(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError("a stream failed") from task.exception()


def report(r: dict[str, float]) -> None:
    bc.print_table(
        ["open streams", "run s", "samples", "idle RSS MB", "all open MB", "peak MB", "last MB",
         "late-early MB", "KB/stream"],
        [[int(r["streams"]), r["seconds"], int(r["samples"]), r["idle_mb"], r["open_mb"],
          r["peak_mb"], r["last_mb"], r["growth_mb"], r["kb_per_stream"]]],
    )  # fmt: skip
    print(f"peak gateway RSS {r['peak_mb']:.0f} MB (goal <= 200 MB); {int(r['tokens'])} tokens")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=4, help="sim worker processes")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--itl-ms", type=float, default=1000.0, help="worker's inter-token latency")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    report(asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
