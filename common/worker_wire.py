"""The worker protocol's enums mapped to the shared types, one table for both ends of the wire."""

from __future__ import annotations

from llmgateway.worker.v1 import worker_pb2 as wpb

from common.types import FinishReason

ROLE_NAMES = {
    wpb.ROLE_SYSTEM: "system",
    wpb.ROLE_USER: "user",
    wpb.ROLE_ASSISTANT: "assistant",
}
ROLE_VALUES = {name: value for value, name in ROLE_NAMES.items()}
FINISH_TO_PROTO = {
    FinishReason.STOP: wpb.FINISH_REASON_STOP,
    FinishReason.LENGTH: wpb.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: wpb.FINISH_REASON_CANCELLED,
    FinishReason.TIMEOUT: wpb.FINISH_REASON_TIMEOUT,
}
FINISH_FROM_PROTO = {value: reason for reason, value in FINISH_TO_PROTO.items()}
