"""A scenario's `load:` section: closed or open loop, and its steps of callers or request rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.settings import Invalid, setting
from common.settings_checks import positive

Mode = Literal["closed", "open"]
Arrival = Literal["uniform", "poisson"]

_MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True, slots=True)
class Step:
    """One phase of the load: `concurrency` callers (closed loop) or `rate` requests/s (open)."""

    duration_s: float = setting(doc="how long the step lasts, in seconds", check=positive)
    concurrency: int | None = setting(
        None,
        doc="closed loop: callers, each sending a request when its last ends",
        check=positive,
    )
    rate: float | None = setting(None, doc="open loop: requests started per second", check=positive)

    @property
    def label(self) -> str:
        return f"{self.rate:g}/s" if self.rate is not None else f"{self.concurrency} callers"


@dataclass(frozen=True, slots=True)
class Load:
    """How the load is generated.

    Closed loop: each of `concurrency` callers sends its next request when the previous one ends.
    Open loop: requests start on a schedule (`uniform` gaps or `poisson` arrivals) whether or not
    earlier ones finished, so queueing in the gateway shows as latency; `max_in_flight` caps the
    client's own memory and counts requests it could not start as CLIENT_OVERLOADED. A load of one
    step may give that step's keys directly under `load` instead of a `steps` list.
    """

    mode: Mode = setting(doc="`closed` (callers wait for replies) or `open` (a request schedule)")
    steps: tuple[Step, ...] = setting((), doc="the steps, in order")
    step: Step | None = setting(
        None, inline=True, instead_of="steps", doc="one step, written directly under `load`"
    )
    arrival: Arrival = setting("uniform", doc="open loop: gaps between requests")
    max_in_flight: int = setting(
        _MAX_IN_FLIGHT, doc="open loop: most requests running at once", check=positive
    )

    def __post_init__(self) -> None:
        if self.step is not None and not self.steps:
            object.__setattr__(self, "steps", (self.step,))  # the shorthand is the only step

    @property
    def duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)

    def check(self) -> None:
        if not self.steps:
            raise Invalid("steps", "expected a non-empty list (or one step's keys under `load`)")
        if self.mode == "closed":
            if self.arrival != "uniform":
                raise Invalid("arrival", "applies to the open loop only")
            if self.max_in_flight != _MAX_IN_FLIGHT:
                raise Invalid("max_in_flight", "applies to the open loop only")
        for i, step in enumerate(self.steps):
            where = "" if self.step is not None else f"steps[{i}]."
            if self.mode == "closed":
                if step.rate is not None:
                    raise Invalid(f"{where}rate", "a closed loop takes `concurrency`, not `rate`")
                if step.concurrency is None:
                    raise Invalid(f"{where}concurrency", "a closed loop needs `concurrency`")
            else:
                if step.concurrency is not None:
                    raise Invalid(
                        f"{where}concurrency", "an open loop takes `rate`, not `concurrency`"
                    )
                if step.rate is None:
                    raise Invalid(f"{where}rate", "an open loop needs `rate`")
