"""The worker image: valid instructions, the pinned release container, worker deps only."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DOCKERFILE = Path(__file__).parents[2] / "deploy" / "images" / "worker.Dockerfile"
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) per logical line: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        keyword, _, args = logical.partition(" ")
        result.append((keyword, args.strip()))
    assert not pending, "the file ends inside a line continuation"
    return result


def test_every_line_is_a_known_instruction_and_from_is_the_pinned_release() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    assert all(keyword in INSTRUCTIONS for keyword, _ in parsed), parsed
    assert parsed[0] == ("FROM", "nvcr.io/nvidia/tensorrt-llm/release:1.2.0")
    assert [k for k, _ in parsed].count("FROM") == 1
    assert parsed[-2][0] == "ENTRYPOINT" and parsed[-1][0] == "CMD"


def _installed_requirements() -> set[str]:
    runs = " ".join(
        args for keyword, args in instructions(DOCKERFILE.read_text()) if keyword == "RUN"
    )
    return {
        re.split(r"[<>=\[]", name)[0].lower()
        for name in re.findall(r'"([A-Za-z0-9_.\-\[\]]+[<>=][^"]*)"', runs)
    }


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """`names` and everything they require (pip installs those too)."""
    seen: set[str] = set()
    todo = [_norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_norm(re.split(r"[ <>=!~;\[(]", r)[0]) for r in requires if "extra ==" not in r]
    return seen


def test_image_installs_what_the_worker_imports_and_nothing_of_the_gateway() -> None:
    listed = _installed_requirements()
    assert {"pyjwt", "pyyaml", "psycopg", "matplotlib", "tenacity"}.isdisjoint(listed)
    # Which distributions does a worker process import? Ask a fresh interpreter.
    code = (
        "import sys, workers.cli, workers.trtllm, workers.server;"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    modules = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    owners = metadata.packages_distributions()
    # "google" is a namespace shared by protobuf and googleapis-common-protos (both listed).
    imported = {
        _norm(dist)
        for module in modules
        if module not in {"google", "_distutils_hack"}
        for dist in owners.get(module, [])
    } - {"llm-gateway"}
    optional = {"cryptography", "cffi", "pycparser", "typing-extensions"}
    missing = imported - _closure(listed) - optional
    assert not missing, f"the worker imports {sorted(missing)}, which the image does not install"
