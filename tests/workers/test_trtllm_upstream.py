"""The trtllm engine against TensorRT-LLM 1.2 behaviours the double copies from upstream source."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from common.settings import read
from common.types import FinishReason
from tests.support.polling import wait_until
from tests.workers.trtllm_helpers import Factory, collect, next_chunk, request
from workers.engine import (
    REASON_MAX_NUM_TOKENS,
    REASON_MAX_SEQ_LEN,
    REASON_MAX_TOKENS,
    REASON_SEED_UNSUPPORTED,
    EngineFailed,
    EngineUnavailable,
    InvalidEngineRequest,
)
from workers.trtllm import TrtLlmEngine, TrtLlmNotInstalled
from workers.trtllm_install import install_hint
from workers.trtllm_options import TrtLlmOptions

LONG_PROMPT = " ".join(f"word{i}" for i in range(40))  # 41 tokens with BOS


async def test_prompt_at_max_seq_len_is_invalid_naming_the_limit(make_engine: Factory) -> None:
    engine = await make_engine(max_seq_len=41)
    with pytest.raises(InvalidEngineRequest) as err:
        await collect(engine, request(prompt=LONG_PROMPT))
    assert err.value.reason == REASON_MAX_SEQ_LEN
    assert err.value.metadata == {"max_seq_len": "41", "prompt_tokens": "41"}
    assert not engine.failed
    assert len(await collect(engine, request())) == 5  # the engine lives on


async def test_prompt_over_max_num_tokens_is_invalid_at_submit(make_engine: Factory) -> None:
    engine = await make_engine(max_num_tokens=16)
    with pytest.raises(InvalidEngineRequest) as err:
        await collect(engine, request(prompt=LONG_PROMPT))
    assert (err.value.reason, err.value.metadata) == (
        REASON_MAX_NUM_TOKENS,
        {"max_num_tokens": "16"},
    )
    assert engine.load().active == 0 and not engine.failed


async def test_max_tokens_over_the_remaining_context_is_clamped_and_reported(
    make_engine: Factory,
) -> None:
    engine = await make_engine(max_seq_len=7)  # prompt is 4 tokens: 3 left
    chunks = await collect(engine, request(max_tokens=10))
    assert chunks[-1].finish_reason is FinishReason.LENGTH
    assert (chunks[-1].completion_tokens, chunks[-1].max_tokens) == (3, 3)

    unclamped = await collect(engine, request(max_tokens=2))
    assert unclamped[-1].max_tokens is None


async def test_seed_is_refused_with_a_sampler_that_ignores_it(make_engine: Factory) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidEngineRequest) as err:
        await collect(engine, request(seed=7, temperature=0.8))
    assert err.value.reason == REASON_SEED_UNSUPPORTED
    assert "TorchSampler" in str(err.value)


async def test_seed_reproduces_sampling_with_trtllm_sampler(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine(sampler_type="TRTLLMSampler")
    runs = [
        await collect(engine, request(seed=s, temperature=0.8, max_tokens=8)) for s in (1, 1, 2)
    ]
    texts = ["".join(c.text for c in chunks) for chunks in runs]
    assert texts[0] == texts[1] != texts[2]
    assert trtllm.instances[-1].kwargs["sampler_type"] == "TRTLLMSampler"


async def test_multi_token_stop_string_is_never_partly_streamed_and_counts_add_up(
    make_engine: Factory,
) -> None:
    engine = await make_engine()
    chunks = await collect(engine, request(max_tokens=10, stop=("w2 w3",)))
    text = "".join(c.text for c in chunks)
    assert text == " w0 w1"  # " w2" was generated and streamed by the executor, then cut
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert sum(c.token_count for c in chunks) == chunks[-1].completion_tokens == 2


async def test_counts_add_up_without_stop_strings(make_engine: Factory) -> None:
    engine = await make_engine()
    chunks = await collect(engine, request(max_tokens=6))
    assert sum(c.token_count for c in chunks) == chunks[-1].completion_tokens == 6


async def test_queued_counts_requests_waiting_for_a_slot(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.token_delay_s = 0.01
    engine = await make_engine(max_batch_size=1)
    llm = trtllm.instances[-1]
    streams = [
        asyncio.create_task(collect(engine, request(request_id=f"r{i}", max_tokens=30)))
        for i in range(3)
    ]
    await wait_until(
        lambda: engine.load().kv_cache_utilization > 0 and llm.waiting_count == 2,
        within=2,
        every=0.005,
    )
    await asyncio.sleep(0.05)  # several iterations: the incoming queue is empty by now
    load = engine.load()
    assert (load.active, load.queued) == (1, 2)
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)


async def test_aborting_a_queued_request_needs_no_final_response(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.token_delay_s = 0.02
    engine = await make_engine(max_batch_size=1)
    running = engine.generate(request(max_tokens=50))
    await next_chunk(running)
    queued = asyncio.create_task(collect(engine, request(request_id="q", max_tokens=5)))
    await wait_until(lambda: trtllm.instances[-1].waiting_count == 1, within=2, every=0.005)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert engine.load().active + engine.load().queued == 1
    await running.aclose()


async def test_close_ends_streams_that_tensorrt_llm_leaves_unanswered(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    trtllm.behaviour.token_delay_s = 0.02
    engine = await make_engine(max_batch_size=1)
    llm = trtllm.instances[-1]
    running = engine.generate(request(max_tokens=100))
    await next_chunk(running)
    waiting = asyncio.create_task(collect(engine, request(request_id="w", max_tokens=5)))
    await wait_until(lambda: llm.waiting_count == 1, within=2, every=0.005)

    await engine.close()
    with pytest.raises(EngineUnavailable, match="closed"):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(EngineUnavailable, match="closed"):
        await asyncio.wait_for(collect_rest(running), 2)
    assert llm.shutdown_calls == 1


async def collect_rest(stream: object) -> list[object]:
    return [chunk async for chunk in stream]  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [KeyError("cuda"), AssertionError("nan"), RuntimeError("x")])
async def test_fatal_error_of_any_type_fails_every_stream_and_the_engine(
    make_engine: Factory, trtllm: ModuleType, error: BaseException
) -> None:
    trtllm.behaviour.token_delay_s = 0.02
    engine = await make_engine(max_batch_size=4)
    bystander = asyncio.create_task(collect(engine, request(request_id="b", max_tokens=100)))
    await wait_until(lambda: len(trtllm.instances[-1].active_ids) == 1, within=2, every=0.005)
    trtllm.behaviour.fail_after = 2
    trtllm.behaviour.fail_with = lambda: error
    with pytest.raises(EngineFailed):
        await collect(engine, request(max_tokens=10))
    # The executor shut itself down and never answers the other stream: the engine ends it.
    with pytest.raises(EngineFailed):
        await asyncio.wait_for(bystander, 2)
    assert engine.failed
    with pytest.raises(EngineFailed):
        await collect(engine, request(request_id="later"))


async def test_executor_shut_down_behind_the_engine_is_fatal(
    make_engine: Factory, trtllm: ModuleType
) -> None:
    engine = await make_engine()
    trtllm.instances[-1].shutdown()
    with pytest.raises(EngineFailed):
        await collect(engine, request())
    assert engine.failed


def _engine_dir(path: Path, *, tokenizer: bool = True) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"build_config": {"max_seq_len": 10}}))
    (path / "rank0.engine").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


async def test_prebuilt_engine_runs_on_the_tensorrt_backend(
    trtllm: ModuleType, tmp_path: Path
) -> None:
    engine = TrtLlmEngine(
        TrtLlmOptions(model_path=str(_engine_dir(tmp_path / "eng")), stats_idle_interval_s=0.01)
    )
    await engine.start()
    try:
        llm = trtllm.instances[-1]
        assert llm.backend == "tensorrt" and "sampler_type" not in llm.kwargs
        assert len(await collect(engine, request(model="eng", max_tokens=3, seed=5))) == 3
        with pytest.raises(InvalidEngineRequest) as err:  # 4 prompt + 7 > max_seq_len 10
            await collect(engine, request(model="eng", max_tokens=7))
        assert (err.value.reason, err.value.metadata) == (REASON_MAX_TOKENS, {"max_seq_len": "10"})
    finally:
        await engine.close()


def test_prebuilt_engine_without_tokenizer_is_refused_saying_what_to_pass(
    trtllm: ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"without a tokenizer.*checkpoint directory"):
        TrtLlmEngine(TrtLlmOptions(model_path=str(_engine_dir(tmp_path / "e", tokenizer=False))))


async def test_settings_reach_the_llm(make_engine: Factory, trtllm: ModuleType) -> None:
    await make_engine(max_seq_len=512, max_num_tokens=256, trust_remote_code=True)
    llm = trtllm.instances[-1]
    assert (llm.kwargs["max_seq_len"], llm.kwargs["max_num_tokens"]) == (512, 256)
    assert llm.trust_remote_code is True and llm.kwargs["sampler_type"] == "TorchSampler"


def test_options_validate_the_new_settings() -> None:
    options = read(
        TrtLlmOptions,
        {"model_path": "/m", "sampler_type": "TRTLLMSampler", "trust_remote_code": True},
        "w.t",
    )
    assert options.honours_seeds and options.trust_remote_code
    with pytest.raises(ValueError, match=r"^w\.t\.sampler_type: expected one of"):
        read(TrtLlmOptions, {"model_path": "/m", "sampler_type": "torch"}, "w.t")
    with pytest.raises(ValueError, match=r"^w\.t\.max_seq_len: must be at least 1"):
        read(TrtLlmOptions, {"model_path": "/m", "max_seq_len": 0}, "w.t")
    with pytest.raises(ValueError, match=r"^w\.t\.trust_remote_code: expected true or false"):
        read(TrtLlmOptions, {"model_path": "/m", "trust_remote_code": "yes"}, "w.t")


def test_missing_package_names_nvidia_index_pythons_and_the_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import now raises ImportError
    with pytest.raises(TrtLlmNotInstalled) as err:
        TrtLlmEngine(TrtLlmOptions(model_path=str(tmp_path)))
    hint = str(err.value)
    assert hint == install_hint()
    assert "--extra-index-url https://pypi.nvidia.com tensorrt-llm==1.2.0" in hint
    assert "Python 3.10 and 3.12" in hint and "OpenMPI" in hint
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.0" in hint
