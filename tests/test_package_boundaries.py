"""The packages lean on `common`, not on each other: workers and gateway never import each other.

A GPU worker image carries no gateway code, and a gateway never loads engine code: both are
checked statically (every import statement in the package) and at run time (what a worker
process has loaded after importing everything it runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package of every import in `package`'s modules, by module path."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("workers", {"gateway", "policy", "audit", "load_tests"}),
        ("gateway", {"workers", "load_tests"}),
        ("common", {"gateway", "workers", "policy", "audit", "load_tests"}),
        ("policy", {"gateway", "workers", "audit", "load_tests"}),
    ],
)
def test_package_does_not_import(package: str, forbidden: set[str]) -> None:
    offenders = {
        module: sorted(names & forbidden)
        for module, names in imported_packages(package).items()
        if names & forbidden
    }
    assert offenders == {}


WORKER_PROBE = """
import sys
import workers.cli, workers.server, workers.sim, workers.trtllm, workers.registration
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_worker_process_loads_no_jwt_policy_or_audit_code() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    loaded = set(out.stdout.split())
    assert "workers" in loaded and "common" in loaded
    assert loaded.isdisjoint({"gateway", "policy", "audit", "jwt", "yaml", "psycopg"}), loaded
