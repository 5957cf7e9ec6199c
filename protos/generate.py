"""Generate the Python modules for the protos in this directory (one command, reproducible).

Usage: ``python protos/generate.py [OUT_DIR]``. Without OUT_DIR the modules are written next to the
``.proto`` files, where the ``llmgateway`` Python package lives (pyproject maps it to
``protos/llmgateway``), so generated imports such as ``from llmgateway.v1 import gateway_pb2`` work
without path tricks. ``tests/test_protos.py`` regenerates into a temporary directory and fails when
the checked-in modules differ.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
# google/rpc is vendored for other languages; Python takes it from googleapis-common-protos.
PROTO_FILES = sorted(
    p.relative_to(HERE).as_posix() for p in HERE.rglob("*.proto") if "google" not in p.parts
)


def _plugin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi, *_pb2_grpc.py and *_pb2_grpc.pyi for every proto under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={HERE}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for proto in PROTO_FILES:
        for parent in Path(proto).parents:
            if parent != Path("."):
                (out_dir / parent / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
