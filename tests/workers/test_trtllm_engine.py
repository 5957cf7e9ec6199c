"""The trtllm engine against a test double of TensorRT-LLM 1.2's LLM API (no GPU here)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest

from common.settings import read
from common.types import ChatTurn, FinishReason
from tests.support.clock import FakeClock
from tests.support.polling import wait_until
from tests.workers.trtllm_helpers import (
    MODEL,
    Factory,
    collect,
    next_chunk,
    request,
)
from workers.engine import (
    Engine,
    EngineChunk,
    InvalidEngineRequest,
    UnsupportedModel,
)
from workers.trtllm import TrtLlmEngine
from workers.trtllm_load import LoadTracker
from workers.trtllm_options import TrtLlmOptions


async def test_streams_diffs_in_order_with_counts_and_length_finish(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine: Engine = await make_engine()  # mypy checks that it implements the port
    chunks = [chunk async for chunk in engine.generate(request(max_tokens=5))]

    assert [c.text for c in chunks] == [" w0", " w1", " w2", " w3", " w4"]
    assert [c.token_count for c in chunks] == [1, 1, 1, 1, 1]
    assert all(c.prompt_tokens == 4 for c in chunks)  # BOS + three words
    assert [c.finish_reason for c in chunks] == [None] * 4 + [FinishReason.LENGTH]
    assert chunks[-1].completion_tokens == 5
    llm = trtllm.instances[-1]
    assert llm.submitted[0]["streaming"] is True
    assert llm.submitted[0]["prompt"] == "hello there world"


async def test_constructs_llm_with_kv_cache_batch_and_stats_options(
    make_engine: Factory, trtllm: ModuleType, tmp_path: Path
) -> None:
    await make_engine(max_batch_size=3, tensor_parallel_size=2)
    llm = trtllm.instances[-1]

    assert llm.model == str(tmp_path / MODEL)
    assert llm.tensor_parallel_size == 2
    assert llm.kwargs["max_batch_size"] == 3
    assert llm.kwargs["enable_iter_perf_stats"] is True
    kv = llm.kwargs["kv_cache_config"]
    assert (kv.free_gpu_memory_fraction, kv.enable_block_reuse) == (0.85, True)


async def test_end_of_sequence_finishes_with_stop(make_engine: Factory, trtllm: ModuleType) -> None:
    trtllm.behaviour.eos_after = 3
    engine = await make_engine()
    chunks = await collect(engine, request(max_tokens=10))

    assert chunks[-1].finish_reason is FinishReason.STOP
    assert chunks[-1].completion_tokens == 3
    assert "".join(c.text for c in chunks) == " w0 w1 w2"


async def test_stop_string_is_passed_and_ends_with_stop(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine()
    chunks = await collect(engine, request(max_tokens=10, stop=(" w2", "never")))

    params = trtllm.instances[-1].submitted[0]["params"]
    assert params.stop == [" w2", "never"]
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert "".join(c.text for c in chunks) == " w0 w1"


async def test_sampling_parameters_pass_through(make_engine: Factory, trtllm: ModuleType) -> None:
    engine = await make_engine(sampler_type="TRTLLMSampler")
    await collect(engine, request(max_tokens=2, temperature=0.7, top_p=0.9, top_k=40, seed=7))

    params = trtllm.instances[-1].submitted[0]["params"]
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.seed) == (
        2,
        0.7,
        0.9,
        40,
        7,
    )
    assert params.stop is None
    assert params.add_special_tokens is True


async def test_unset_sampling_parameters_stay_unset_for_greedy_decoding(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine()
    await collect(engine, request(max_tokens=3))

    params = trtllm.instances[-1].submitted[0]["params"]
    assert params.max_tokens == 3
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (None,) * 4


async def test_cache_salt_is_passed(make_engine: Factory, trtllm: ModuleType) -> None:
    engine = await make_engine()
    await collect(engine, request(cache_salt="dept-cardiology"))
    await collect(engine, request(request_id="r2"))

    submitted = trtllm.instances[-1].submitted
    assert [s["cache_salt"] for s in submitted] == ["dept-cardiology", None]


@pytest.mark.parametrize("leave", ["cancel", "aclose"])
async def test_leaving_mid_stream_aborts_and_frees_the_slot_at_once(
    make_engine: Factory, trtllm: ModuleType, leave: str
) -> None:
    trtllm.behaviour.token_delay_s = 0.02
    engine = await make_engine(max_batch_size=1)
    llm = trtllm.instances[-1]
    first = engine.generate(request(request_id="a", max_tokens=100))
    got: list[EngineChunk] = [await anext(first), await anext(first)]
    # A second request waits for the only slot.
    waiting = asyncio.create_task(collect(engine, request(request_id="b", max_tokens=2)))
    await wait_until(lambda: len(llm.submitted) == 2, within=2, every=0.005)

    if leave == "cancel":
        pending = asyncio.create_task(next_chunk(first))
        await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    else:
        await first.aclose()

    assert llm.aborted_ids == [1]
    assert 1 not in llm.active_ids
    assert [c.text for c in got] == [" w0", " w1"]
    # The freed slot goes to the waiting request, which runs to completion.
    second = await asyncio.wait_for(waiting, 1.0)
    assert second[-1].finish_reason is FinishReason.LENGTH
    assert llm.aborted_ids == [1]  # the finished one is not aborted
    assert engine.load().active == 0


async def test_abort_releases_the_slot_before_the_next_token(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.token_delay_s = 0.05
    engine = await make_engine(max_batch_size=1)
    llm = trtllm.instances[-1]
    stream = engine.generate(request(max_tokens=100))
    await anext(stream)
    assert llm.active_ids == {1}

    await stream.aclose()

    assert llm.active_ids == set()  # synchronously, not one token interval later
    assert llm.aborted_ids == [1]
    assert engine.load().free_slots == 1


async def test_closing_after_the_final_chunk_does_not_abort(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine()
    stream = engine.generate(request(max_tokens=1))
    chunk = await anext(stream)
    await stream.aclose()

    assert chunk.finish_reason is FinishReason.LENGTH
    assert trtllm.instances[-1].aborted_ids == []


async def test_chat_messages_use_the_tokenizer_chat_template(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine()
    messages = (ChatTurn("system", "be brief"), ChatTurn("user", "hi"))
    chunks = await collect(engine, request(messages=messages, max_tokens=2))

    llm = trtllm.instances[-1]
    conversation, kwargs = llm.tokenizer.calls[0]
    assert conversation == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert kwargs == {"tokenize": False, "add_generation_prompt": True}
    submitted = llm.submitted[0]
    assert submitted["prompt"] == "<s><|system|> be brief <|user|> hi <|assistant|>"
    # The template holds BOS already: no second one, so no extra prompt token.
    assert submitted["params"].add_special_tokens is False
    assert chunks[0].prompt_tokens == len(submitted["prompt"].split())


async def test_chat_without_a_template_is_an_invalidrequest(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.chat_template = None
    engine = await make_engine()

    with pytest.raises(InvalidEngineRequest, match="no chat template"):
        await collect(engine, request(messages=(ChatTurn("user", "hi"),)))
    assert trtllm.instances[-1].submitted == []


async def test_iteration_statistics_feed_the_load_report(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.token_delay_s = 0.01
    engine = await make_engine(max_batch_size=2)
    llm = trtllm.instances[-1]
    assert engine.load().active == 0 and engine.load().free_slots == 2

    streams = [
        asyncio.create_task(collect(engine, request(request_id=f"r{i}", max_tokens=40)))
        for i in range(3)
    ]
    # KV-cache use exists only in TensorRT-LLM's statistics, so a non-zero value proves they
    # reached the report (the in-flight fallback would also say active 2, queued 1).
    await wait_until(lambda: engine.load().kv_cache_utilization > 0, within=2, every=0.005)
    load = engine.load()
    assert (load.active, load.queued, load.free_slots, load.max_slots) == (2, 1, 0, 2)
    assert 0 < load.kv_cache_utilization <= 1
    assert llm.stats_timeouts and set(llm.stats_timeouts) == {0.05}

    await asyncio.gather(*streams)
    load = engine.load()
    assert (load.active, load.queued, load.free_slots) == (0, 0, 2)


def test_load_tracker_trusts_fresh_statistics_and_falls_back_when_stale() -> None:
    clock = FakeClock(100.0)
    tracker = LoadTracker(8, stale_after_s=1.0, clock=clock)
    for _ in range(3):
        tracker.request_started()
    tracker.observe(
        {
            "numActiveRequests": 1,
            "numQueuedRequests": 2,
            "kvCacheStats": {"maxNumBlocks": 10, "freeNumBlocks": 6},
        }
    )
    load = tracker.load()
    assert (load.active, load.queued, load.free_slots, load.max_slots) == (1, 2, 7, 8)
    assert load.kv_cache_utilization == pytest.approx(0.4)

    clock.advance(5.0)  # no iteration since: the statistics are stale
    load = tracker.load()
    assert (load.active, load.queued, load.free_slots) == (3, 0, 5)

    tracker.observe({"iter": 7})  # unreadable record: ignored, not read as zeros
    assert tracker.load().active == 3
    for _ in range(3):
        tracker.request_ended()
    clock.advance(-5.0)  # fresh again, but nothing in flight means idle
    assert tracker.load().active == 0


async def test_out_of_range_sampling_parameter_is_invalid(make_engine: Factory) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidEngineRequest, match="top_p"):
        await collect(engine, request(top_p=1.5))


async def test_model_name_defaults_to_the_directory_and_is_enforced(
    make_engine: Factory,
) -> None:
    engine = await make_engine()
    assert engine.models == (MODEL,)
    with pytest.raises(UnsupportedModel, match="other-model"):
        await collect(engine, request(model="other-model"))

    named = await make_engine(served_model_name="llama-3-8b")
    assert named.models == ("llama-3-8b",)


def test_model_path_must_be_a_local_directory(trtllm: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never downloads"):
        TrtLlmEngine(TrtLlmOptions(model_path="meta-llama/Llama-3-8B"))


def test_the_double_rejects_unknown_arguments(trtllm: ModuleType) -> None:
    # A typo in the adapter's keyword arguments must fail a test, as it fails on a GPU.
    with pytest.raises(TypeError):
        trtllm.SamplingParams(max_token=5)
    with pytest.raises(TypeError):
        trtllm.SamplingParams(5)
    with pytest.raises(TypeError):
        trtllm.KvCacheConfig(free_gpu_mem_fraction=0.5)


async def test_the_double_llm_rejects_unknown_arguments(trtllm: ModuleType) -> None:
    with pytest.raises(ValueError, match="invalid argument: max_batch"):
        trtllm.LLM(model="m", max_batch=4)


def test_options_read_from_a_mapping_name_the_full_key_path() -> None:
    options = read(
        TrtLlmOptions,
        {"model_path": "/models/x", "max_batch_size": 16, "kv_cache_free_gpu_memory_fraction": 0.8},
        "worker.trtllm",
    )
    assert (options.max_batch_size, options.kv_cache_free_gpu_memory_fraction) == (16, 0.8)
    assert options.model_name == "x"

    with pytest.raises(
        ValueError, match=r"^worker\.trtllm: unknown key\(s\) max_batch; allowed: model_path,"
    ):
        read(TrtLlmOptions, {"model_path": "/m", "max_batch": 4}, "worker.trtllm")
    with pytest.raises(ValueError, match=r"^worker\.trtllm\.max_batch_size: expected an integer"):
        read(TrtLlmOptions, {"model_path": "/m", "max_batch_size": "4"}, "worker.trtllm")
    with pytest.raises(
        ValueError, match=r"^worker\.trtllm\.model_path: expected a string .*required"
    ):
        read(TrtLlmOptions, {}, "worker.trtllm")
    with pytest.raises(
        ValueError, match=r"^worker\.trtllm\.kv_cache_free_gpu_memory_fraction: must be in"
    ):
        read(
            TrtLlmOptions,
            {"model_path": "/m", "kv_cache_free_gpu_memory_fraction": 1.5},
            "worker.trtllm",
        )
