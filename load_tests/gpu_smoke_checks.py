"""GPU smoke checks on TensorRT-LLM's LLM API: the upstream behaviour the trtllm engine relies on.

Each check runs against one `tensorrt_llm.LLM` built with `max_batch_size=1` (so that a second
request must wait for the batch slot) and a small `max_seq_len` (so that an over-long prompt is
cheap to build). What each check confirms is in docs/gpu.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.trtllm_install import TrtLlmModules

PROMPT = "Write a short letter to a patient explaining how to take their new medication."
# The keys `workers/trtllm_load.py` reads from an iteration statistics record.
STATS_KEYS = ("numActiveRequests", "numQueuedRequests")
KV_KEYS = ("maxNumBlocks", "usedNumBlocks", "freeNumBlocks")


@dataclass
class Check:
    """One named check's outcome; `data` holds what was observed, for the JSON report."""

    name: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


Outcome = tuple[bool, str, dict[str, Any]]


async def run_check(
    checks: list[Check], name: str, body: Callable[[], Awaitable[Outcome]], timeout_s: float
) -> None:
    """Run one check with a deadline; an exception or a timeout is that check's FAIL."""
    try:
        async with asyncio.timeout(timeout_s):
            passed, detail, data = await body()
    except TimeoutError:
        passed, detail, data = False, f"no answer within {timeout_s:.0f} s", {}
    except Exception as err:
        passed, detail, data = False, f"{type(err).__name__}: {err}", {}
    checks.append(Check(name, passed, detail, data))


def over_long_prompt(max_seq_len: int) -> str:
    """A prompt of at least `max_seq_len` tokens: every word is one token or more."""
    return " ".join(["hello"] * (max_seq_len + 16))


class StatsReader:
    """Reads `llm.get_stats_async` rounds in the background and keeps every record."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.records: list[object] = []
        self.arrivals: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while not self._stop.is_set():
            received = 0
            async for record in self._llm.get_stats_async(0.5):
                self.records.append(record)
                self.arrivals.append(time.perf_counter())
                received += 1
            if not received:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def mappings(self) -> list[tuple[float, Mapping[str, Any]]]:
        """(arrival, record) pairs; a JSON string is parsed, as a caller would have to."""
        parsed = []
        for arrival, record in zip(self.arrivals, self.records, strict=True):
            if isinstance(record, str):
                record = json.loads(record)
            if isinstance(record, Mapping):
                parsed.append((arrival, record))
        return parsed


class ApiChecks:
    """The checks on one `tensorrt_llm.LLM` with a single batch slot."""

    def __init__(self, modules: TrtLlmModules, llm: Any, *, max_seq_len: int, sampler: str):
        self._modules = modules
        self._llm = llm
        self._max_seq_len = max_seq_len
        self._sampler = sampler
        self.stats: StatsReader | None = None

    def _params(self, **kwargs: Any) -> Any:
        return self._modules.trtllm.SamplingParams(**kwargs)

    def _submit(self, prompt: str, **params: Any) -> Any:
        return self._llm.generate_async(prompt, self._params(**params), streaming=True)

    async def args_max_seq_len(self) -> Outcome:
        resolved = getattr(getattr(self._llm, "args", None), "max_seq_len", None)
        data = {"llm_args_max_seq_len": resolved, "requested": self._max_seq_len}
        if not isinstance(resolved, int):
            return (
                False,
                "llm.args.max_seq_len is missing: the engine cannot learn the context "
                "limit without the max_seq_len setting",
                data,
            )
        return resolved == self._max_seq_len, f"llm.args.max_seq_len = {resolved}", data

    async def streamed_diffs(self) -> Outcome:
        output = self._submit(PROMPT, max_tokens=32)
        texts: list[str] = []
        ids: list[int] = []
        steps = 0
        async for step in output:
            completion = step.outputs[0]
            texts.append(completion.text_diff)
            ids.extend(completion.token_ids_diff)
            steps += 1
        final = output.outputs[0]
        data = {
            "steps": steps,
            "final_tokens": len(final.token_ids),
            "streamed_tokens": len(ids),
            "text_matches": "".join(texts) == final.text,
            "token_ids_match": ids == list(final.token_ids),
            "finish_reason": final.finish_reason,
        }
        passed = bool(data["text_matches"] and data["token_ids_match"] and steps > 1 and ids)
        return (
            passed,
            (
                f"{steps} steps, {len(ids)} tokens; text_diff adds up: {data['text_matches']}, "
                f"token_ids_diff adds up: {data['token_ids_match']}"
            ),
            data,
        )

    async def queued_meaning(self) -> Outcome:
        """Three requests on one batch slot, with the statistics read while they run.

        A record is compared with the number of requests that had not yet streamed a token
        when it arrived: all but one of those (the one that may just have taken the slot)
        were waiting for it.
        """
        async for _ in self._llm.get_stats_async(0.2):
            pass  # records of earlier requests, still queued
        self.stats = StatsReader(self._llm)
        outputs = [self._submit(PROMPT, max_tokens=24) for _ in range(3)]
        self.stats.start()
        try:
            starts = await asyncio.gather(*(_drain(o) for o in outputs))
        finally:
            await asyncio.sleep(0.2)  # the last iteration's record
            await self.stats.stop()
        samples = []
        for arrival, record in self.stats.mappings():
            active, queued = record.get("numActiveRequests"), record.get("numQueuedRequests")
            if isinstance(active, int) and isinstance(queued, int):
                samples.append((active, queued, sum(1 for s in starts if s > arrival)))
        if not samples:
            return False, "no iteration statistics with request counts arrived", {}
        max_active = max(a for a, _, _ in samples)
        undercounts = any(q < waiting - 1 for _, q, waiting in samples)
        data = {
            "records": len(samples),
            "max_numActiveRequests": max_active,
            "max_numQueuedRequests": max(q for _, q, _ in samples),
            "numQueuedRequests_misses_slot_waiters": undercounts,
            "samples_active_queued_waiting": samples[:40],
        }
        meaning = (
            "counts only the incoming queue: requests waiting for the batch slot are missing"
            if undercounts
            else "counted every request waiting for the batch slot"
        )
        return (
            max_active == 1,
            (
                f"max_batch_size=1, 3 requests: numActiveRequests peaked at {max_active}; "
                f"numQueuedRequests {meaning}"
            ),
            data,
        )

    async def stats_keys(self) -> Outcome:
        if self.stats is None or not self.stats.records:
            return False, "no iteration statistics arrived (enable_iter_perf_stats=True)", {}
        raw = self.stats.records[0]
        records = self.stats.mappings()
        first = records[0][1] if records else {}
        kv = first.get("kvCacheStats")
        kv_keys = sorted(kv) if isinstance(kv, Mapping) else []
        data = {
            "record_type": type(raw).__name__,
            "keys": sorted(first),
            "kvCacheStats_keys": kv_keys,
        }
        missing = [k for k in STATS_KEYS if not isinstance(first.get(k), int)]
        if "maxNumBlocks" not in kv_keys or not {"usedNumBlocks", "freeNumBlocks"} & set(kv_keys):
            missing.append("kvCacheStats.maxNumBlocks/usedNumBlocks")
        if not isinstance(raw, Mapping):
            missing.append("a mapping per record (got a string)")
        if missing:
            return False, f"missing what the engine reads: {', '.join(missing)}", data
        return True, f"records carry {', '.join(STATS_KEYS)} and kvCacheStats", data

    async def abort_frees_slot(self) -> Outcome:
        long_run = max(8, min(self._max_seq_len - 64, 512))
        first = self._submit(PROMPT, max_tokens=long_run)
        second = self._submit(PROMPT, max_tokens=8)
        first_steps = first.__aiter__()
        await anext(first_steps)
        second_start = asyncio.create_task(_first_step(second))
        await asyncio.sleep(0.3)
        waited = not second_start.done()
        aborted_at = time.perf_counter()
        first.abort()
        await second_start
        started_ms = (time.perf_counter() - aborted_at) * 1000
        final = await _final_within(first_steps, 5.0)
        data = {
            "second_waited_for_slot": waited,
            "second_started_ms_after_abort": round(started_ms, 1),
            "aborted_request_final": final,
        }
        passed = waited and final != "length"
        return (
            passed,
            (
                f"the queued request started {started_ms:.0f} ms after abort() (waited before: "
                f"{waited}); the aborted request's final response: {final}"
            ),
            data,
        )

    async def request_error(self) -> Outcome:
        prompt = over_long_prompt(self._max_seq_len)
        request_error = self._modules.request_error
        try:
            output = self._submit(prompt, max_tokens=8)
        except request_error as err:
            return True, "RequestError at submit (single-process mode)", _error_data(err, "submit")
        try:
            await anext(output.__aiter__())
        except request_error as err:
            data = _error_data(err, "first __anext__")
            return True, "RequestError on the first __anext__", data
        return False, "an over-long prompt produced output instead of a RequestError", {}

    async def seed(self) -> Outcome:
        async def sample(seed: int) -> list[int]:
            output = self._submit(PROMPT, max_tokens=24, temperature=1.0, top_k=50, seed=seed)
            await _drain(output)
            return list(output.outputs[0].token_ids)

        first, again, other = await sample(1234), await sample(1234), await sample(4321)
        data = {
            "sampler": self._sampler,
            "same_seed_equal": first == again,
            "other_seed_differs": first != other,
        }
        if self._sampler == "TRTLLMSampler":
            return (
                first == again,
                (
                    f"same seed twice equal: {first == again}; "
                    f"another seed differs: {first != other}"
                ),
                data,
            )
        return (
            True,
            (
                f"{self._sampler} ignores SamplingParams.seed (same seed twice equal: "
                f"{first == again}); the worker refuses seeds with this sampler"
            ),
            data,
        )


def _error_data(err: BaseException, where: str) -> dict[str, Any]:
    return {"raised_at": where, "type": type(err).__name__, "message": str(err)[:300]}


async def _drain(output: Any) -> float:
    """Consume a stream; when its first step arrived (inf when none did)."""
    first = float("inf")
    async for _ in output:
        first = min(first, time.perf_counter())
    return first


async def _first_step(output: Any) -> None:
    await anext(output.__aiter__())


async def _final_within(steps: AsyncIterator[Any], timeout_s: float) -> str:
    """The finish reason of what is left of a stream, or "none" when nothing ends it in time."""
    try:
        async with asyncio.timeout(timeout_s):
            async for step in steps:
                if step.finished:
                    return str(step.outputs[0].finish_reason)
    except TimeoutError:
        return "none"
    return "ended without a final"
