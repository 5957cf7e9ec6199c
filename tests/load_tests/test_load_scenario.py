"""Scenario files: the shipped examples, errors naming the key path, tokens, the request mix."""

from __future__ import annotations

import random
import shlex
import sys
from collections import Counter
from pathlib import Path

import pytest

import load_tests
from load_tests.scenario import RequestMix, ScenarioError, load_scenario, read_scenario
from tests.load_tests.conftest import WriteScenario

EXAMPLES = Path(load_tests.__file__).parent / "scenarios"


def base(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "t",
        "load": {"mode": "closed", "concurrency": 2, "duration_s": 1},
        "departments": [{"name": "d"}],
        "models": {"m": 1},
        "prompt_tokens": {8: 1},
        "max_tokens": {4: 1},
    }
    data.update(overrides)
    return data


def test_shipped_examples_parse_and_cover_each_load_shape() -> None:
    scenarios = {p.stem: load_scenario(p) for p in EXAMPLES.glob("*.yaml")}

    smoke = scenarios["smoke"]
    assert smoke.load.mode == "closed" and smoke.load.duration_s == 5
    stepped = scenarios["stepped-open-loop"]
    assert stepped.load.mode == "open" and len(stepped.load.steps) > 1
    assert [s.rate for s in stepped.load.steps] == sorted(s.rate or 0 for s in stepped.load.steps)
    mixed = scenarios["mixed-departments"]
    assert len(mixed.departments.values) >= 3
    assert all(d.token is not None for d in mixed.departments.values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"load": {"mode": "open", "steps": [{"rate": 1, "duration_s": 1}, {"rat": 2}]}},
            "scenario.load.steps[1]: unknown key(s) rat; allowed: duration_s, concurrency, rate",
        ),
        ({"models": {"m": "heavy"}}, "scenario.models.m: expected a positive number"),
        ({"prompt_tokens": {"long": 1}}, "scenario.prompt_tokens.long: expected int, got 'long'"),
        ({"max_tokens": {}}, "scenario.max_tokens: expected a non-empty mapping"),
        ({"rpc": {"bidi": 1}}, "scenario.rpc.bidi: expected one of 'unary', 'stream', got 'bidi'"),
        (
            {"load": {"mode": "closed", "rate": 5, "duration_s": 1}},
            "scenario.load.rate: a closed loop takes `concurrency`, not `rate`",
        ),
        (
            {"load": {"mode": "open", "rate": True, "duration_s": 1}},
            "scenario.load.rate: expected float, got True",
        ),
        (
            {"load": {"mode": "burst"}},
            "scenario.load.mode: expected one of 'closed', 'open', got 'burst'",
        ),
        (
            {"load": {"mode": "closed", "concurrency": 1, "duration_s": 1, "max_in_flight": 5}},
            "scenario.load.max_in_flight: applies to the open loop only",
        ),
        ({"departments": []}, "scenario.departments: expected a non-empty list"),
        (
            {"departments": [{"name": "d", "token": {"file": "a", "command": "b"}}]},
            "scenario.departments[0].token: set exactly one of `file` and `command`",
        ),
        (
            {"departments": [{"name": "d", "token": {"file": "a", "refresh_s": 5}}]},
            "scenario.departments[0].token.refresh_s: only a `command` token can be refreshed",
        ),
        ({"tls": {"ca": "x"}}, "scenario.tls: unknown key(s) ca; allowed: ca_file, server_name"),
        ({"seed": 1.5}, "scenario.seed: expected int, got 1.5"),
    ],
)
def test_invalid_scenarios_name_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        read_scenario(base(**overrides), "scenario")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"naem": "t"}, ": unknown key(s) naem; allowed: name, load, departments, models,"),
        (
            {"load": {"mode": "open", "steps": [{"rate": 1, "duraton_s": 1}]}},
            "load.steps[0]: unknown key(s) duraton_s; allowed: duration_s, concurrency, rate",
        ),
        (
            {"load": {"mode": "closed", "concurrency": 1, "duration_s": 1, "arival": "x"}},
            "load: unknown key(s) arival; allowed: mode, steps, duration_s, concurrency, rate,"
            " arrival, max_in_flight",
        ),
        (
            {"departments": [{"name": "d", "token": {"fiel": "a"}}]},
            "departments[0].token: unknown key(s) fiel; allowed: file, command, refresh_s",
        ),
        (
            {"slo": {"p99ms": 5}},
            "slo: unknown key(s) p99ms; allowed: error_ratio, p99_ms, ttft_p99_ms, allow_exhausted",
        ),
    ],
)
def test_a_misspelled_key_names_the_file_the_key_path_and_the_allowed_keys(
    write_scenario: WriteScenario, section: dict[str, object], message: str
) -> None:
    path = write_scenario(base(**section))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    where = "settings" if message.startswith(":") else ""
    assert str(caught.value).startswith(f"{path}: {where}{message}")


def test_token_file_is_read_relative_to_the_scenario(write_scenario: WriteScenario) -> None:
    path = write_scenario(base(departments=[{"name": "d", "token": {"file": "t/d.jwt"}}]))
    (path.parent / "t").mkdir()
    (path.parent / "t" / "d.jwt").write_text("  eyJhbGciOi.payload.sig \n")

    assert load_scenario(path).tokens() == {"d": "eyJhbGciOi.payload.sig"}


def test_token_with_whitespace_is_refused_without_echoing_it(write_scenario: WriteScenario) -> None:
    path = write_scenario(base(departments=[{"name": "d", "token": {"file": "d.jwt"}}]))
    (path.parent / "d.jwt").write_text("Bearer secret-value")

    with pytest.raises(ScenarioError, match="expected one bare token") as caught:
        load_scenario(path).tokens()
    assert "secret-value" not in str(caught.value)


def test_failing_token_command_reports_status_and_stderr_but_not_stdout(
    write_scenario: WriteScenario,
) -> None:
    code = "import sys; print('partial-secret'); sys.exit('no signing key configured')"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    path = write_scenario(base(departments=[{"name": "d", "token": {"command": command}}]))

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path).tokens()
    message = str(caught.value)
    assert message.startswith("scenario.departments[0].token.command: ")
    assert "exited with status 1: no signing key configured" in message
    assert "partial-secret" not in message


def test_missing_token_command_is_reported() -> None:
    data = base(departments=[{"name": "d", "token": {"command": "no-such-minter-xyz --a"}}])
    with pytest.raises(ScenarioError, match="cannot run `no-such-minter-xyz`"):
        read_scenario(data, "scenario").tokens()


def test_request_mix_follows_the_weights() -> None:
    data = base(
        models={"a": 3, "b": 1},
        prompt_tokens={8: 1, 64: 1},
        rpc={"unary": 1, "stream": 1},
        departments=[{"name": "x", "weight": 1}, {"name": "y", "weight": 4}],
    )
    mix = RequestMix(read_scenario(data, "scenario"), random.Random(3))

    draws = [mix.sample() for _ in range(4000)]

    models = Counter(d.model for d in draws)
    assert 0.71 <= models["a"] / 4000 <= 0.79
    departments = Counter(d.department.name for d in draws)
    assert 0.75 <= departments["y"] / 4000 <= 0.85
    assert {d.rpc for d in draws} == {"unary", "stream"}
    assert all(len(d.prompt.split()) == d.prompt_tokens for d in draws)
    assert not any(ch.isdigit() for d in draws[:50] for ch in d.prompt)
    assert len({d.prompt for d in draws if d.prompt_tokens == 64}) > 100  # prompts differ
    assert mix.sample(rpc="stream").rpc == "stream"
