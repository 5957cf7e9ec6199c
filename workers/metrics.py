"""A worker's own Prometheus metrics: batch slots in use, queue, KV-cache use, tokens generated.

Served over HTTP by `llm-worker serve --metrics-listen HOST:PORT` (off by default). The gauges
are refreshed from the engine's load report every second; tokens per second is
`rate(llmworker_output_tokens_total[1m])`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, start_http_server

from common.settings_checks import parse_listen
from workers.engine import Engine

SLOTS = Gauge("llmworker_slots", "Batch slots of the engine (max_num_seqs).")
SLOTS_IN_USE = Gauge("llmworker_slots_in_use", "Batch slots running a generation now.")
QUEUED = Gauge("llmworker_queued", "Generations waiting in the engine's queue.")
KV_CACHE = Gauge("llmworker_kv_cache_utilization", "Share of KV-cache blocks in use (0 to 1).")
DRAINING = Gauge("llmworker_draining", "1 while the worker refuses new generations (draining).")
OUTPUT_TOKENS = Counter("llmworker_output_tokens", "Output tokens generated and sent.")
REFRESH_S = 1.0


def start_metrics(listen: str) -> WSGIServer:
    """Serve the default registry on `listen`; returns the server (its port may have been 0)."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host)
    return server


def refresh(engine: Engine, draining: bool) -> None:
    load = engine.load()
    SLOTS.set(load.max_slots)
    SLOTS_IN_USE.set(load.active)
    QUEUED.set(load.queued)
    KV_CACHE.set(load.kv_cache_utilization)
    DRAINING.set(int(draining))


async def refresh_forever(engine: Engine, is_draining: Callable[[], bool]) -> None:
    while True:
        refresh(engine, is_draining())
        await asyncio.sleep(REFRESH_S)
