"""Load-test scenarios: the YAML file that says how hard to push and what requests to send."""

from __future__ import annotations

import bisect
import itertools
import random
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Literal, Self, TypeVar, cast

import yaml

from load_tests.slo import ObjectiveError, Objectives

Mode = Literal["closed", "open"]
Arrival = Literal["uniform", "poisson"]
Rpc = Literal["unary", "stream"]

_T = TypeVar("_T")

# Plain words, no digits: a generated prompt must never look like an identity number that the
# gateway's sensitive-data policy would block or redact.
_TEXT = (
    "the patient reported mild pain after the procedure and asked about follow up care "
    "summarise this note for the ward team in plain language please include the key "
    "findings medication changes and the next appointment with clear short sentences "
    "explain the policy to new staff members who work in the regional office today"
)
_WORDS = _TEXT.split()
# Spare words before a prompt's start so that prompts of equal length still differ.
_PROMPT_JITTER = 512
_TOKEN_COMMAND_TIMEOUT_S = 30.0


class ScenarioError(ValueError):
    """A scenario file is invalid or a token cannot be obtained; the message names the key."""


def _mapping(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ScenarioError(f"{path}: expected a mapping with string keys")
    return value


def _check_keys(data: Mapping[str, object], allowed: set[str], path: str) -> None:
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ScenarioError(f"{path}.{key}: unknown key (known keys: {known})")


def _str(data: Mapping[str, object], key: str, path: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{path}.{key}: expected a non-empty string")
    return value


def _opt_str(data: Mapping[str, object], key: str, path: str) -> str | None:
    return _str(data, key, path) if data.get(key) is not None else None


def _positive(value: object, path: str) -> float:
    # bool is an int in Python; `rate: true` is a mistake, not 1 request/s.
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ScenarioError(f"{path}: expected a positive number")
    return float(value)


def _positive_int(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ScenarioError(f"{path}: expected a positive integer")
    return value


class Weighted(Generic[_T]):
    """A weighted choice among values; `pick` draws one with probability weight / total."""

    __slots__ = ("_cumulative", "values", "weights")

    def __init__(self, values: Sequence[_T], weights: Sequence[float]) -> None:
        self.values: tuple[_T, ...] = tuple(values)
        self.weights: tuple[float, ...] = tuple(weights)
        self._cumulative = list(itertools.accumulate(self.weights))

    def pick(self, rng: random.Random) -> _T:
        point = rng.random() * self._cumulative[-1]
        return self.values[bisect.bisect_right(self._cumulative, point)]

    @classmethod
    def of(cls, data: object, path: str, key_type: type[_T]) -> Weighted[_T]:
        """Parse `{value: weight, ...}`, checking each key is a `key_type`."""
        if not isinstance(data, Mapping) or not data:
            raise ScenarioError(f"{path}: expected a non-empty mapping of value to weight")
        values: list[_T] = []
        weights: list[float] = []
        for value, weight in data.items():
            if isinstance(value, bool) or not isinstance(value, key_type):
                raise ScenarioError(f"{path}.{value}: expected {key_type.__name__} keys")
            values.append(value)
            weights.append(_positive(weight, f"{path}.{value}"))
        return cls(values, weights)


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a department's bearer token comes from: a file, or a command that prints it.

    Relative file paths and commands are resolved in the scenario file's directory. A command is
    run without a shell; `refresh_s` re-runs it during the test so that short-lived tokens do not
    expire mid-run.
    """

    file: str | None = None
    command: str | None = None
    refresh_s: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        _check_keys(data, {"file", "command", "refresh_s"}, path)
        file, command = _opt_str(data, "file", path), _opt_str(data, "command", path)
        if (file is None) == (command is None):
            raise ScenarioError(f"{path}: set exactly one of `file` and `command`")
        refresh = data.get("refresh_s")
        if refresh is not None and command is None:
            raise ScenarioError(f"{path}.refresh_s: only a `command` token can be refreshed")
        return cls(
            file=file,
            command=command,
            refresh_s=None if refresh is None else _positive(refresh, f"{path}.refresh_s"),
        )

    def read(self, base_dir: Path, path: str) -> str:
        """Return the bare token; `path` names the scenario key in error messages."""
        if self.file is not None:
            source = base_dir / self.file
            try:
                token = source.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ScenarioError(f"{path}.file: cannot read {source}: {err.strerror}") from err
            where = f"{path}.file ({source})"
        else:
            token = self._run_command(base_dir, path)
            where = f"{path}.command"
        if not token or any(c.isspace() for c in token):
            # Never echo the value: it may be a real credential.
            raise ScenarioError(
                f"{where}: expected one bare token (no spaces or `Bearer ` prefix), got "
                f"{len(token)} characters"
            )
        return token

    def _run_command(self, base_dir: Path, path: str) -> str:
        assert self.command is not None
        argv = shlex.split(self.command)
        try:
            done = subprocess.run(
                argv,
                cwd=base_dir,
                capture_output=True,
                text=True,
                timeout=_TOKEN_COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ScenarioError(f"{path}.command: cannot run `{argv[0]}`: {err}") from err
        if done.returncode != 0:
            # stderr carries the tool's own error message; stdout might hold a partial token.
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:200]
            raise ScenarioError(
                f"{path}.command: `{argv[0]}` exited with status {done.returncode}: {last}"
            )
        return done.stdout.strip()


@dataclass(frozen=True, slots=True)
class Department:
    """A department the load comes from: its token and the fields its policy may require."""

    name: str
    weight: float
    token: TokenSource | None = None
    classification: str | None = None
    purpose: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        _check_keys(data, {"name", "weight", "token", "classification", "purpose"}, path)
        token = data.get("token")
        return cls(
            name=_str(data, "name", path),
            weight=_positive(data.get("weight", 1), f"{path}.weight"),
            token=None
            if token is None
            else TokenSource.from_mapping(_mapping(token, f"{path}.token"), f"{path}.token"),
            classification=_opt_str(data, "classification", path),
            purpose=_opt_str(data, "purpose", path),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One phase of the load: `concurrency` callers (closed loop) or `rate` requests/s (open)."""

    duration_s: float
    concurrency: int | None = None
    rate: float | None = None

    @property
    def label(self) -> str:
        return f"{self.rate:g}/s" if self.rate is not None else f"{self.concurrency} callers"


@dataclass(frozen=True, slots=True)
class Load:
    """How the load is generated.

    Closed loop: each of `concurrency` callers sends its next request when the previous one ends.
    Open loop: requests start on a schedule (`uniform` gaps or `poisson` arrivals) whether or not
    earlier ones finished, so queueing in the gateway shows as latency; `max_in_flight` caps the
    client's own memory and counts requests it could not start as CLIENT_OVERLOADED.
    """

    mode: Mode
    steps: tuple[Step, ...]
    arrival: Arrival = "uniform"
    max_in_flight: int = 10_000

    @property
    def duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        step_keys = {"duration_s", "concurrency", "rate"}
        _check_keys(data, {"mode", "steps", "arrival", "max_in_flight"} | step_keys, path)
        mode = data.get("mode")
        if mode not in ("closed", "open"):
            raise ScenarioError(f"{path}.mode: expected `closed` or `open`")
        arrival = data.get("arrival", "uniform")
        if arrival not in ("uniform", "poisson"):
            raise ScenarioError(f"{path}.arrival: expected `uniform` or `poisson`")
        for key in ("arrival", "max_in_flight"):
            if mode == "closed" and key in data:
                raise ScenarioError(f"{path}.{key}: applies to the open loop only")
        raw_steps = data.get("steps")
        if raw_steps is None:
            # Shorthand: one step whose keys sit directly under `load`.
            entries: Sequence[tuple[object, str]] = [
                ({k: v for k, v in data.items() if k in step_keys}, path)
            ]
        elif isinstance(raw_steps, list) and raw_steps:
            if step_keys & data.keys():
                raise ScenarioError(f"{path}: put duration_s/concurrency/rate inside `steps`")
            entries = [(s, f"{path}.steps[{i}]") for i, s in enumerate(raw_steps)]
        else:
            raise ScenarioError(f"{path}.steps: expected a non-empty list")
        steps = tuple(_step(_mapping(raw, where), where, mode) for raw, where in entries)
        return cls(
            mode=mode,
            steps=steps,
            arrival=arrival,
            max_in_flight=_positive_int(data.get("max_in_flight", 10_000), f"{path}.max_in_flight"),
        )


def _step(data: Mapping[str, object], path: str, mode: Mode) -> Step:
    _check_keys(data, {"duration_s", "concurrency", "rate"}, path)
    duration = _positive(data.get("duration_s"), f"{path}.duration_s")
    if mode == "closed":
        if "rate" in data:
            raise ScenarioError(f"{path}.rate: a closed loop takes `concurrency`, not `rate`")
        return Step(
            duration, concurrency=_positive_int(data.get("concurrency"), f"{path}.concurrency")
        )
    if "concurrency" in data:
        raise ScenarioError(f"{path}.concurrency: an open loop takes `rate`, not `concurrency`")
    return Step(duration, rate=_positive(data.get("rate"), f"{path}.rate"))


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request drawn from the scenario's mix, before it becomes a protobuf message."""

    department: Department
    model: str
    rpc: Rpc
    prompt: str
    prompt_tokens: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole load test: target, load shape and the weighted request mix.

    Departments, models, prompt lengths (in words, about one token each), max_tokens and the rpc
    kind are drawn independently for each request with their weights; `seed` makes the sequence
    of draws reproducible.
    """

    name: str
    load: Load
    departments: Weighted[Department]
    models: Weighted[str]
    prompt_tokens: Weighted[int]
    max_tokens: Weighted[int]
    rpc: Weighted[Rpc]
    target: str | None = None
    deadline_s: float = 60.0
    channels: int = 4
    seed: int = 1
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    base_dir: Path = field(default=Path("."))
    slo: Objectives = field(default_factory=Objectives)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        keys = {"name", "target", "deadline_s", "channels", "seed", "tls", "load", "departments"}
        keys.add("slo")
        _check_keys(data, keys | {"models", "prompt_tokens", "max_tokens", "rpc"}, path)
        raw_departments = data.get("departments")
        if not isinstance(raw_departments, list) or not raw_departments:
            raise ScenarioError(f"{path}.departments: expected a non-empty list")
        departments = [
            Department.from_mapping(
                _mapping(d, f"{path}.departments[{i}]"), f"{path}.departments[{i}]"
            )
            for i, d in enumerate(raw_departments)
        ]
        rpc: Weighted[str] = Weighted.of(data.get("rpc", {"unary": 1}), f"{path}.rpc", str)
        for kind in rpc.values:
            if kind not in ("unary", "stream"):
                raise ScenarioError(f"{path}.rpc.{kind}: expected `unary` or `stream`")
        tls = _mapping(data.get("tls", {}), f"{path}.tls")
        _check_keys(tls, {"ca_file", "server_name"}, f"{path}.tls")
        seed = data.get("seed", 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ScenarioError(f"{path}.seed: expected an integer")
        return cls(
            name=_str(data, "name", path),
            load=Load.from_mapping(_mapping(data.get("load"), f"{path}.load"), f"{path}.load"),
            departments=Weighted(tuple(departments), tuple(d.weight for d in departments)),
            models=Weighted.of(data.get("models"), f"{path}.models", str),
            prompt_tokens=Weighted.of(data.get("prompt_tokens"), f"{path}.prompt_tokens", int),
            max_tokens=Weighted.of(data.get("max_tokens"), f"{path}.max_tokens", int),
            rpc=Weighted(cast(tuple[Rpc, ...], rpc.values), rpc.weights),
            target=_opt_str(data, "target", path),
            deadline_s=_positive(data.get("deadline_s", 60.0), f"{path}.deadline_s"),
            channels=_positive_int(data.get("channels", 4), f"{path}.channels"),
            seed=seed,
            tls_ca_file=_opt_str(tls, "ca_file", f"{path}.tls"),
            tls_server_name=_opt_str(tls, "server_name", f"{path}.tls"),
            slo=_objectives(data.get("slo"), f"{path}.slo"),
        )

    def with_default_token(self, token_file: Path) -> Self:
        """Departments without a `token` send the one in `token_file` (e.g. the dev stack's)."""
        source = TokenSource(file=str(token_file.resolve()))
        departments = tuple(
            d if d.token is not None else replace(d, token=source) for d in self.departments.values
        )
        return replace(self, departments=Weighted(departments, self.departments.weights))

    def tokens(self) -> dict[str, str | None]:
        """Read or mint every department's token once (blocking: call before the load starts)."""
        out: dict[str, str | None] = {}
        for i, dept in enumerate(self.departments.values):
            where = f"scenario.departments[{i}].token"
            out[dept.name] = None if dept.token is None else dept.token.read(self.base_dir, where)
        return out


class RequestMix:
    """Draws requests from a scenario's weighted mix; cheap enough for thousands per second."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self._scenario = scenario
        self._rng = rng
        longest = max(scenario.prompt_tokens.values)
        self._corpus = rng.choices(_WORDS, k=longest + _PROMPT_JITTER)

    def sample(self, rpc: Rpc | None = None) -> PlannedRequest:
        s, rng = self._scenario, self._rng
        n = s.prompt_tokens.pick(rng)
        start = rng.randrange(_PROMPT_JITTER)
        return PlannedRequest(
            department=s.departments.pick(rng),
            model=s.models.pick(rng),
            rpc=rpc if rpc is not None else s.rpc.pick(rng),
            prompt=" ".join(self._corpus[start : start + n]),
            prompt_tokens=n,
            max_tokens=s.max_tokens.pick(rng),
        )


def load_scenario(file: str | Path) -> Scenario:
    """Parse a scenario YAML file; relative token paths resolve against its directory."""
    source = Path(file)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(f"cannot read scenario {source}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ScenarioError(f"{source}: not valid YAML: {err}") from err
    scenario = Scenario.from_mapping(_mapping(data, "scenario"), "scenario")
    return replace(scenario, base_dir=source.resolve().parent)


def _objectives(data: object, path: str) -> Objectives:
    try:
        return Objectives.from_mapping(data, path)
    except ObjectiveError as err:
        raise ScenarioError(str(err)) from None
