"""GPU smoke test of the trtllm engine: TensorRT-LLM's behaviour, timings direct and via gateway.

Run inside NVIDIA's TensorRT-LLM release container (docs/gpu.md gives the commands):
``python -m load_tests.gpu_smoke --model /models/DIR [--sampler TRTLLMSampler] [--out FILE]``.
``--dry-run`` runs the same script on the CPU against the test double of `tensorrt_llm`
(tests/workers/trtllm_double, so it needs the repository checkout). Every check prints one PASS or
FAIL line; the JSON file holds what each check observed, the timings and the versions. The exit
status is 1 when any check failed, 2 when the script could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from common.eventloop import run_event_loop
from load_tests.gpu_smoke_checks import ApiChecks, Check, run_check
from load_tests.gpu_smoke_paths import EnginePath, GatewayPath, measure
from workers.trtllm import TrtLlmEngine
from workers.trtllm_install import TrtLlmModules, TrtLlmNotInstalled, import_tensorrt_llm
from workers.trtllm_options import SAMPLER_TYPES, TrtLlmOptions

ROOT = Path(__file__).resolve().parents[1]
DOUBLE_DIR = ROOT / "tests" / "workers" / "trtllm_double"
API_CHECKS = (
    "llm_args_max_seq_len",
    "streamed_diffs",
    "queued_meaning",
    "iteration_stats_keys",
    "abort_frees_slot",
    "request_error_first_anext",
    "seed_reproducibility",
)
ENGINE_CHECKS = (
    "engine_over_long_prompt",
    "engine_seed",
    "engine_load_queued",
    "engine_stream_counts",
)
GATEWAY_CHECKS = ("gateway_over_long_prompt", "gateway_stream_counts")
CHECK_NAMES = API_CHECKS + ENGINE_CHECKS + GATEWAY_CHECKS


def install_double() -> ModuleType:
    """Load the test double as `tensorrt_llm` (and its submodules) for this process."""
    if not DOUBLE_DIR.is_dir():
        raise SystemExit(f"--dry-run needs the repository checkout: {DOUBLE_DIR} is missing")
    modules = (
        ("tensorrt_llm.executor", DOUBLE_DIR / "executor" / "__init__.py", True),
        ("tensorrt_llm.executor.utils", DOUBLE_DIR / "executor" / "utils.py", False),
        ("tensorrt_llm", DOUBLE_DIR / "__init__.py", True),
        ("tensorrt_llm.llmapi", DOUBLE_DIR / "llmapi.py", False),
        ("tensorrt_llm._tensorrt_engine", DOUBLE_DIR / "_tensorrt_engine" / "__init__.py", True),
    )
    loaded: dict[str, ModuleType] = {}
    for name, path, package in modules:
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[str(path.parent)] if package else None
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded[name] = module
    return loaded["tensorrt_llm"]


def versions(modules: TrtLlmModules | None) -> dict[str, Any]:
    """What a site reports back: this project, TensorRT-LLM, PyTorch, Python and the GPUs."""
    found: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("llm-gateway", "torch", "transformers"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    found["tensorrt_llm"] = getattr(modules.trtllm, "__version__", None) if modules else None
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total"
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
        )
        found["gpus"] = done.stdout.strip().splitlines()
    return found


def options(args: argparse.Namespace, *, max_batch_size: int) -> TrtLlmOptions:
    return TrtLlmOptions(
        model_path=args.model,
        served_model_name=args.served_model_name,
        max_batch_size=max_batch_size,
        kv_cache_free_gpu_memory_fraction=args.kv_cache_fraction,
        max_seq_len=args.max_seq_len,
        trust_remote_code=args.trust_remote_code,
        sampler_type=args.sampler,
    )


async def api_phase(args: argparse.Namespace, modules: TrtLlmModules, checks: list[Check]) -> None:
    """The checks on TensorRT-LLM's own API, with one batch slot."""
    opts = options(args, max_batch_size=1)
    llm = modules.trtllm.LLM(
        model=opts.model_path,
        trust_remote_code=opts.trust_remote_code,
        max_batch_size=1,
        max_seq_len=opts.max_seq_len,
        kv_cache_config=modules.llmapi.KvCacheConfig(
            free_gpu_memory_fraction=opts.kv_cache_free_gpu_memory_fraction,
            enable_block_reuse=True,
        ),
        enable_iter_perf_stats=True,
        sampler_type=opts.sampler_type,
    )
    try:
        api = ApiChecks(modules, llm, max_seq_len=args.max_seq_len, sampler=args.sampler)
        bodies = (
            api.args_max_seq_len,
            api.streamed_diffs,
            api.queued_meaning,
            api.stats_keys,
            api.abort_frees_slot,
            api.request_error,
            api.seed,
        )
        for name, body in zip(API_CHECKS, bodies, strict=True):
            await run_check(checks, name, body, args.check_timeout)
    finally:
        await asyncio.to_thread(llm.shutdown)


async def paths_phase(
    args: argparse.Namespace, checks: list[Check], rows: list[dict[str, Any]]
) -> None:
    """Checks and timings on the engine, then through a gateway over the same engine."""
    engine = TrtLlmEngine(options(args, max_batch_size=args.max_batch_size))
    gateway = GatewayPath(
        engine,
        Path(tempfile.mkdtemp(prefix="gpu-smoke-")),
        max_tokens=args.max_tokens,
        max_seq_len=args.max_seq_len,
    )
    try:
        await gateway.start()  # starts the engine too
        direct = EnginePath(
            engine, max_tokens=args.max_tokens, max_seq_len=args.max_seq_len, sampler=args.sampler
        )
        await run_check(
            checks, "engine_over_long_prompt", direct.over_long_prompt, args.check_timeout
        )
        await run_check(checks, "engine_seed", direct.seed, args.check_timeout)
        await run_check(
            checks,
            "engine_load_queued",
            lambda: direct.load_queued(args.max_batch_size),
            args.check_timeout,
        )
        engine_rows = await measure("engine", direct.stream, args.runs, args.concurrency)
        rows.extend(engine_rows)
        checks.append(_counts_check("engine_stream_counts", engine_rows))
        await run_check(
            checks, "gateway_over_long_prompt", gateway.over_long_prompt, args.check_timeout
        )
        gateway_rows = await measure("gateway", gateway.stream, args.runs, args.concurrency)
        rows.extend(gateway_rows)
        checks.append(_counts_check("gateway_stream_counts", gateway_rows))
    finally:
        await gateway.stop()
        await engine.close()


def _counts_check(name: str, rows: list[dict[str, Any]]) -> Check:
    ok = all(r["counts_add_up"] for r in rows)
    streams = sum(r["streams"] for r in rows)
    detail = f"streamed token counts add up to completion_tokens in {streams} streams"
    if not ok:
        detail = f"streamed token counts do NOT add up to completion_tokens in {streams} streams"
    return Check(name, ok, detail, {"streams": streams})


async def smoke(args: argparse.Namespace, modules: TrtLlmModules) -> dict[str, Any]:
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    phases = (
        (api_phase(args, modules, checks), API_CHECKS),
        (paths_phase(args, checks, rows), ENGINE_CHECKS + GATEWAY_CHECKS),
    )
    for phase, names in phases:
        try:
            await phase
        except Exception as err:
            # A phase that cannot start (the model does not load) fails every check it holds.
            done = {c.name for c in checks}
            detail = f"not run: {type(err).__name__}: {err}"
            checks.extend(Check(n, False, detail) for n in names if n not in done)
    return {
        "dry_run": args.dry_run,
        "model": args.model,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "model")},
        "versions": versions(None if args.dry_run else modules),
        "checks": [vars(c) for c in checks],
        "measurements": rows,
        "passed": all(c.passed for c in checks),
    }


def print_report(result: dict[str, Any]) -> None:
    for check in result["checks"]:
        print(f"{'PASS' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
    headers = ("path", "mode", "streams", "tokens", "TTFT p50 ms", "TTFT max ms", "ITL p50 ms",
               "tokens/s")  # fmt: skip
    keys = ("path", "mode", "streams", "tokens", "ttft_ms_p50", "ttft_ms_max", "itl_ms_p50",
            "tokens_per_s")  # fmt: skip
    cells = [[f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
             for r in result["measurements"]]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print()
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local Hugging Face model directory")
    parser.add_argument("--dry-run", action="store_true", help="run against the test double")
    parser.add_argument("--sampler", choices=SAMPLER_TYPES, default="TorchSampler")
    parser.add_argument("--out", default="gpu-smoke.json", help="the JSON report (FILE)")
    parser.add_argument("--served-model-name", default="smoke-model")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--kv-cache-fraction", type=float, default=0.5)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--max-tokens", type=int, help="tokens per timed stream (128; dry run 32)")
    parser.add_argument("--runs", type=int, default=5, help="sequential single streams per path")
    parser.add_argument("--concurrency", type=int, help="streams at once (--max-batch-size)")
    parser.add_argument("--check-timeout", type=float, default=600.0, help="seconds per check")
    args = parser.parse_args(argv)
    if args.model is None and not args.dry_run:
        parser.error("--model DIR is required (or --dry-run)")
    if args.max_tokens is None:
        args.max_tokens = 32 if args.dry_run else 128
    if args.concurrency is None:
        args.concurrency = args.max_batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-model-") as scratch:
        if args.dry_run:
            install_double()
            if args.model is None:
                args.model = str(Path(scratch) / "tiny-model")
                Path(args.model).mkdir()
        try:
            modules = import_tensorrt_llm()
        except TrtLlmNotInstalled as err:
            print(err, file=sys.stderr)
            return 2
        result = run_event_loop(smoke(args, modules))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    print(f"report written to {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
