"""The checked-in generated code matches the .proto sources (regenerated into a temp dir)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"


def test_generated_code_is_in_sync(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(PROTOS / "generate.py"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "the generator produced nothing"
    stale = [str(p) for p in generated if (PROTOS / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"out of date with the .proto files: {stale}; run `make protos`"
    checked_in = sorted(
        p.relative_to(PROTOS)
        for p in (PROTOS / "llmgateway").rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"}
    )
    assert checked_in == generated, "generated files were added or removed; run `make protos`"


def test_generated_package_imports_without_path_tricks() -> None:
    code = (
        "from llmgateway.v1 import gateway_pb2_grpc\n"
        "from llmgateway.worker.v1 import worker_pb2_grpc"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
