"""Every policy failure mode: one fixture each, with the exact message (file, line, key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from policy import PolicyError, load_directory
from tests.policy.conftest import EXAMPLES, FIXTURES

FAILURES = sorted((FIXTURES / "failures").glob("*.yaml"))


def _expected(fixture: Path, directory: Path, file: Path) -> list[str]:
    lines = fixture.read_text(encoding="utf-8").splitlines()
    expected = [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]
    return [f"{file}:{line.replace('{dir}', str(directory))}" for line in expected]


def _errors(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as raised:
        load_directory(directory)
    return [str(issue) for issue in raised.value.issues]


@pytest.mark.parametrize("fixture", FAILURES, ids=[f.stem for f in FAILURES])
def test_failure_fixture_reports_its_message(fixture: Path, tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    if fixture.name.startswith("defaults_"):
        # A broken catalog is checked on its own, without departments that depend on it.
        (directory / "alpha.yaml").unlink()
        target = directory / "defaults.yaml"
    else:
        target = directory / fixture.name
    shutil.copyfile(fixture, target)

    assert _errors(directory) == _expected(fixture, directory, target)


def test_base_fixture_and_examples_are_valid() -> None:
    assert set(load_directory(FIXTURES / "base").departments) == {"alpha"}
    assert set(load_directory(EXAMPLES).departments) == {"administration", "emergency", "research"}


def test_every_error_of_a_directory_is_listed(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    for name in ("unknown_model.yaml", "unknown_priority.yaml", "wrong_type.yaml"):
        shutil.copyfile(FIXTURES / "failures" / name, directory / name)
    (directory / "wrong_type.yaml").write_text(
        (directory / "wrong_type.yaml").read_text().replace("beta", "gamma")
    )
    (directory / "unknown_priority.yaml").write_text(
        (directory / "unknown_priority.yaml").read_text().replace("beta", "delta")
    )
    errors = _errors(directory)
    assert [e.split(": ")[1] for e in errors] == ["models[1]", "priority", "tokens.max_output"]


def test_error_in_department_defaults_is_reported_once(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    defaults = directory / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("max_output: 100", "max_output: ten"))
    (directory / "beta.yaml").write_text("version: 1\ndepartment: beta\n")

    errors = _errors(directory)

    assert errors == [
        f"{defaults}:19: department_defaults.tokens.max_output: expected an integer, got a string"
    ]


def test_department_without_classification_rules_needs_a_default(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    defaults = directory / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("    default: internal\n", ""))

    # alpha inherits the whole data section, so the error is where that section is written.
    assert _errors(directory) == [
        f"{defaults}:21: department_defaults.data.default: missing; a department that does not "
        "require a classification needs a default"
    ]


def test_missing_defaults_file(tmp_path: Path) -> None:
    shutil.copyfile(FIXTURES / "base" / "alpha.yaml", tmp_path / "alpha.yaml")

    assert _errors(tmp_path) == [
        f"{tmp_path / 'defaults.yaml'}:0: -: missing; every policy directory needs a defaults.yaml"
    ]


def test_missing_directory(tmp_path: Path) -> None:
    errors = _errors(tmp_path / "absent")

    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'absent'}:0: -: cannot read policy directory")


def test_hidden_and_other_files_are_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    shutil.copytree(FIXTURES / "base", directory)
    (directory / ".alpha.yaml.swp").write_text("not: [yaml")
    (directory / "README.md").write_text("# notes")

    assert set(load_directory(directory).departments) == {"alpha"}


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    first = tmp_path / "a"
    second = tmp_path / "b"
    shutil.copytree(FIXTURES / "base", first)
    shutil.copytree(FIXTURES / "base", second)
    assert load_directory(first).version == load_directory(second).version

    (second / "alpha.yaml").write_text((second / "alpha.yaml").read_text() + "# a comment\n")
    assert load_directory(first).version != load_directory(second).version


def test_inherited_settings_merge_key_by_key(health_region: object) -> None:
    from policy import PolicySet

    assert isinstance(health_region, PolicySet)
    research = health_region.departments["research"]
    # research sets only some data.pools entries; confidential is inherited from the defaults.
    assert research.data.pools["confidential"] == frozenset({"onprem-gpu"})
    assert research.data.pools["internal"] == frozenset({"onprem-gpu"})
    # limits: department concurrency overridden, department rpm inherited.
    assert research.limits.department_limits.concurrent_streams is not None
    assert research.limits.department_limits.concurrent_streams.amount == 16
    assert research.limits.department_limits.requests_per_minute is not None
    assert research.limits.department_limits.requests_per_minute.amount == 600
    # models replaces the defaults' list instead of adding to it.
    assert health_region.departments["administration"].models == frozenset({"qwen2.5-7b-instruct"})
