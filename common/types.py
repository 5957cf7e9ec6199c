"""Types every part of the system speaks: why a generation ended, one chat turn."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(enum.Enum):
    """Why a generation ended (TensorRT-LLM's `CompletionOutput.finish_reason` values)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One chat message; role is `system`, `user` or `assistant`."""

    role: str
    content: str
