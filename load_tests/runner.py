"""The load generator: closed and open loops over grpc.aio against the gateway's public API."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

import grpc
import grpc.aio
from llmgateway.v1 import gateway_pb2, gateway_pb2_grpc

from load_tests.report import CLIENT_OVERLOADED, EXHAUSTED, OK, RunResult, Sample, percentile
from load_tests.scenario import PlannedRequest, RequestMix, Scenario, ScenarioError

if TYPE_CHECKING:
    from llmgateway.v1.gateway_pb2_grpc import InferenceServiceAsyncStub

_Request = TypeVar("_Request", gateway_pb2.GenerateRequest, gateway_pb2.GenerateStreamRequest)
Metadata = tuple[tuple[str, str], ...]

PROGRESS_INTERVAL_S = 1.0
# Below this a plain sleep is precise enough; above it a stop request must be able to cut it short.
_INTERRUPTIBLE_SLEEP_S = 0.05
_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    # A private subchannel per channel, so that `channels` really means that many HTTP/2
    # connections: one connection's stream limit would otherwise queue requests in this client.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class TargetUnreachable(ConnectionError):
    """The gateway could not be reached before the load started."""


def _request(cls: type[_Request], planned: PlannedRequest, request_id: str) -> _Request:
    dept = planned.department
    return cls(
        model=planned.model,
        prompt=planned.prompt,
        sampling=gateway_pb2.SamplingParams(max_tokens=planned.max_tokens),
        client_request_id=request_id,
        classification=dept.classification or "",
        purpose=dept.purpose or "",
    )


def generate_request(planned: PlannedRequest, request_id: str) -> gateway_pb2.GenerateRequest:
    """The unary request for a planned one."""
    return _request(gateway_pb2.GenerateRequest, planned, request_id)


def stream_request(planned: PlannedRequest, request_id: str) -> gateway_pb2.GenerateStreamRequest:
    """The streaming request for a planned one."""
    return _request(gateway_pb2.GenerateStreamRequest, planned, request_id)


def bearer(token: str | None) -> Metadata:
    """Call metadata carrying `token`; none when the department has no token."""
    return () if token is None else (("authorization", f"Bearer {token}"),)


def channel_settings(
    scenario: Scenario,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str | int]]]:
    """TLS credentials (None for plaintext) and channel options for the scenario's gateway."""
    options = list(_CHANNEL_OPTIONS)
    if scenario.tls.ca_file is None:
        return None, options
    ca = (scenario.base_dir / Path(scenario.tls.ca_file)).read_bytes()
    if scenario.tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", scenario.tls.server_name))
    return grpc.ssl_channel_credentials(root_certificates=ca), options


def open_channel(scenario: Scenario, target: str) -> grpc.aio.Channel:
    """An asyncio channel to the gateway, with TLS when the scenario names a CA file."""
    credentials, options = channel_settings(scenario)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


class LoadRunner:
    """Runs one scenario against one gateway and records a `Sample` per request.

    Call `run()` once inside an event loop; `stop()` (for example from a SIGINT handler) ends the
    schedule early and lets requests in flight finish, a second `stop()` cancels them. `progress`
    receives a status line once per second.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        target: str | None = None,
        progress: TextIO | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        resolved = target or scenario.target
        if resolved is None:
            raise ScenarioError(
                "no target: set `target` in the scenario or pass --target HOST:PORT"
            )
        self._scenario = scenario
        self._target = resolved
        self._progress = progress
        self._connect_timeout_s = connect_timeout_s
        self._mix = RequestMix(scenario, random.Random(scenario.seed))
        self._arrivals = random.Random(scenario.seed + 1)
        self._run_id = f"lt-{secrets.token_hex(4)}"
        self._samples: list[Sample] = []
        self._metadata: dict[str, Metadata] = {}
        self._stubs: list[InferenceServiceAsyncStub] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stop_count = 0
        self._in_flight = 0
        self._sent = 0
        self._t0 = 0.0
        self._step = 0

    @property
    def samples(self) -> Sequence[Sample]:
        return self._samples

    def stop(self) -> None:
        self._stop_count += 1
        self._stop.set()
        if self._stop_count > 1:
            for task in self._calls:
                task.cancel()

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def run(self) -> RunResult:
        """Mint tokens, connect, run every step, wait for the stragglers and return the samples."""
        tokens = await asyncio.to_thread(self._scenario.tokens)
        self._metadata = {name: bearer(token) for name, token in tokens.items()}
        channels = [
            open_channel(self._scenario, self._target) for _ in range(self._scenario.channels)
        ]
        try:
            await self._connect(channels)
            self._stubs = [gateway_pb2_grpc.InferenceServiceStub(c) for c in channels]
            started_at = datetime.now(UTC)
            self._t0 = asyncio.get_running_loop().time()
            helpers = [asyncio.create_task(self._report_progress())]
            helpers += [asyncio.create_task(self._refresh(i)) for i in self._refreshable()]
            try:
                if self._scenario.load.mode == "closed":
                    await self._closed_loop()
                else:
                    await self._open_loop()
                await asyncio.gather(*self._calls, return_exceptions=True)
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                self._write_progress(final=True)
            return RunResult(
                scenario=self._scenario,
                target=self._target,
                started_at=started_at,
                elapsed_s=self._now(),
                samples=list(self._samples),
                interrupted=self._stop.is_set(),
            )
        finally:
            await asyncio.gather(*(c.close() for c in channels))

    async def _connect(self, channels: Sequence[grpc.aio.Channel]) -> None:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.channel_ready() for c in channels)), self._connect_timeout_s
            )
        except TimeoutError as err:
            raise TargetUnreachable(
                f"cannot connect to {self._target} within {self._connect_timeout_s:g} s: check "
                "that the gateway runs there and that --target and the scenario's `tls` are right"
            ) from err

    async def _sleep_until(self, t: float) -> None:
        delay = t - self._now()
        if delay <= 0:
            return
        if delay < _INTERRUPTIBLE_SLEEP_S:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _closed_loop(self) -> None:
        start = 0.0
        callers: list[asyncio.Task[None]] = []
        for index, step in enumerate(self._scenario.load.steps):
            await self._sleep_until(start)
            if self._stop.is_set():
                break
            self._step = index
            end = start + step.duration_s
            assert step.concurrency is not None
            callers += [
                asyncio.create_task(self._caller(index, end)) for _ in range(step.concurrency)
            ]
            start = end
        await asyncio.gather(*callers)

    async def _caller(self, step: int, end: float) -> None:
        while not self._stop.is_set() and self._now() < end:
            await self._call(self._mix.sample(), step, self._now())

    async def _open_loop(self) -> None:
        load = self._scenario.load
        start = 0.0
        for index, step in enumerate(load.steps):
            self._step = index
            end = start + step.duration_s
            assert step.rate is not None
            due, launched = start, 0
            while due < end:
                await self._sleep_until(due)
                if self._stop.is_set():
                    return
                if self._in_flight >= load.max_in_flight:
                    self._record_overload(index, due)
                else:
                    # Launched on schedule whatever is still running: no coordinated omission.
                    task = asyncio.create_task(self._call(self._mix.sample(), index, due))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)
                launched += 1
                if load.arrival == "poisson":
                    due += self._arrivals.expovariate(step.rate)
                else:
                    # From the index, not by adding 1/rate: the summed rounding error would
                    # squeeze one request too many into the step.
                    due = start + launched / step.rate
            start = end

    def _record_overload(self, step: int, due: float) -> None:
        planned = self._mix.sample()
        now = self._now()
        self._samples.append(
            Sample(
                step=step,
                rpc=planned.rpc,
                department=planned.department.name,
                model=planned.model,
                start_s=due,
                launch_lag_s=now - due,
                end_s=now,
                code=CLIENT_OVERLOADED,
            )
        )

    async def _call(self, planned: PlannedRequest, step: int, start_s: float) -> None:
        self._sent += 1
        stub = self._stubs[self._sent % len(self._stubs)]
        request_id = f"{self._run_id}-{self._sent}"
        metadata = self._metadata[planned.department.name]
        sample = Sample(
            step=step,
            rpc=planned.rpc,
            department=planned.department.name,
            model=planned.model,
            start_s=start_s,
            launch_lag_s=self._now() - start_s,
        )
        timeout = self._scenario.deadline_s
        self._in_flight += 1
        try:
            if planned.rpc == "unary":
                response = await stub.Generate(
                    generate_request(planned, request_id), metadata=metadata, timeout=timeout
                )
                sample.completion_tokens = response.usage.completion_tokens
            else:
                call = stub.GenerateStream(
                    stream_request(planned, request_id), metadata=metadata, timeout=timeout
                )
                await self._consume(call, sample)
        except grpc.aio.AioRpcError as err:
            sample.code = err.code().name
        finally:
            self._in_flight -= 1
        sample.end_s = self._now()
        self._samples.append(sample)

    async def _consume(
        self,
        call: grpc.aio.UnaryStreamCall[
            gateway_pb2.GenerateStreamRequest, gateway_pb2.GenerateStreamResponse
        ],
        sample: Sample,
    ) -> None:
        last: float | None = None
        streamed = 0
        usage: int | None = None
        async for message in call:
            now = self._now()
            if message.token_count > 0 or message.text:
                if last is None:
                    sample.ttft_s = now - sample.start_s
                else:
                    # A message may carry several coalesced tokens: report time per token.
                    sample.itl_s.append((now - last) / max(message.token_count, 1))
                last = now
                streamed += message.token_count
            if message.HasField("usage"):
                usage = message.usage.completion_tokens
        sample.completion_tokens = usage if usage is not None else streamed

    def _refreshable(self) -> list[int]:
        depts = self._scenario.departments.values
        return [i for i, d in enumerate(depts) if d.token is not None and d.token.refresh_s]

    async def _refresh(self, index: int) -> None:
        dept = self._scenario.departments.values[index]
        assert dept.token is not None and dept.token.refresh_s is not None
        where = f"scenario.departments[{index}].token"
        while True:
            await asyncio.sleep(dept.token.refresh_s)
            try:
                token = await asyncio.to_thread(dept.token.read, self._scenario.base_dir, where)
            except ScenarioError as err:
                # Keep the last good token: it may still be valid, and the run goes on.
                if self._progress is not None:
                    self._progress.write(f"\ntoken refresh failed, keeping the old token: {err}\n")
                continue
            self._metadata[dept.name] = bearer(token)

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self._write_progress(final=False)

    def _write_progress(self, *, final: bool) -> None:
        if self._progress is None:
            return
        tty = self._progress.isatty()
        if final:
            if tty:
                self._progress.write("\n")
            self._progress.flush()
            return
        line = self.progress_line(self._now(), PROGRESS_INTERVAL_S)
        self._progress.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
        self._progress.flush()

    def progress_line(self, now: float, window_s: float) -> str:
        """One status line: position in the schedule, totals, and the last `window_s` seconds."""
        load = self._scenario.load
        # Samples are appended as they finish, so the recent ones are at the end.
        recent = list(takewhile(lambda s: s.end_s >= now - window_s, reversed(self._samples)))
        ok = sorted(s.latency_s * 1000.0 for s in recent if s.code == OK)
        exhausted = sum(1 for s in recent if s.code == EXHAUSTED)
        step = load.steps[self._step]
        latency = f"p50 {percentile(ok, 50):.1f} ms p99 {percentile(ok, 99):.1f} ms" if ok else "-"
        tokens = sum(s.completion_tokens for s in recent if s.code == OK) / window_s
        return (
            f"[{now:6.1f}s/{load.duration_s:g}s] step {self._step + 1}/{len(load.steps)} "
            f"({step.label}) | {len(self._samples)} done, {self._in_flight} in flight | last "
            f"{window_s:g}s: {len(ok)} ok, {exhausted} exhausted, "
            f"{len(recent) - len(ok) - exhausted} failed, {latency}, {tokens:.0f} tok/s"
        )
