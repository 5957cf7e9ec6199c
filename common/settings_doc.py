"""`python -m common.settings_doc > docs/configuration.md`: every settings key, from the code.

The settings classes are named by import path, so this neutral package depends on none of them.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from pathlib import Path
from typing import Any

from common.settings import describe, section_type, walk

# (title, how the file is used, "module:Class")
FILES = (
    ("Gateway", "`llm-gateway serve --config FILE`, `llm-gateway check-config --config FILE`",
     "gateway.settings:GatewaySettings"),
    ("Worker", "`llm-worker serve --config FILE` (flags override), `llm-worker check-config "
     "--config FILE`", "workers.settings:WorkerSettings"),
    ("Audit store", "`llm-audit serve --config FILE` (flags override), `llm-audit check-config "
     "--config FILE`", "audit.settings:AuditStoreSettings"),
)  # fmt: skip

HEADER = """# Configuration

Every key of every settings file, generated from the declarations in the code by
`make docs` (`python -m common.settings_doc > docs/configuration.md`); a test fails when this file
is stale. Unknown keys are refused, and every error names the file and the full key path with the
allowed keys. A key without a default is required (within its section, when the section is given).
"""


def render() -> str:
    parts = [HEADER]
    for title, usage, name in FILES:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        parts.append(f"\n## {title}\n\n{usage}. {_first_line(cls)}\n\n")
        parts.append("| Key | Type | Default | Meaning |\n|---|---|---|---|\n")
        for key, hint, declared in walk(cls):
            kind = "section" if section_type(hint) is not None else describe(declared, hint)
            doc = declared.metadata.get("doc") or _first_line(section_type(hint))
            parts.append(f"| `{key}` | {kind} | {_default(declared)} | {doc} |\n")
    return "".join(parts).replace("|  |", "| |")


def _first_line(cls: type[Any] | None) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls is not None else ""


def _default(declared: dataclasses.Field[Any]) -> str:
    if declared.default_factory is not dataclasses.MISSING:
        return ""
    if declared.default is dataclasses.MISSING:
        return "required"
    return f"`{_yaml(declared.default)}`"


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, enum.Enum):
        return _yaml(value.value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


if __name__ == "__main__":
    print(render(), end="")
