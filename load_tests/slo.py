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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.settings import SettingsError, setting
from common.settings_checks import non_negative

if TYPE_CHECKING:  # report imports scenario, which imports this module
    from load_tests.report import ResultsJson

DEFAULT_ERROR_RATIO = 0.05


def _share(value: float, key: str) -> None:
    if value > 1:
        raise SettingsError(f"{key}: expected a share between 0 and 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Objectives:
    """What a run must meet to pass; without them, at most 5 % of the requests may fail."""

    error_ratio: float = setting(
        DEFAULT_ERROR_RATIO,
        doc="largest share of requests that may fail (0 to 1)",
        check=(non_negative, _share),
    )
    p99_ms: float | None = setting(
        None, doc="p99 end-to-end latency of OK requests, in ms", check=non_negative
    )
    ttft_p99_ms: float | None = setting(
        None, doc="p99 time to first token of OK streams, in ms", check=non_negative
    )
    allow_exhausted: bool = setting(
        True, doc="RESOURCE_EXHAUSTED (shedding by design) does not count as failed"
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
