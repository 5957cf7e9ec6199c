"""protoc plugin for buf that runs grpcio-tools' built-in generators (`python`, `grpc_python`).

Usage in buf.gen.yaml: ``local: [.venv/bin/python, protos/plugins/grpc_tools_plugin.py, LANG]``.
grpcio-tools bundles its gRPC generator inside its own protoc rather than shipping a
``protoc-gen-grpc_python`` binary, so buf cannot reach it as a plugin. This adapter speaks the
plugin protocol: it writes the request's descriptors to a descriptor set, runs grpcio-tools' protoc
over it and returns the files it wrote. Its output is byte for byte what ``protos/generate.py``
writes from the .proto sources, so either command refreshes the checked-in modules.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

LANGUAGES = ("python", "grpc_python")


def _default_json_name(field_name: str) -> str:
    first, *rest = field_name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _drop_default_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    # buf fills in every field's json_name; protoc parsing the source records only explicit ones,
    # and the serialized descriptor embedded in *_pb2.py would otherwise differ.
    for message in messages:
        for field in [*message.field, *message.extension]:
            if field.json_name == _default_json_name(field.name):
                field.ClearField("json_name")
        _drop_default_json_names(message.nested_type)


def run(
    request: plugin_pb2.CodeGeneratorRequest, language: str
) -> plugin_pb2.CodeGeneratorResponse:
    """Generate `language` output for the request's files_to_generate."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    files = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
    for file in files.file:
        _drop_default_json_names(file.message_type)
        for extension in file.extension:
            if extension.json_name == _default_json_name(extension.name):
                extension.ClearField("json_name")
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp) / "input.binpb"
        descriptors.write_bytes(files.SerializeToString())
        out = Path(tmp) / "out"
        out.mkdir()
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptors}",
            f"--{language}_out={out}",
            *request.file_to_generate,
        ]
        if protoc.main(args) != 0:
            response.error = f"grpcio-tools' protoc failed to generate {language}"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    return response


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in LANGUAGES:
        raise SystemExit(f"usage: grpc_tools_plugin.py {{{','.join(LANGUAGES)}}} < request")
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(run(request, sys.argv[1]).SerializeToString())
