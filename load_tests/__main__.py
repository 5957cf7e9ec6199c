"""Command line of the load-testing tool: `python -m load_tests run|compare|chart|soak`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from load_tests.compare import ResultsFileError, compare, load_results
from load_tests.report import ResultsJson, build_results, render_text
from load_tests.runner import LoadRunner
from load_tests.scenario import ScenarioError, load_scenario

# Exit status for a run that could not start (bad scenario, token, target, results file).
EXIT_USAGE = 2
# Exit status for a run that ran but failed: too many errors, or an objective (`slo:`) missed.
EXIT_MISSED = 1
# Where `llm-gateway dev` writes its token (its --data-dir defaults to .data).
DEV_TOKEN_FILE = Path(".data") / "dev-token"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests", description="Load-test an LLM gateway over gRPC."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="drive a running gateway with a scenario")
    run.add_argument("--scenario", required=True, help="scenario YAML file")
    run.add_argument("--target", help="gateway HOST:PORT (overrides the scenario's `target`)")
    run.add_argument("--out", help="write the results as JSON to this file")
    run.add_argument("--png", help="write a latency chart to this PNG file")
    run.add_argument("--no-progress", action="store_true", help="no status line on stderr")
    run.add_argument(
        "--token-file",
        type=Path,
        help="bearer token for departments without `token:` "
        f"(default: {DEV_TOKEN_FILE}, written by `llm-gateway dev`, when it exists)",
    )
    cmp = sub.add_parser("compare", help="compare two results files side by side")
    cmp.add_argument("a", help="baseline results JSON")
    cmp.add_argument("b", help="results JSON to compare with the baseline")
    chart = sub.add_parser("chart", help="draw the chart of a results file")
    chart.add_argument("results", help="results JSON")
    chart.add_argument("--png", required=True, help="PNG file to write")
    soak = sub.add_parser("soak", help="start a real stack, load it while injecting faults")
    soak.add_argument("--minutes", type=float, default=30.0, help="load duration (default 30)")
    soak.add_argument("--rate", type=float, default=20.0, help="requests per second")
    soak.add_argument("--seed", type=int, help="seed of the fault schedule and request sizes")
    soak.add_argument("--data-dir", type=Path, help="keep state and logs here (default: temp)")
    return parser


async def _run(runner: LoadRunner) -> ResultsJson:
    loop = asyncio.get_running_loop()
    # First Ctrl-C ends the schedule and still reports; the second abandons calls in flight.
    loop.add_signal_handler(signal.SIGINT, runner.stop)
    loop.add_signal_handler(signal.SIGTERM, runner.stop)
    try:
        return build_results(await runner.run())
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def _write_chart(results: ResultsJson, png: str) -> None:
    # matplotlib takes a second to import: only pay for it when a chart is asked for.
    from load_tests.chart import write_chart

    write_chart(results, png)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            scenario = load_scenario(args.scenario)
            token_file = args.token_file
            if token_file is None and DEV_TOKEN_FILE.is_file():
                token_file = DEV_TOKEN_FILE
            if token_file is not None and any(d.token is None for d in scenario.departments.values):
                if not token_file.is_file():
                    raise ScenarioError(f"--token-file: {token_file} does not exist")
                print(
                    f"using the token in {token_file} where the scenario has none", file=sys.stderr
                )
                scenario = scenario.with_default_token(token_file)
            runner = LoadRunner(
                scenario, target=args.target, progress=None if args.no_progress else sys.stderr
            )
            results = asyncio.run(_run(runner))
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            if args.png:
                _write_chart(results, args.png)
            print(render_text(results))
            missed = scenario.slo.missed(results)
            if missed:
                for problem in missed:
                    print(f"FAILED: {problem}", file=sys.stderr)
                return EXIT_MISSED
        elif args.command == "compare":
            a, b = load_results(args.a), load_results(args.b)
            print(compare(a, b, names=(args.a, args.b)))
        elif args.command == "soak":
            from load_tests.soak import run_soak

            try:
                passed, table = asyncio.run(
                    run_soak(
                        args.minutes * 60, rate=args.rate, seed=args.seed, data_dir=args.data_dir
                    )
                )
            except ValueError as err:  # an unusable --data-dir
                print(f"error: {err}", file=sys.stderr)
                return 2
            print(table)
            return 0 if passed else 1
        else:
            _write_chart(load_results(args.results), args.png)
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("matplotlib"):
            raise
        print("error: --png needs matplotlib: pip install 'llm-gateway[charts]'", file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, ResultsFileError, OSError) as err:
        # OSError covers an unreachable target and unreadable or unwritable files.
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
