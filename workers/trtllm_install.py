"""Importing TensorRT-LLM, and what to tell an operator whose machine does not have it.

The `tensorrt-llm` name on PyPI holds only placeholder sdists: NVIDIA publishes the wheels on its
own package index, for Python 3.10 and 3.12 only (1.2.0), and they need CUDA and OpenMPI on the
host. The realistic way to run this worker on a GPU is NVIDIA's release container.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

_log = logging.getLogger(__name__)

SUPPORTED_VERSION = "1.2.0"
SUPPORTED_VERSION_PREFIX = "1.2."
SUPPORTED_PYTHONS = ((3, 10), (3, 12))
RELEASE_CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.0"
NVIDIA_INDEX = "https://pypi.nvidia.com"
PIP_COMMAND = f"pip install --extra-index-url {NVIDIA_INDEX} tensorrt-llm=={SUPPORTED_VERSION}"


def install_hint() -> str:
    """How to get TensorRT-LLM, naming this interpreter when its version has no wheels."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = " and ".join(f"{major}.{minor}" for major, minor in SUPPORTED_PYTHONS)
    if (sys.version_info.major, sys.version_info.minor) in SUPPORTED_PYTHONS:
        python = f"Python {wheels} (this is {running})"
    else:
        python = f"Python {wheels} only (this is {running}, which has no wheels)"
    return (
        "the trtllm engine needs TensorRT-LLM, which is not installed. Recommended: run the "
        f"worker in NVIDIA's release container {RELEASE_CONTAINER} (deploy/images/"
        "worker.Dockerfile builds on it). To install it yourself on a machine with an NVIDIA "
        f"GPU, CUDA and OpenMPI (e.g. apt-get install libopenmpi-dev): `{PIP_COMMAND}` "
        f"(NVIDIA's package index; the PyPI name is a placeholder), for {python}. "
        "Without a GPU, start the worker with `--engine sim`."
    )


INSTALL_HINT = install_hint()


class TrtLlmNotInstalled(ImportError):
    """`tensorrt_llm` cannot be imported; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class TrtLlmModules:
    """The parts of `tensorrt_llm` the engine uses, imported once."""

    trtllm: ModuleType
    llmapi: ModuleType
    request_error: type[Exception]

    def load_engine_llm(self) -> Callable[..., Any]:
        """`tensorrt_llm._tensorrt_engine.LLM`, the LLM over a prebuilt TensorRT engine."""
        module = importlib.import_module("tensorrt_llm._tensorrt_engine")
        factory: Callable[..., Any] = module.LLM
        return factory


def import_tensorrt_llm() -> TrtLlmModules:
    """Import TensorRT-LLM; raises TrtLlmNotInstalled with the install hint when it is missing."""
    try:
        trtllm = importlib.import_module("tensorrt_llm")
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
        utils = importlib.import_module("tensorrt_llm.executor.utils")
    except ImportError as err:
        raise TrtLlmNotInstalled(install_hint()) from err
    version = str(getattr(trtllm, "__version__", "unknown"))
    if not version.startswith(SUPPORTED_VERSION_PREFIX):
        # Signatures move between 1.x releases; say so before a call fails far from here.
        _log.warning(
            "tensorrt_llm %s is installed; this engine was written against %s",
            version,
            SUPPORTED_VERSION,
        )
    request_error: type[Exception] = utils.RequestError
    return TrtLlmModules(trtllm, llmapi, request_error)
