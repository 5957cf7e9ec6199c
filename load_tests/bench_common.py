"""Shared by the gateway benchmarks: server processes, a bare pass-through proxy, timing, tables.

Every server a benchmark measures runs in its own process (the benchmark process is the load
generator), pinned to a CPU when the machine has two or more, so that the gateway's CPU time can
be read from /proc and compared with a baseline measured in the same run.

Run as a module to serve one of the benchmark's own processes:
``python -m load_tests.bench_common worker --port P [--sim JSON]`` (a sim worker with the given
`SimConfig` fields) or ``python -m load_tests.bench_common proxy --port P --worker HOST:PORT``
(the bare grpc.aio hop: InferenceService in front of one worker, no logic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc
from llmgateway.worker.v1 import worker_pb2 as wpb
from llmgateway.worker.v1 import worker_pb2_grpc as wpb_grpc

from common.eventloop import run_event_loop
from gateway.auth.devkeys import dev_auth_settings, mint_dev_token
from load_tests.procstat import cpu_seconds, main_thread_cpu_seconds, pin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DEFAULTS = ROOT / "policy" / "examples" / "health-region" / "defaults.yaml"
MODEL = "llama-3.1-8b-instruct"
# Zero think time: the worker answers as fast as its process can, so the hop's cost shows.
ZERO_THINK = {"time_to_first_token_ms": 0, "inter_token_latency_ms": 0, "prefill_ms_per_token": 0}
START_TIMEOUT_S = 30.0

# A department whose limits are real numbers (so the limiter runs every check) set far above
# what a benchmark reaches; the guard scans each prompt as in the example policy.
BENCH_DEPARTMENT = """\
version: 1
department: bench
models: [general]
tokens: {max_prompt: 32768, max_output: 8192, default_output: 64, on_excess: clamp}
data: {allowed: [public, internal], default: internal}
priority: standard
limits:
  on_limiter_failure: closed
  department:
    requests_per_minute: 100000000
    concurrent_streams: 1000000
    tokens_per_minute: 100000000000
  user:
    requests_per_minute: 100000000
    concurrent_streams: 1000000
    tokens_per_day: 100000000000
audit: {content: hashes, required: true}
"""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A server process the benchmark started; `stop()` terminates its whole group."""

    name: str
    process: subprocess.Popen[bytes]
    target: str
    workdir: Path | None = None
    log: Path | None = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what the process wrote to stderr."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def main_thread_cpu_seconds(self) -> float:
        return main_thread_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.log is not None and os.environ.get("BENCH_KEEP_LOGS") is None:
            self.log.unlink(missing_ok=True)


def _spawn(name: str, argv: Sequence[str], target: str, cpus: set[int] | None) -> Child:
    # stderr goes to a file, not a pipe: a chatty child must never block on a full pipe.
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        list(argv), start_new_session=True, stdout=subprocess.DEVNULL, stderr=log
    )
    log.close()
    pin(process.pid, cpus)
    return Child(name, process, target, log=Path(log.name))


def _fail_if_dead(child: Child) -> None:
    if child.process.poll() is not None:
        raise RuntimeError(
            f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
        )


async def wait_serving(child: Child, *, health: bool = True) -> None:
    """Wait until `child` accepts connections (and reports SERVING when `health`)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with grpc.aio.insecure_channel(child.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            _fail_if_dead(child)
            try:
                if not health:
                    await asyncio.wait_for(channel.channel_ready(), 0.5)
                    return
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except (grpc.aio.AioRpcError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not start within {START_TIMEOUT_S} s")
            await asyncio.sleep(0.1)


def child_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "load_tests.bench_common", role, *args]


async def start_worker(sim: dict[str, Any], cpus: set[int] | None) -> Child:
    """A sim worker process (zero think time unless `sim` says otherwise)."""
    port = free_port()
    config = {**ZERO_THINK, **sim}
    child = _spawn(
        "worker",
        child_argv("worker", "--port", str(port), "--sim", json.dumps(config)),
        f"127.0.0.1:{port}",
        cpus,
    )
    await wait_serving(child)
    return child


async def start_proxy(worker: str, cpus: set[int] | None) -> Child:
    """The bare pass-through proxy in front of `worker`."""
    port = free_port()
    child = _spawn(
        "bare proxy",
        child_argv("proxy", "--port", str(port), "--worker", worker),
        f"127.0.0.1:{port}",
        cpus,
    )
    await wait_serving(child, health=False)
    return child


def start_redis(cpus: set[int] | None) -> tuple[Child, str]:
    """A real redis-server without persistence; returns it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH: install Debian's redis-server")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(workdir)]  # fmt: skip
    child = _spawn("redis", argv, f"127.0.0.1:{port}", cpus)
    child.workdir = workdir
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        _fail_if_dead(child)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return child, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not answer PING")
        time.sleep(0.05)


@dataclass
class GatewayStack:
    """A gateway started with `llm-gateway serve`, its data directory and a caller's token."""

    child: Child
    token: str
    data_dir: Path

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def write_bench_policy(directory: Path) -> Path:
    """The example region's defaults plus the `bench` department."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_DEFAULTS, directory / "defaults.yaml")
    (directory / "bench.yaml").write_text(BENCH_DEPARTMENT)
    return directory


async def start_gateway(
    workers: Sequence[str],
    data_dir: Path,
    cpus: set[int] | None,
    *,
    redis_url: str | None = None,
    processes: int = 1,
    http_port: int | None = None,
) -> GatewayStack:
    """A full gateway (dev-key JWT, policy, limiter, audit spool, tracing off) via the CLI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    auth = dev_auth_settings(data_dir)
    port = free_port()
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "processes": processes},
        "routing": {"workers": list(workers)},
        "auth": {
            "issuer": auth.issuer,
            "audience": auth.audience,
            "algorithms": list(auth.algorithms),
            "dev_key_file": auth.dev_key_file,
        },
        "policy": {"directory": str(write_bench_policy(data_dir / "policy"))},
        # Redis shares a CPU with the load generator here, so a reply can wait for a time
        # slice: a generous decision timeout keeps a stall from failing requests closed.
        "limits": {"redis_url": redis_url, "decision_timeout_s": 1.0} if redis_url else {},
        "logging": {"level": "WARNING"},
        "data_dir": str(data_dir),
    }
    if http_port is not None:  # the OpenAI-compatible HTTP door as well
        config["http"] = {"listen": f"127.0.0.1:{http_port}"}
    path = data_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve", "--config",
            str(path)]  # fmt: skip
    child = _spawn(f"gateway x{processes}", argv, f"127.0.0.1:{port}", cpus)
    await wait_serving(child)
    token = mint_dev_token(data_dir, department="bench", subject="bench-user", ttl_s=3600)
    return GatewayStack(child, token, data_dir)


# --- load generation -------------------------------------------------------------------------

Call = Callable[[], Awaitable[int]]


@dataclass
class LoopResult:
    """What a closed loop did: completed calls, units (tokens) they returned, time, latencies."""

    calls: int
    units: int
    seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def unit_rate(self) -> float:
        return self.units / self.seconds


async def closed_loop(call: Call, concurrency: int, seconds: float) -> LoopResult:
    """`concurrency` callers each calling `call` back to back for `seconds`."""
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []
    units = 0

    async def caller() -> None:
        nonlocal units
        while (now := time.perf_counter()) < stop_at:
            got = await call()  # not `units += await call()`: that reads `units` before awaiting
            units += got
            latencies.append(time.perf_counter() - now)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return LoopResult(len(latencies), units, time.perf_counter() - started, latencies)


async def sequential(call: Call, count: int) -> list[float]:
    """Latencies of `count` calls made one after another (unloaded)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A fixed-width table: the first column left-aligned, the others right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                    enumerate(zip(headers, widths, strict=True))))  # fmt: skip
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


# --- the benchmark's own server processes ----------------------------------------------------


class BareProxy(pb_grpc.InferenceServiceServicer):
    """One hop, no logic: the public Generate calls forwarded to one worker."""

    def __init__(self, worker: wpb_grpc.WorkerServiceAsyncStub) -> None:
        self._worker = worker

    @staticmethod
    def _message(request: pb.GenerateRequest | pb.GenerateStreamRequest) -> wpb.GenerateRequest:
        return wpb.GenerateRequest(
            request_id=request.client_request_id,
            model=request.model,
            prompt=request.prompt,
            sampling=wpb.SamplingParams(max_tokens=request.sampling.max_tokens),
        )

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        parts, tokens = [], 0
        async for message in self._worker.Generate(self._message(request)):
            parts.append(message.text)
            tokens += message.token_count
        usage = pb.Usage(completion_tokens=tokens)
        return pb.GenerateResponse(model=request.model, text="".join(parts), usage=usage)

    async def GenerateStream(self, request: pb.GenerateStreamRequest, context: Any) -> Any:
        async for message in self._worker.Generate(self._message(request)):
            if message.token_count:
                yield pb.GenerateStreamResponse(text=message.text, token_count=message.token_count)
        yield pb.GenerateStreamResponse(finish_reason=pb.FINISH_REASON_LENGTH)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse()


async def _serve_worker(port: int, sim: dict[str, Any]) -> None:
    from common.eventloop import wait_for_shutdown_signal
    from workers.server import start_worker as start_worker_server
    from workers.sim import SimConfig, SimEngine

    engine = SimEngine(SimConfig(**sim))
    handle = await start_worker_server(engine, listen=f"127.0.0.1:{port}", worker_id="bench")
    await wait_for_shutdown_signal()
    await handle.stop(grace=0)


async def _serve_proxy(port: int, worker: str) -> None:
    from common.eventloop import wait_for_shutdown_signal

    channel = grpc.aio.insecure_channel(worker)
    server = grpc.aio.server()
    stub: wpb_grpc.WorkerServiceAsyncStub = wpb_grpc.WorkerServiceStub(channel)
    pb_grpc.add_InferenceServiceServicer_to_server(BareProxy(stub), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await wait_for_shutdown_signal()
    await server.stop(0)
    await channel.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["worker", "proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sim", default="{}", help="SimConfig fields as JSON")
    parser.add_argument("--worker", help="proxy: the worker's HOST:PORT")
    args = parser.parse_args(argv)
    if args.role == "worker":
        sim = json.loads(args.sim)
        if "models" in sim:
            sim["models"] = tuple(sim["models"])
        run_event_loop(_serve_worker(args.port, sim))  # uvloop, as the gateway runs
    else:
        run_event_loop(_serve_proxy(args.port, args.worker))


if __name__ == "__main__":
    main()
