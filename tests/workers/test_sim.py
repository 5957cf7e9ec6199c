"""The simulated batched GPU: determinism, limits, queueing, latency under load, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.tokenizer import count_tokens
from common.types import FinishReason
from workers.engine import EngineChunk, EngineOverloaded, EngineRequest, InvalidEngineRequest
from workers.sim import SimConfig, SimEngine

MODEL = "llama-3.1-8b-instruct"


def req(**kw: object) -> EngineRequest:
    fields: dict[str, object] = {
        "request_id": "r",
        "model": MODEL,
        "max_tokens": 20,
        "prompt": "hello ward",
    }
    fields.update(kw)
    return EngineRequest(**fields)  # type: ignore[arg-type]


async def collect(engine: SimEngine, request: EngineRequest) -> list[EngineChunk]:
    return [c async for c in engine.generate(request)]


FAST = SimConfig(time_to_first_token_ms=0, inter_token_latency_ms=0, prefill_ms_per_token=0)


async def test_same_seed_same_text_other_seed_other_text() -> None:
    engine = SimEngine(FAST)
    a = "".join(c.text for c in await collect(engine, req(seed=1)))
    b = "".join(c.text for c in await collect(engine, req(seed=1)))
    c = "".join(c.text for c in await collect(engine, req(seed=2)))
    assert a == b != c


async def test_max_tokens_and_counts_match_the_tokenizer_rule() -> None:
    chunks = await collect(SimEngine(FAST), req(max_tokens=37, seed=5))
    last = chunks[-1]
    assert last.finish_reason == FinishReason.LENGTH and last.completion_tokens == 37
    text = "".join(c.text for c in chunks)
    assert count_tokens(text) == 37 == sum(c.token_count for c in chunks)
    assert chunks[0].prompt_tokens == count_tokens("hello ward") == last.prompt_tokens


async def test_stop_sequence_ends_with_stop() -> None:
    free = "".join(c.text for c in await collect(SimEngine(FAST), req(max_tokens=60, seed=9)))
    stop = free.split(" ")[10]
    chunks = await collect(SimEngine(FAST), req(max_tokens=60, seed=9, stop=(" " + stop,)))
    text = "".join(c.text for c in chunks)
    assert chunks[-1].finish_reason == FinishReason.STOP
    assert free.startswith(text) and f" {stop}" not in text


async def test_context_length_is_enforced() -> None:
    engine = SimEngine(SimConfig(context_length=50))
    with pytest.raises(InvalidEngineRequest, match="context length"):
        await collect(engine, req(max_tokens=49, prompt="one two three"))


async def test_slots_queue_and_overload() -> None:
    engine = SimEngine(
        SimConfig(
            max_num_seqs=2,
            max_waiting_queue_length=1,
            time_to_first_token_ms=20,
            inter_token_latency_ms=5,
        )
    )
    tasks = [asyncio.create_task(collect(engine, req(max_tokens=5))) for _ in range(3)]
    await asyncio.sleep(0.005)
    load = engine.load()
    assert (load.active, load.queued, load.free_slots) == (2, 1, 0)
    with pytest.raises(EngineOverloaded, match="waiting queue"):
        await collect(engine, req())
    results = await asyncio.gather(*tasks)
    assert all(r[-1].completion_tokens == 5 for r in results)
    assert engine.load().active == 0 and engine.load().queued == 0


async def test_cancellation_frees_slot_and_hands_it_to_the_queue() -> None:
    engine = SimEngine(
        SimConfig(max_num_seqs=1, time_to_first_token_ms=1, inter_token_latency_ms=50)
    )
    running = asyncio.create_task(collect(engine, req(max_tokens=100)))
    waiting = asyncio.create_task(collect(engine, req(max_tokens=2)))
    await asyncio.sleep(0.01)
    assert engine.load().queued == 1
    running.cancel()
    started = time.monotonic()
    result = await waiting
    assert result[-1].completion_tokens == 2
    assert time.monotonic() - started < 0.2
    assert engine.cancelled == 1 and engine.load().active == 0


async def test_inter_token_latency_grows_with_batch_size() -> None:
    config = SimConfig(
        time_to_first_token_ms=0,
        inter_token_latency_ms=4,
        slowdown_per_sequence=0.5,
        max_num_seqs=8,
    )

    async def duration(concurrency: int) -> float:
        engine = SimEngine(config)
        start = time.monotonic()
        await asyncio.gather(*(collect(engine, req(max_tokens=20)) for _ in range(concurrency)))
        return time.monotonic() - start

    alone, batched = await duration(1), await duration(8)
    assert batched > alone * 2  # 7 extra sequences at +50% each slow every step down
