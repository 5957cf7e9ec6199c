"""`llm-worker serve` runs one worker (sim or TensorRT-LLM); `llm-worker drain` drains one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

import grpc
from llmgateway.worker.v1 import worker_pb2 as pb
from llmgateway.worker.v1 import worker_pb2_grpc as pb_grpc

from common.egress import EgressGuard, ResidencySettings, ResidencyViolation
from common.eventloop import run_event_loop
from common.settings import read
from common.telemetry import TelemetrySettings, start_tracing
from common.worker_registry import DEFAULT_PREFIX, Advert, redis_client
from workers.engine import Engine
from workers.registration import RedisRegistration
from workers.server import start_worker
from workers.sim import SimConfig, SimEngine

_SIM = SimConfig()


def build_engine(args: argparse.Namespace) -> Engine:
    if args.engine == "sim":
        return SimEngine(
            SimConfig(
                models=tuple(args.model or _SIM.models),
                time_to_first_token_ms=args.ttft_ms,
                inter_token_latency_ms=args.itl_ms,
                max_num_seqs=args.max_num_seqs,
                max_waiting_queue_length=args.max_queue,
            )
        )
    if args.engine == "trtllm":
        from workers.trtllm import TrtLlmEngine

        if not args.model or len(args.model) != 1:
            raise SystemExit("--engine trtllm needs exactly one --model PATH (a model directory)")
        return TrtLlmEngine.from_options(
            args.model[0],
            served_model_name=args.served_model_name,
            max_batch_size=args.max_num_seqs,
            kv_cache_free_gpu_memory_fraction=args.kv_cache_free_gpu_memory_fraction,
            tensor_parallel_size=args.tensor_parallel_size,
        )
    raise SystemExit(f"unknown engine {args.engine!r}")


def server_tls(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """TLS for the worker's port; with --tls-client-ca only certified gateways may call it."""
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    client_ca = Path(args.tls_client_ca).read_bytes() if args.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def _serve(args: argparse.Namespace) -> None:
    from common.eventloop import wait_for_shutdown_signal

    if args.register_redis and not args.advertise:
        raise ValueError("--register-redis needs --advertise HOST:PORT (how gateways reach it)")
    guard = EgressGuard(
        read(ResidencySettings, {"allowed_networks": args.allow_network or []}, "residency")
    )
    if args.register_redis:
        guard.check(
            args.register_redis,
            what="worker registry",
            tls=args.register_redis.startswith("rediss://"),
        )
    tracing = start_tracing(
        read(
            TelemetrySettings,
            {
                "enabled": args.otlp_endpoint is not None,
                "service_name": "llm-worker",
                "otlp_endpoint": args.otlp_endpoint,
                "insecure": args.otlp_insecure,
                "sample_ratio": args.trace_sample_ratio,
            },
            "telemetry",
        ),
        guard,
    )
    handle = await start_worker(
        build_engine(args),
        listen=args.listen,
        pool=args.pool,
        tracing=tracing,
        credentials=server_tls(args),
    )
    print(f"worker {handle.servicer.worker_id} listening on port {handle.port}", flush=True)
    registration: RedisRegistration | None = None
    if args.register_redis:
        advert = Advert(
            target=args.advertise,
            worker_id=handle.servicer.worker_id,
            models=tuple(handle.engine.models),
            pool=args.pool,
            max_slots=handle.engine.load().max_slots,
        )
        client = redis_client(args.register_redis, timeout_s=1.0)
        registration = RedisRegistration(
            client, advert, ttl_s=args.register_ttl, prefix=args.register_prefix
        )
        await registration.start()
    await wait_for_shutdown_signal()
    if registration is not None:
        await registration.stop()  # gateways stop picking it before the server goes away
    await handle.stop(grace=args.grace)
    tracing.shutdown()


async def _drain(args: argparse.Namespace) -> int:
    """Ask the worker at `args.target` to drain (or resume); optionally wait until it is idle."""
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        answer = await stub.SetDraining(
            pb.SetDrainingRequest(draining=not args.resume), timeout=args.timeout
        )
        load = answer.load
        deadline = time.monotonic() + args.timeout
        while args.wait and (load.active or load.queued) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            load = (await stub.GetLoad(pb.GetLoadRequest(), timeout=args.timeout)).load
    state = "draining" if load.draining else "accepting generations"
    print(f"worker {args.target}: {state}; {load.active} active, {load.queued} queued", flush=True)
    return 1 if args.wait and (load.active or load.queued) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the worker API")
    serve.add_argument("--engine", choices=["sim", "trtllm"], default="sim")
    serve.add_argument("--listen", default="127.0.0.1:50061")
    serve.add_argument("--pool", default="onprem-gpu", help="pool name matched by policy")
    serve.add_argument("--model", action="append", help="model name (repeatable); trtllm: path")
    serve.add_argument("--ttft-ms", type=float, default=_SIM.time_to_first_token_ms)
    serve.add_argument("--itl-ms", type=float, default=_SIM.inter_token_latency_ms)
    serve.add_argument("--max-num-seqs", type=int, default=_SIM.max_num_seqs)
    serve.add_argument("--max-queue", type=int, default=_SIM.max_waiting_queue_length)
    serve.add_argument("--grace", type=float, default=10.0)
    serve.add_argument("--served-model-name", help="trtllm: model name clients use")
    serve.add_argument("--kv-cache-free-gpu-memory-fraction", type=float, default=0.9)
    serve.add_argument("--tensor-parallel-size", type=int, default=1)
    serve.add_argument("--register-redis", metavar="URL", help="announce this worker in Redis")
    serve.add_argument("--advertise", metavar="HOST:PORT", help="address gateways connect to")
    serve.add_argument("--register-ttl", type=float, default=10.0, help="heartbeat TTL, seconds")
    serve.add_argument("--register-prefix", default=DEFAULT_PREFIX, help="Redis key prefix")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="require gateway client certificates from this CA")
    serve.add_argument("--otlp-endpoint", help="export trace spans here (off when unset)")
    serve.add_argument("--otlp-insecure", action="store_true", help="plaintext OTLP (loopback)")
    serve.add_argument("--trace-sample-ratio", type=float, default=1.0)
    serve.add_argument(
        "--allow-network",
        action="append",
        metavar="CIDR",
        help="networks this worker may send data to (registry, OTLP); default loopback only",
    )
    drain = commands.add_parser("drain", help="stop a worker taking new generations")
    drain.add_argument("--target", required=True, metavar="HOST:PORT")
    drain.add_argument("--resume", action="store_true", help="accept generations again")
    drain.add_argument("--wait", action="store_true", help="wait until in-flight ones finish")
    drain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "drain":
            return asyncio.run(_drain(args))
        run_event_loop(_serve(args))  # uvloop, like the gateway
    except (ImportError, ValueError, ResidencyViolation) as exc:  # missing engine, bad option
        print(f"llm-worker: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(
            f"llm-worker: the worker did not answer ({exc.code().name}); check --target",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
