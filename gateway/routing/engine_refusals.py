"""The client's message for a request a worker's engine refused as invalid (INVALID_ARGUMENT).

A worker names the limit a request broke in a google.rpc.ErrorInfo (domain "llmgateway.worker",
reasons listed on the worker API's Generate); the gateway writes the client's message from that
reason and its numbers only. The worker's own status text, and anything the engine said, stays
in the worker's log.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from gateway.request.errors import InvalidArgument, error_info

WORKER_DOMAIN = "llmgateway.worker"
_NUMBERS = ("max_seq_len", "max_num_tokens", "prompt_tokens")
_REASONS = frozenset(
    {
        "engine.max_seq_len",
        "engine.max_num_tokens",
        "engine.max_tokens",
        "engine.seed_unsupported",
        "engine.sampling",
        "engine.chat_template",
        "engine.request_rejected",
    }
)


def _worker_error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            info = error_details_pb2.ErrorInfo()
            for packed in status_pb2.Status.FromString(value).details:
                if packed.Unpack(info) and info.domain == WORKER_DOMAIN:
                    return info
    return None


def _numbers(info: error_details_pb2.ErrorInfo) -> dict[str, int]:
    """The known numeric fields of the worker's ErrorInfo; anything else is dropped."""
    return {
        key: int(info.metadata[key])
        for key in _NUMBERS
        if key in info.metadata and info.metadata[key].isdigit()
    }


def _message(reason: str, n: dict[str, int]) -> str:
    seq, prompt, batch = n.get("max_seq_len"), n.get("prompt_tokens"), n.get("max_num_tokens")
    if reason == "engine.max_seq_len":
        size = f" ({prompt} tokens)" if prompt is not None else ""
        limit = f" of {seq} tokens" if seq is not None else ""
        return (
            f"the prompt{size} leaves no room for an answer in the model's context (max_seq_len"
            f"{limit}): shorten the prompt"
        )
    if reason == "engine.max_num_tokens":
        limit = f" ({batch})" if batch is not None else ""
        return (
            f"the prompt is longer than the model's worker accepts in one step (max_num_tokens"
            f"{limit}): shorten the prompt"
        )
    if reason == "engine.max_tokens":
        limit = f" ({seq})" if seq is not None else ""
        return (
            "max_tokens is over the remaining context: prompt plus max_tokens exceeds the "
            f"model's max_seq_len{limit}; lower max_tokens or shorten the prompt"
        )
    if reason == "engine.seed_unsupported":
        return (
            "this model's workers cannot make sampling reproducible (their sampler ignores "
            "seeds): send the request without a seed"
        )
    if reason == "engine.sampling":
        return "a sampling parameter is out of range for this model: correct it and retry"
    if reason == "engine.chat_template":
        return "this model cannot render chat messages (no chat template): send a plain prompt"
    return "the model's worker refused this request as invalid; check its length and parameters"


def invalid_request(exc: grpc.aio.AioRpcError) -> InvalidArgument:
    """The client's INVALID_ARGUMENT for a worker's refusal, with the reason as ErrorInfo."""
    info = _worker_error_info(exc)
    if info is None:
        return InvalidArgument(_message("", {}))
    numbers = _numbers(info)
    reason = info.reason if info.reason in _REASONS else "engine.request_rejected"
    return InvalidArgument(
        _message(reason, numbers),
        details=[error_info(reason, {k: str(v) for k, v in numbers.items()})],
    )
