"""The gateway image: pinned base, non-root, plaintext health check, runtime from the lock file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from audit.report import ChartsUnavailable, render_png
from tests.deploy.conftest import ROOT

# Never in the runtime image: proto generator, charts (and what they pull in), load and test tools.
NOT_AT_RUNTIME = {
    "grpcio-tools", "matplotlib", "numpy", "pillow", "fonttools", "contourpy", "kiwisolver",
    "locust", "pytest", "mypy", "ruff", "hypothesis", "setuptools",
}  # fmt: skip


def stages() -> list[list[dict[str, str]]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    result: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if result:  # comments before the first FROM belong to no stage
            result[-1].append(instruction)
    return result


def values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def locked(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.MULTILINE))


def test_base_images_are_pinned_to_a_python_release() -> None:
    for stage in stages():
        (base,) = values(stage, "FROM")
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm( AS \w+)?", base), base


def test_runtime_stage_is_non_root_and_checks_health_over_plaintext() -> None:
    runtime = stages()[-1]
    assert values(runtime, "USER") == ["10001:10001"]
    config = yaml.safe_load((ROOT / "deploy" / "gateway.yaml").read_text())
    health_port = config["metrics"]["listen"].rpartition(":")[2]
    client_port = config["server"]["listen"].rpartition(":")[2]
    (check,) = values(runtime, "HEALTHCHECK")
    assert f"http://127.0.0.1:{health_port}/readyz" in check
    assert client_port not in check and "grpc" not in check
    # The command runs as given (exec form) with the image's own python.
    assert re.search(r'CMD \["python", "-c", ".*urllib', check)


def test_runtime_stage_holds_only_the_locked_runtime() -> None:
    build, runtime = stages()
    runs = " ".join(values(build, "RUN"))
    assert "--require-hashes" in runs and "-r requirements/runtime.lock" in runs
    assert "pip install --no-deps ." in runs  # the project, resolving nothing more
    assert values(runtime, "RUN") and all("pip" not in r for r in values(runtime, "RUN"))
    assert values(runtime, "COPY") == ["--from=build /opt/venv /opt/venv"]
    assert not NOT_AT_RUNTIME & set(locked("runtime.lock"))


def test_lock_files_pin_what_pyproject_asks_for() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = locked("runtime.lock"), locked("dev.lock")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower()
        assert name in runtime, f"{name} is not in requirements/runtime.lock: run `make lock`"
        assert req.specifier.contains(runtime[name]), f"{name}=={runtime[name]}: run `make lock`"
        assert dev[name] == runtime[name], f"{name}: dev and runtime locks differ"
    for spec in project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        assert req.specifier.contains(dev[req.name.lower()]), f"{req.name}: run `make lock`"


def test_runtime_packages_import_without_dev_or_chart_libraries() -> None:
    """gateway, workers, policy and audit never import grpc_tools or matplotlib to run."""
    script = (
        "import importlib, pkgutil, sys\n"
        "for banned in ('grpc_tools', 'matplotlib'):\n"
        "    sys.modules[banned] = None\n"
        "for package in ('gateway', 'workers', 'policy', 'audit'):\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_png_report_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ChartsUnavailable, match=r"llm-gateway\[charts\]"):
        render_png([], str(tmp_path / "usage.png"), "usage")
    assert not (tmp_path / "usage.png").exists()
