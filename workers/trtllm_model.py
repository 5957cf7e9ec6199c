"""What kind of model directory the trtllm engine was given: a checkpoint or a prebuilt engine.

A Hugging Face checkpoint runs on TensorRT-LLM's default PyTorch backend (`tensorrt_llm.LLM`). A
directory written by `trtllm-build` holds `rank<N>.engine` files and a `config.json` with a
`build_config` section (read the same way by `BaseLLM._check_arguments`,
`tensorrt_llm/llmapi/llm.py`); it runs only on the TensorRT backend,
`tensorrt_llm._tensorrt_engine.LLM`, and carries no tokenizer unless one was copied in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A checked model directory; `engine_max_seq_len` is the engine's build limit, if any."""

    path: Path
    prebuilt_engine: bool
    engine_max_seq_len: int | None = None


def _build_config(path: Path) -> dict[str, object] | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not ours to judge: the backend reports a broken checkpoint itself
    build = data.get("build_config") if isinstance(data, dict) else None
    return build if isinstance(build, dict) else None


def inspect_model_dir(path: str, *, key: str = "trtllm.model_path") -> ModelDir:
    """Classify `path`; raises ValueError naming `key` when it cannot be served as given."""
    directory = Path(path)
    if not directory.is_dir():
        # A name that is not a local directory would make TensorRT-LLM download it from the
        # Hugging Face Hub: off this country's infrastructure, so refuse.
        raise ValueError(
            f"{key}: {path!r} is not a directory; pass a local model directory (the worker "
            "never downloads models)"
        )
    build = _build_config(directory)
    engines = sorted(directory.glob("rank*.engine"))
    if build is None and not engines:
        return ModelDir(directory, prebuilt_engine=False)
    if not engines:
        raise ValueError(
            f"{key}: {path!r} has a TensorRT engine config.json (build_config) but no "
            "rank<N>.engine files; pass the complete trtllm-build output directory, or the "
            "Hugging Face checkpoint directory to run it on the PyTorch backend"
        )
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{key}: {path!r} is a prebuilt TensorRT engine without a tokenizer; copy the "
            "tokenizer files (tokenizer.json, tokenizer_config.json) of the checkpoint it was "
            "built from into it, or pass that Hugging Face checkpoint directory instead"
        )
    max_seq_len = build.get("max_seq_len") if build is not None else None
    limit = max_seq_len if isinstance(max_seq_len, int) and max_seq_len > 0 else None
    return ModelDir(directory, prebuilt_engine=True, engine_max_seq_len=limit)
