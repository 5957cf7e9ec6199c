"""Benchmark: policy evaluation cost at 10 vs 1,000 departments (it must stay flat).

Run: `python -m load_tests.bench_policy [--requests N]`. Prints one row per size and the ratio of
per-request cost to the smallest size. Each generated department has its own token caps,
limits, guard actions and custom patterns, so the rules grow with the departments.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from policy import PolicyRequest, PolicySet, evaluate, load_directory

DEFAULTS = """\
version: 1
pools:
  onprem-gpu: {on_prem: true}
  eu-cloud: {on_prem: false}
models:
  llama-3.1-8b-instruct: {pools: [onprem-gpu]}
  qwen2.5-7b-instruct: {pools: [onprem-gpu, eu-cloud]}
groups:
  general: [llama-3.1-8b-instruct, qwen2.5-7b-instruct]
classifications: [public, internal, confidential, {name: health, on_prem_only: true}]
priority_classes: {emergency: 100, clinical: 50, standard: 10, batch: 0}
department_defaults:
  models: [general]
  tokens: {max_prompt: 8192, max_output: 1024}
  data:
    allowed: [public, internal, confidential, health]
    default: internal
    purpose_required: [health]
    pools:
      public: [onprem-gpu, eu-cloud]
      internal: [onprem-gpu, eu-cloud]
      confidential: [onprem-gpu]
      health: [onprem-gpu]
  priority: standard
"""

DEPARTMENT = """\
version: 1
department: dept{i:04d}
tokens: {{max_prompt: {prompt}, max_output: {output}, on_excess: {excess}}}
priority: {priority}
limits:
  department: {{requests_per_minute: {rpm}, tokens_per_day: {tpd}}}
  user: {{requests_per_minute: 30, concurrent_streams: {{amount: 4, shadow: true}}}}
guard:
  cpr: {cpr}
  email: redact
  phone: redact
  patterns:
    ward_{i}: {{regex: 'WARD-{i}-\\d{{4}}', action: redact}}
    case_{i}: {{regex: 'CASE{i}/\\d{{6}}', action: block}}
    project_{i}: {{regex: 'P{i}-[A-Z]{{3}}', action: redact, ignore_case: true}}
"""

# A realistic clinical prompt (about 2 KB) with nothing to redact: the guard scans all of it.
PROMPT = (
    "Summarise the following discharge note for the general practitioner. The patient was "
    "admitted with community-acquired pneumonia, treated with intravenous antibiotics for three "
    "days and switched to oral treatment. Oxygen saturation normalised on day two. "
) * 8


@dataclass(frozen=True, slots=True)
class Who:
    """A minimal subject; the gateway passes its Principal."""

    department: str
    roles: frozenset[str] = frozenset()
    clearance: str | None = "health"
    purpose: str | None = "treatment"


def write_policy(directory: Path, departments: int) -> None:
    """A policy directory with `departments` distinct department files."""
    (directory / "defaults.yaml").write_text(DEFAULTS)
    for i in range(departments):
        text = DEPARTMENT.format(
            i=i,
            prompt=4096 + i,
            output=512 + i % 512,
            excess=("clamp", "refuse")[i % 2],
            priority=("emergency", "clinical", "standard", "batch")[i % 4],
            rpm=100 + i,
            tpd=1_000_000 + i,
            cpr=("block", "redact")[i % 2],
        )
        (directory / f"dept{i:04d}.yaml").write_text(text)


def measure(policy: PolicySet, departments: int, requests: int, rounds: int) -> float:
    """Median over `rounds` of the mean seconds per `evaluate` call, departments drawn at random."""
    rng = random.Random(departments)
    subjects = [Who(f"dept{rng.randrange(departments):04d}") for _ in range(requests)]
    request = PolicyRequest("llama-3.1-8b-instruct", (PROMPT,), 600, 256, "health", "treatment")
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for subject in subjects:
            decision = evaluate(policy, subject, request)
        samples.append((time.perf_counter() - start) / requests)
        assert decision.allowed, decision.denial
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    """Print a table of load time and evaluation cost per size, with the ratio to the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'departments':>11}  {'load ms':>8}  {'us/request':>10}  {'ratio':>6}")
    baseline = 0.0
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_policy(Path(tmp), size)
            start = time.perf_counter()
            policy = load_directory(tmp)
            load_ms = (time.perf_counter() - start) * 1000
        cost = measure(policy, size, args.requests, args.rounds)
        baseline = baseline or cost
        print(f"{size:>11}  {load_ms:>8.1f}  {cost * 1e6:>10.2f}  {cost / baseline:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
