"""Turns TensorRT-LLM's streamed steps into chunks whose counts add up and never leak a stop string.

TensorRT-LLM matches stop strings on token ids in the executor and then cuts the stop tokens from
`CompletionOutput.token_ids` and the text (`GenerationResultBase._handle_sequence`,
`tensorrt_llm/executor/result.py`). By then the first tokens of a multi-token stop string have
already been streamed, and the final `len(token_ids)` is smaller than the sum of the streamed
`token_ids_diff`. `StopHoldback` therefore holds back every step whose text could still be the
start of a stop string, and builds the last chunk from the final output, so that the sum of the
chunks' token counts is the reported completion count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

_log = logging.getLogger(__name__)


def held_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the beginning of some stop string."""
    longest = max((len(s) for s in stops), default=0)
    for size in range(min(len(text), longest), 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0


class StopHoldback:
    """Releases streamed steps (text, token count) once they cannot be part of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending: list[tuple[str, int]] = []
        self._emitted: list[str] = []
        self.emitted_tokens = 0

    def step(self, text: str, count: int) -> tuple[str, int]:
        """Take one step's diff; returns the text and token count that may be sent now."""
        self._pending.append((text, count))
        pending_len = sum(len(t) for t, _ in self._pending)
        keep = held_suffix("".join(t for t, _ in self._pending), self._stops) if self._stops else 0
        released_text: list[str] = []
        released_count = 0
        # Whole steps only, so that a chunk's token count always matches its text.
        while self._pending and pending_len - len(self._pending[0][0]) >= keep:
            step_text, step_count = self._pending.pop(0)
            pending_len -= len(step_text)
            released_text.append(step_text)
            released_count += step_count
        out = "".join(released_text)
        self._emitted.append(out)
        self.emitted_tokens += released_count
        return out, released_count

    def final(self, full_text: str, total_tokens: int) -> tuple[str, int, int]:
        """The last chunk from the final output: (text, token count, completion tokens)."""
        emitted = "".join(self._emitted)
        if full_text.startswith(emitted):
            rest = full_text[len(emitted) :]
        else:
            # Only a stop string the executor matched differently from the text could do this;
            # what was sent cannot be taken back, so send nothing more rather than repeat text.
            _log.warning("TensorRT-LLM's final text does not extend the streamed text")
            rest = ""
        completion = max(total_tokens, self.emitted_tokens)
        return rest, completion - self.emitted_tokens, completion
