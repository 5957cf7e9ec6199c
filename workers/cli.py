"""`llm-worker`: `serve` a worker (sim or TensorRT-LLM), `drain` one, `digest` a model directory."""

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

from common.egress import EgressGuard, ResidencyViolation
from common.eventloop import run_event_loop, wait_for_shutdown_signal
from common.telemetry import start_tracing
from common.worker_registry import Advert, redis_client
from workers import metrics
from workers.digest import directory_digest
from workers.digest import main as digest_main
from workers.engine import Engine
from workers.registration import RedisRegistration
from workers.server import start_worker
from workers.settings import WorkerSettings, WorkerTls, worker_settings
from workers.sim import SimEngine
from workers.trtllm_options import SAMPLER_TYPES


def build_engine(settings: WorkerSettings) -> Engine:
    if settings.engine == "trtllm":
        from workers.trtllm import TrtLlmEngine

        assert settings.trtllm is not None  # WorkerSettings.check
        return TrtLlmEngine(settings.trtllm)
    return SimEngine(settings.sim)


def server_tls(tls: WorkerTls | None) -> grpc.ServerCredentials | None:
    """TLS for the worker's port; with a client CA only certified gateways may call it."""
    if tls is None:
        return None
    client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def _serve(settings: WorkerSettings) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or a fatal engine failure (exit 1, to be restarted)."""
    guard = EgressGuard(settings.residency)
    registering = settings.registration
    if registering is not None:
        guard.check(
            registering.redis_url,
            what="worker registry (Redis)",
            tls=registering.redis_url.startswith("rediss://"),
        )
    tracing = start_tracing(settings.telemetry, guard)
    engine = build_engine(settings)
    digests = None
    if settings.trtllm is not None and settings.engine == "trtllm":
        # Hashing tens of gigabytes takes a while: once, at start, off the event loop.
        digest = await asyncio.to_thread(directory_digest, Path(settings.trtllm.model_path))
        digests = {name: digest for name in engine.models}
    handle = await start_worker(
        engine,
        listen=settings.listen,
        pool=settings.pool,
        tracing=tracing,
        credentials=server_tls(settings.tls),
        model_digests=digests,
    )
    print(f"worker {handle.servicer.worker_id} listening on port {handle.port}", flush=True)
    refresher: asyncio.Task[None] | None = None
    if settings.metrics_listen is not None:
        metrics_server = metrics.start_metrics(settings.metrics_listen)
        host, port = str(metrics_server.server_address[0]), int(metrics_server.server_address[1])
        print(f"worker metrics on http://{host}:{port}/metrics", flush=True)
        servicer = handle.servicer
        refresher = asyncio.create_task(
            metrics.refresh_forever(handle.engine, lambda: servicer.draining)
        )
    registration: RedisRegistration | None = None
    if registering is not None:
        advert = Advert(
            target=registering.advertise,
            worker_id=handle.servicer.worker_id,
            models=tuple(handle.engine.models),
            pool=settings.pool,
            max_slots=handle.engine.load().max_slots,
        )
        client = redis_client(registering.redis_url, timeout_s=1.0)
        registration = RedisRegistration(
            client, advert, ttl_s=registering.ttl_s, prefix=registering.prefix
        )
        await registration.start()
    signalled = asyncio.create_task(wait_for_shutdown_signal())
    failed = asyncio.create_task(handle.servicer.failed.wait())
    await asyncio.wait((signalled, failed), return_when=asyncio.FIRST_COMPLETED)
    for task in (signalled, failed):
        task.cancel()
    if registration is not None:
        await registration.stop()  # gateways stop picking it before the server goes away
    await handle.stop(grace=settings.grace_s)
    if refresher is not None:
        refresher.cancel()
    tracing.shutdown()
    if handle.servicer.failed.is_set():
        print("llm-worker: the engine failed fatally; exiting for a restart", file=sys.stderr)
        return 1
    return 0


def _check_config(args: argparse.Namespace) -> int:
    """Validate a worker settings file offline (flags given here override it, as for serve)."""
    settings = worker_settings(args)
    model = (
        settings.trtllm.model_name
        if settings.trtllm is not None
        else ", ".join(settings.sim.models)
    )
    print(f"{args.config}: OK (engine {settings.engine}, {model}, listen {settings.listen})")
    return 0


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
    # Flags default to "not given" so that only those given override the settings file; the
    # defaults are WorkerSettings' (docs/configuration.md lists them).
    serve = commands.add_parser("serve", help="serve the worker API")
    check = commands.add_parser("check-config", help="validate a worker settings file")
    check.add_argument("--config", type=Path, required=True, metavar="FILE")
    serve.add_argument("--config", type=Path, metavar="FILE", help="YAML settings; flags override")
    serve.add_argument("--engine", choices=["sim", "trtllm"])
    serve.add_argument("--listen")
    serve.add_argument("--pool", help="pool name matched by policy")
    serve.add_argument("--model", action="append", help="model name (repeatable); trtllm: path")
    serve.add_argument("--ttft-ms", type=float)
    serve.add_argument("--itl-ms", type=float)
    serve.add_argument("--max-num-seqs", type=int)
    serve.add_argument("--max-queue", type=int)
    serve.add_argument("--grace", type=float)
    serve.add_argument("--served-model-name", help="trtllm: model name clients use")
    serve.add_argument("--kv-cache-free-gpu-memory-fraction", type=float)
    serve.add_argument("--tensor-parallel-size", type=int)
    serve.add_argument("--max-seq-len", type=int, help="trtllm: prompt plus output tokens")
    serve.add_argument("--max-num-tokens", type=int, help="trtllm: tokens per batch step")
    serve.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="trtllm: run the checkpoint's own code",
    )
    serve.add_argument(
        "--sampler-type",
        choices=SAMPLER_TYPES,
        help="trtllm: TRTLLMSampler honours request seeds; TorchSampler refuses them",
    )
    serve.add_argument("--register-redis", metavar="URL", help="announce this worker in Redis")
    serve.add_argument("--advertise", metavar="HOST:PORT", help="address gateways connect to")
    serve.add_argument("--register-ttl", type=float, help="heartbeat TTL, seconds")
    serve.add_argument("--register-prefix", help="Redis key prefix")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="require gateway client certificates from this CA")
    serve.add_argument("--otlp-endpoint", help="export trace spans here (off when unset)")
    serve.add_argument(
        "--otlp-insecure", action="store_true", default=None, help="plaintext OTLP (loopback)"
    )
    serve.add_argument("--trace-sample-ratio", type=float)
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics here (slots, queue, KV cache, tokens); off when unset",
    )
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
    digest = commands.add_parser("digest", help="print a model directory's weights digest")
    digest.add_argument("directory", help="the model directory a worker loads")
    digest.add_argument("--manifest", action="store_true", help="print the file manifest too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "drain":
            return asyncio.run(_drain(args))
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "digest":
            return digest_main([args.directory] + (["--manifest"] if args.manifest else []))
        return run_event_loop(_serve(worker_settings(args)))  # uvloop, like the gateway
    except (ImportError, ValueError, ResidencyViolation) as exc:  # missing engine, bad settings
        print(f"llm-worker: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(
            f"llm-worker: the worker did not answer ({exc.code().name}); check --target",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
