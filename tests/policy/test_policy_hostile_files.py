"""Hostile policy files: any bytes or YAML give a clean error naming the file, or a valid policy."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from policy import PolicyError, PolicyStore
from policy.checker import main as check_main
from policy.loader import load_directory

FIXTURES = Path(__file__).resolve().parent / "fixtures"

BUDGET = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Control characters PyYAML refuses when its reader is constructed (ReaderError).
READER_ERROR = b"version: 1\ndepartment: alpha\x07\n"
BILLION_LAUGHS = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9)
)
SPECIAL = [
    READER_ERROR,
    b"\xff\xfe\x00garbage",
    BILLION_LAUGHS.encode(),
    b"a: &a [*a]\n",
    b"[" * 20_000,
    b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 200)),
    b"version: 1\ndepartment: alpha\nx: 2001-13-01\n",
    b"version: " + b"9" * 10_000 + b"\n",
    b"? [1]\n: 2\n",
    b"%YAML 9.9\n---\nx: 1\n",
    b"--- 1\n--- 2\n",
    b"!!binary notbase64!\n",
    b"x: " + b"y" * (2 * 1024 * 1024) + b"\n",
]


def yaml_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    )


def yaml_texts() -> st.SearchStrategy[bytes]:
    import yaml

    fragments = st.sampled_from(
        ["&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "!!", "? ", "'",
         '"', "#", "version: 1\n", "department: alpha\n", "%", "---\n", "\t", "\x00", "\x85"]
    )  # fmt: skip
    return st.one_of(
        st.binary(max_size=300),
        st.lists(fragments, max_size=40).map(lambda parts: "".join(parts).encode("utf-8")),
        yaml_values().map(lambda value: yaml.safe_dump(value).encode()),
        st.sampled_from(SPECIAL),
    )


def _write_department(directory: Path, content: bytes) -> Path:
    shutil.copytree(FIXTURES / "base", directory, dirs_exist_ok=True)
    path = directory / "alpha.yaml"
    path.write_bytes(content)
    return path


@BUDGET
@given(content=yaml_texts())
def test_any_department_file_gives_issues_naming_it_or_a_policy(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    directory = tmp_path_factory.mktemp("policy")
    path = _write_department(directory, content)
    started = time.monotonic()
    try:
        load_directory(directory)
    except PolicyError as err:
        assert err.issues
        assert all(issue.file.startswith(str(directory)) for issue in err.issues)
        assert any(issue.file == str(path) for issue in err.issues)
    # Generous: a 2-core shared VM; an expanded alias bomb would take minutes or exhaust memory.
    assert time.monotonic() - started < 10


@BUDGET
@given(content=yaml_texts())
def test_any_defaults_file_gives_issues_or_a_policy(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    directory = tmp_path_factory.mktemp("policy")
    shutil.copytree(FIXTURES / "base", directory, dirs_exist_ok=True)
    (directory / "defaults.yaml").write_bytes(content)
    with pytest.raises(PolicyError) as raised:
        load_directory(directory)
    assert any(issue.file == str(directory / "defaults.yaml") for issue in raised.value.issues)


@pytest.mark.parametrize("content", SPECIAL, ids=range(len(SPECIAL)))
def test_special_documents_are_refused_with_the_file_named(tmp_path: Path, content: bytes) -> None:
    path = _write_department(tmp_path, content)
    with pytest.raises(PolicyError) as raised:
        load_directory(tmp_path)
    assert any(issue.file == str(path) for issue in raised.value.issues)


def test_alias_bomb_is_refused_quickly_not_expanded(tmp_path: Path) -> None:
    path = _write_department(tmp_path, BILLION_LAUGHS.encode())
    with pytest.raises(PolicyError) as raised:
        load_directory(tmp_path)
    [issue] = [i for i in raised.value.issues if i.file == str(path)]
    assert "aliases" in issue.message


@BUDGET
@given(content=yaml_texts())
def test_policy_check_never_prints_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    directory = tmp_path_factory.mktemp("policy")
    _write_department(directory, content)
    code = check_main([str(directory)])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in out + err
    if code == 1:
        assert "policy rejected" in err


def _failures() -> float:
    return REGISTRY.get_sample_value("llmgw_policy_reloads_total", {"result": "failure"}) or 0.0


def test_undecodable_file_fails_the_reload_visibly_and_later_changes_apply(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "base", tmp_path, dirs_exist_ok=True)
    (tmp_path / "beta.yaml").write_text(
        (tmp_path / "alpha.yaml").read_text().replace("department: alpha", "department: beta")
    )
    store = PolicyStore(tmp_path)
    assert set(store.load().departments) == {"alpha", "beta"}
    before = _failures()

    (tmp_path / "beta.yaml").write_bytes(READER_ERROR)
    assert not store.reload_if_changed()

    assert _failures() == before + 1
    assert store.health()["status"] == "degraded"
    assert "beta.yaml" in store.health()["last_error"]
    # A second bad change is reported again.
    (tmp_path / "beta.yaml").write_bytes(READER_ERROR + b"\x08")
    assert not store.reload_if_changed()
    assert _failures() == before + 2

    (tmp_path / "beta.yaml").unlink()
    assert store.reload_if_changed()
    assert set(store.current().departments) == {"alpha"}
    assert store.health()["status"] == "ok"


async def test_reloader_survives_an_unexpected_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from policy.loader import Snapshot, build
    from policy.policyset import PolicySet

    shutil.copytree(FIXTURES / "base", tmp_path, dirs_exist_ok=True)
    store = PolicyStore(tmp_path)
    store.load()
    calls = 0

    def broken_build(snapshot: Snapshot) -> PolicySet:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return build(snapshot)

    monkeypatch.setattr("policy.store.build", broken_build)
    before = _failures()
    task = asyncio.create_task(store.run_reloader(0.01))
    try:
        (tmp_path / "alpha.yaml").unlink()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if "alpha" not in store.current().departments:
                break
    finally:
        task.cancel()
    assert _failures() >= before + 1
    assert "alpha" not in store.current().departments
    assert store.health()["status"] == "ok"
