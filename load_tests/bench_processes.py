"""Benchmark 2: the gateway as several processes on one port (`server.processes`), 2 vs 1.

Run: ``python -m load_tests.bench_processes [--seconds S] [--concurrency C] [--connections K]``.
The same full gateway (`llm-gateway serve` with the Redis limiter and the audit spool) is
started with `server: {processes: 1}` and then `{processes: 2}`; a closed loop drives each over
`--connections` separate TCP connections (the kernel spreads connections, not calls, over the
processes). Nothing is pinned: the gateway processes, the zero-think-time sim worker, Redis and
this load generator share the machine, so on a 2-core machine the ratio is bounded by the CPU
the worker and the load generator need; the table shows each process tree's CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc

from load_tests import bench_common as bc
from load_tests import procstat
from load_tests.bench_overhead import PROMPT


async def measure(
    processes: int, worker: bc.Child, redis_url: str, args: argparse.Namespace
) -> list[object]:
    stack = await bc.start_gateway(
        [worker.target],
        Path(tempfile.mkdtemp(prefix=f"bench-processes-{processes}-")),
        None,
        redis_url=redis_url,
        processes=processes,
    )
    channels = [
        grpc.aio.insecure_channel(
            stack.child.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(args.connections)
    ]
    try:
        stubs = itertools.cycle([pb_grpc.InferenceServiceStub(c) for c in channels])
        request = pb.GenerateRequest(
            model=bc.MODEL, prompt=PROMPT, sampling=pb.SamplingParams(max_tokens=args.tokens)
        )

        async def call() -> int:
            reply = await next(stubs).Generate(request, metadata=stack.metadata)
            return int(reply.usage.completion_tokens)

        await bc.closed_loop(call, args.concurrency, args.warmup)
        serving = _serving_processes(stack.child.pid)
        gw_cpu, w_cpu = stack.child.cpu_seconds(), worker.cpu_seconds()
        loop = await bc.closed_loop(call, args.concurrency, args.seconds)
        gw_share = (stack.child.cpu_seconds() - gw_cpu) / loop.seconds
        w_share = (worker.cpu_seconds() - w_cpu) / loop.seconds
        return [f"{processes} process(es)", serving, loop.rate, gw_share, w_share]
    finally:
        for channel in channels:
            await channel.close()
        stack.child.stop()


def _serving_processes(pid: int) -> int:
    """Gateway processes serving calls: the spawned children, or the process itself."""
    spawned = 0
    for child in procstat.tree_pids(pid)[1:]:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        spawned += b"spawn_main" in cmdline
    return spawned or 1


async def run(args: argparse.Namespace) -> list[list[object]]:
    redis, redis_url = bc.start_redis(None)
    worker = await bc.start_worker({"max_num_seqs": 256}, None)
    try:
        return [await measure(n, worker, redis_url, args) for n in (1, 2)]
    finally:
        worker.stop()
        redis.stop()


def report(rows: list[list[object]]) -> None:
    bc.print_table(
        ["gateway", "processes seen", "req/s", "gateway CPUs busy", "worker CPUs busy"], rows
    )
    one, two = float(rows[0][2]), float(rows[1][2])  # type: ignore[arg-type]
    print(f"2 processes / 1 process: {two / one:.2f}x (goal >= 1.8 on a machine with spare cores)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    report(asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
