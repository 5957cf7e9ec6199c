"""The checked-in generated code matches the .proto sources (regenerated into a temp dir)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _buf() -> Path:
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        pytest.fail("buf is not installed: `make lint` installs it under .tools/")
    return buf


def test_buf_generate_writes_the_checked_in_modules(tmp_path: Path) -> None:
    """`buf generate` with buf.gen.yaml (offline, local plugins) equals `make protos`."""
    result = subprocess.run(
        [str(_buf()), "generate", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "protos"
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    checked_in = sorted(
        p.relative_to(PROTOS)
        for p in (PROTOS / "llmgateway").rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and p.name != "__init__.py"
    )
    assert generated == checked_in, "buf generate writes other files than make protos"
    differ = [str(p) for p in generated if (PROTOS / p).read_bytes() != (out / p).read_bytes()]
    assert not differ, f"buf generate and make protos disagree on {differ}"


def _breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_buf()), "breaking", "--against", str(PROTOS / "release-image.binpb")],
        cwd=workspace, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _copy_of_the_contract(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(PROTOS, tmp_path / "protos", ignore=shutil.ignore_patterns("*.py*", "*.binpb"))
    return tmp_path


def test_buf_breaking_accepts_the_current_protos(tmp_path: Path) -> None:
    result = _breaking(_copy_of_the_contract(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_fails_on_a_renumbered_field(tmp_path: Path) -> None:
    workspace = _copy_of_the_contract(tmp_path)
    proto = workspace / "protos" / "llmgateway" / "v1" / "gateway.proto"
    text = proto.read_text()
    assert "  uint32 ready_workers = 3;\n" in text
    proto.write_text(text.replace("  uint32 ready_workers = 3;\n", "  uint32 ready_workers = 4;\n"))
    result = _breaking(workspace)
    assert result.returncode != 0
    assert "ready_workers" in result.stdout and "gateway.proto" in result.stdout, result.stdout
