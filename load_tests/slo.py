"""A scenario's objectives (`slo:`) and the check that turns a missed one into a failed run.

```yaml
slo:
  error_ratio: 0.01      # failed / requests (RESOURCE_EXHAUSTED counts unless allow_exhausted)
  p99_ms: 2000           # end-to-end latency of OK requests
  ttft_p99_ms: 500       # time to first token of OK streams
  allow_exhausted: true  # shedding by design (rate limits, full queue) is not an error
```

Without a `slo:` block a run still fails when more than `DEFAULT_ERROR_RATIO` of its requests
fail, so a run where every request is refused never passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:  # report imports scenario, which imports this module
    from load_tests.report import ResultsJson

DEFAULT_ERROR_RATIO = 0.05
_KEYS = {"error_ratio", "p99_ms", "ttft_p99_ms", "allow_exhausted"}


class ObjectiveError(ValueError):
    """An `slo:` block is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Objectives:
    error_ratio: float = DEFAULT_ERROR_RATIO
    p99_ms: float | None = None
    ttft_p99_ms: float | None = None
    allow_exhausted: bool = True

    @classmethod
    def from_mapping(cls, data: object, path: str = "scenario.slo") -> Self:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ObjectiveError(f"{path}: expected a mapping of objectives")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ObjectiveError(
                f"{path}.{unknown[0]}: unknown key; expected one of {', '.join(sorted(_KEYS))}"
            )
        ratio = _number(data.get("error_ratio", DEFAULT_ERROR_RATIO), f"{path}.error_ratio")
        if ratio > 1:
            raise ObjectiveError(f"{path}.error_ratio: expected a share between 0 and 1")
        allow = data.get("allow_exhausted", True)
        if not isinstance(allow, bool):
            raise ObjectiveError(f"{path}.allow_exhausted: expected true or false")
        return cls(
            error_ratio=ratio,
            p99_ms=_optional(data, "p99_ms", path),
            ttft_p99_ms=_optional(data, "ttft_p99_ms", path),
            allow_exhausted=allow,
        )

    def missed(self, results: ResultsJson) -> list[str]:
        """One sentence per objective the run missed (empty: the run passed)."""
        totals = results["totals"]
        problems: list[str] = []
        if totals["requests"] == 0:
            return ["no request was sent"]
        failed = totals["failed"] + (0 if self.allow_exhausted else totals["rejected"])
        ratio = failed / totals["requests"]
        if ratio > self.error_ratio:
            codes = ", ".join(
                f"{code} {n}" for code, n in sorted(totals["by_code"].items()) if code != "OK"
            )
            problems.append(
                f"error ratio {ratio:.1%} ({failed} of {totals['requests']}: {codes}) is above "
                f"the objective {self.error_ratio:.1%}"
            )
        e2e, ttft = totals["e2e_ms"], totals["ttft_ms"]
        if self.p99_ms is not None:
            if e2e is None:
                problems.append("p99 latency objective set, but no request succeeded")
            elif e2e["p99"] > self.p99_ms:
                problems.append(
                    f"p99 latency {e2e['p99']:.0f} ms is above the objective {self.p99_ms:.0f} ms"
                )
        if self.ttft_p99_ms is not None:
            if ttft is None:
                problems.append("time-to-first-token objective set, but no stream succeeded")
            elif ttft["p99"] > self.ttft_p99_ms:
                problems.append(
                    f"p99 time to first token {ttft['p99']:.0f} ms is above the objective "
                    f"{self.ttft_p99_ms:.0f} ms"
                )
        return problems


def _number(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ObjectiveError(f"{path}: expected a number of 0 or more")
    return float(value)


def _optional(data: Mapping[str, object], key: str, path: str) -> float | None:
    value = data.get(key)
    return None if value is None else _number(value, f"{path}.{key}")
