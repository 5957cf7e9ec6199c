"""`llm-worker serve`: run one worker over the sim or TensorRT-LLM engine."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from workers.engine import Engine
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


async def _serve(args: argparse.Namespace) -> None:
    from gateway.server import wait_for_shutdown_signal

    handle = await start_worker(build_engine(args), listen=args.listen, pool=args.pool)
    print(f"worker {handle.servicer.worker_id} listening on port {handle.port}", flush=True)
    await wait_for_shutdown_signal()
    await handle.stop(grace=args.grace)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except (ImportError, ValueError) as exc:  # a missing engine package or a bad option
        print(f"llm-worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
