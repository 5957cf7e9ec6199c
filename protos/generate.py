"""Generate the Python modules for the protos in this directory (one command, reproducible).

Usage: ``python protos/generate.py [OUT_DIR]``. Without OUT_DIR the modules are written next to the
``.proto`` files, where the ``llmgateway`` Python package lives (pyproject maps it to
``protos/llmgateway``), so generated imports such as ``from llmgateway.v1 import gateway_pb2`` work
without path tricks. ``tests/test_protos.py`` regenerates into a temporary directory and fails when
the checked-in modules differ.

``python protos/generate.py --client [OUT_DIR]`` writes the message modules of the public API
(``llmgateway/v1/gateway_pb2.py`` and ``.pyi``, no gRPC stubs) for the client library, by default
into ``clients/python/src/llmgw_client/_proto``. They are the same bytes as the server's, so the
two packages can be imported in one process: the descriptor pool accepts the identical file twice.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
CLIENT_OUT = HERE.parent / "clients" / "python" / "src" / "llmgw_client" / "_proto"
CLIENT_PROTOS = ["llmgateway/v1/gateway.proto"]
# google/rpc is vendored for other languages; Python takes it from googleapis-common-protos.
PROTO_FILES = sorted(
    p.relative_to(HERE).as_posix() for p in HERE.rglob("*.proto") if "google" not in p.parts
)


def _plugin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out_dir: Path, protos: list[str] = PROTO_FILES, stubs: bool = True) -> None:
    """Write *_pb2.py, *_pb2.pyi (and with stubs *_pb2_grpc.py, *_pb2_grpc.pyi) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={HERE}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        *([f"--grpc_python_out={out_dir}", f"--mypy_grpc_out=quiet:{out_dir}"] if stubs else []),
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for proto in protos:
        for parent in Path(proto).parents:
            if parent != Path("."):
                (out_dir / parent / "__init__.py").touch()


def generate_client(out_dir: Path) -> None:
    """Write the public API's message modules as the client library's `_proto` package."""
    generate(out_dir, CLIENT_PROTOS, stubs=False)
    (out_dir / "__init__.py").touch()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--client"]:
        generate_client(Path(args[1]) if len(args) > 1 else CLIENT_OUT)
    else:
        generate(Path(args[0]) if args else HERE)
