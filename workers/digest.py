"""Digests of what a worker loaded: a manifest of the model directory, or the simulator's config.

The model register names the digest of each approved build; the gateway routes only to workers
advertising it. A directory's digest is the sha256 of its manifest: one line per regular file,
`<sha256 of the file>  <path relative to the directory>`, sorted by path (the format of
`sha256sum`, so an operator can rebuild and compare it with standard tools). Files are hashed in
chunks, never read whole, so that tens of gigabytes of weights cost memory for one chunk only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from workers.sim import SimConfig, answer_parameters

_CHUNK = 1 << 20
PREFIX = "sha256:"


def file_sha256(path: Path) -> str:
    """The sha256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(directory: Path) -> str:
    """The `sha256sum`-style manifest of every regular file below `directory`, sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return "".join(f"{file_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in files)


def directory_digest(directory: Path) -> str:
    """`sha256:<hex>` of the directory's manifest: what the register's `weights_digest` names."""
    return PREFIX + hashlib.sha256(manifest(directory).encode()).hexdigest()


def sim_digest(config: SimConfig, model: str) -> str:
    """`sha256:<hex>` of the simulator's configuration for `model`: deterministic, no clock.

    It covers what shapes the answers (the simulator's analogue of weights: vocabulary, end of
    sequence probability, context length), not the latency model or the batch size, just as a
    model directory's digest does not change with TensorRT-LLM's batch size.
    """
    material = json.dumps(
        {"engine": "sim", "model": model, **answer_parameters(config)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return PREFIX + hashlib.sha256(material.encode()).hexdigest()


def sim_digests(config: SimConfig) -> dict[str, str]:
    """The digest of every model a simulator with `config` serves."""
    return {model: sim_digest(config, model) for model in config.models}


def main(argv: list[str] | None = None) -> int:
    """`llm-worker digest DIR`: print a model directory's digest (and with --manifest, the list)."""
    parser = argparse.ArgumentParser(
        prog="llm-worker digest",
        description="Print the weights digest of a model directory, for the model register.",
    )
    parser.add_argument("directory", type=Path, help="the model directory a worker loads")
    parser.add_argument("--manifest", action="store_true", help="print the manifest too")
    args = parser.parse_args(argv)
    try:
        text = manifest(args.directory)
    except OSError as err:
        print(f"llm-worker digest: {args.directory}: {err.strerror or err}", file=sys.stderr)
        return 1
    if args.manifest:
        print(text, end="")
    print(PREFIX + hashlib.sha256(text.encode()).hexdigest())
    return 0
