"""Load-test scenarios: the YAML file that says how hard to push and what requests to send."""

from __future__ import annotations

import random
import shlex
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Self

from common.settings import Invalid, SettingsError, load_file, read, setting
from common.settings_checks import non_empty, positive
from common.weighted import Weighted
from load_tests.load_shape import Load
from load_tests.slo import Objectives

Rpc = Literal["unary", "stream"]

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


class ScenarioError(SettingsError):
    """A scenario file is invalid or a token cannot be obtained; the message names the key."""


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a department's bearer token comes from: a file, or a command that prints it.

    Relative file paths and commands are resolved in the scenario file's directory. A command is
    run without a shell; `refresh_s` re-runs it during the test so that short-lived tokens do not
    expire mid-run.
    """

    file: str | None = setting(None, doc="file holding the bare token (relative: to the scenario)")
    command: str | None = setting(
        None, doc="command printing the token, run without a shell in the scenario's directory"
    )
    refresh_s: float | None = setting(
        None, doc="re-run `command` this often during the run", check=positive
    )

    def check(self) -> None:
        if (self.file is None) == (self.command is None):
            raise Invalid("", "set exactly one of `file` and `command`")
        if self.refresh_s is not None and self.command is None:
            raise Invalid("refresh_s", "only a `command` token can be refreshed")

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

    name: str = setting(doc="the department's name in the report", check=non_empty)
    weight: float = setting(1.0, doc="relative share of the requests", check=positive)
    token: TokenSource | None = setting(
        None, doc="its bearer token; absent: the one in `--token-file`"
    )
    classification: str | None = setting(None, doc="data classification sent with each request")
    purpose: str | None = setting(None, doc="purpose of processing sent with each request")


@dataclass(frozen=True, slots=True)
class ScenarioTls:
    """TLS to the gateway; absent: plaintext."""

    ca_file: str | None = setting(
        None, doc="CA certificate (PEM) the gateway's is checked against; relative: to the file"
    )
    server_name: str | None = setting(None, doc="name to expect in the gateway's certificate")


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

    name: str = setting(doc="the scenario's name in the report", check=non_empty)
    load: Load = setting(doc="how the load is generated")
    departments: Weighted[Department] = setting(doc="where the requests come from")
    models: Weighted[str] = setting(doc="models requested")
    prompt_tokens: Weighted[int] = setting(doc="prompt lengths, in words (about one token each)")
    max_tokens: Weighted[int] = setting(doc="max_tokens of the requests")
    rpc: Weighted[Rpc] = setting(Weighted(("unary",), (1.0,)), doc="unary calls or streams")
    target: str | None = setting(None, doc="gateway HOST:PORT; `--target` overrides it")
    deadline_s: float = setting(60.0, doc="deadline of each request", check=positive)
    channels: int = setting(4, doc="gRPC channels the requests are spread over", check=positive)
    seed: int = setting(1, doc="seed of the draws, for a reproducible sequence")
    tls: ScenarioTls = setting(factory=ScenarioTls, doc="TLS to the gateway")
    slo: Objectives = setting(factory=Objectives, doc="what the run must meet to pass")
    base_dir: Path = field(default=Path("."))  # the file's directory, for tokens and the CA

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


def read_scenario(data: object, path: str = "") -> Scenario:
    """A scenario from a parsed mapping; errors name the key under `path`."""
    try:
        return read(Scenario, data, path)
    except SettingsError as err:
        raise ScenarioError(str(err)) from None


def load_scenario(file: str | Path) -> Scenario:
    """Parse a scenario YAML file; relative token paths resolve against its directory."""
    source = Path(file)
    try:
        scenario = load_file(Scenario, source)
    except SettingsError as err:
        raise ScenarioError(str(err)) from None
    return replace(scenario, base_dir=source.resolve().parent)
