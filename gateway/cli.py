"""`llm-gateway`: serve, run the embedded dev stack, call it, mint dev tokens, check policy."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from common.settings import SettingsError
from gateway.auth.cli import add_token_command
from gateway.client_cli import add_ask_command


def _serve(args: argparse.Namespace) -> int:
    from common.egress import ResidencyViolation
    from common.eventloop import run_event_loop
    from gateway.process.logging_setup import configure_logging
    from gateway.process.server import serve
    from gateway.settings import load_settings
    from policy.issues import PolicyError

    try:
        settings = load_settings(args.config, os.environ)
        configure_logging(settings.logging)
        if settings.server.processes > 1:
            from gateway.process.multiprocess import run_processes

            return run_processes(settings)
        run_event_loop(serve(settings))
    except SettingsError as exc:
        print(f"llm-gateway: invalid settings: {exc}", file=sys.stderr)
        return 2
    except ResidencyViolation as exc:
        print(f"llm-gateway: refusing to start: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"llm-gateway: refusing to start, the policy is invalid:\n{exc}", file=sys.stderr)
        return 2
    return 0


def _check_config(args: argparse.Namespace) -> int:
    """Validate a settings file offline: every key, the production rules, the egress allowlist."""
    from common.egress import EgressGuard, ResidencyViolation
    from gateway.process.server import check_egress, check_production
    from gateway.settings import load_settings

    try:
        settings = load_settings(args.config, os.environ)
    except SettingsError as exc:  # names the file already
        print(exc, file=sys.stderr)
        return 1
    try:
        check_production(settings)
        if args.resolve:
            check_egress(settings, EgressGuard(settings.residency))
    except (SettingsError, ResidencyViolation) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK" + ("" if args.resolve else " (egress not resolved: --resolve)"))
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from policy.checker import main as check

    return check([str(args.directory)] + (["--require-register"] if args.require_register else []))


def _dev(args: argparse.Namespace) -> int:
    from common.eventloop import run_event_loop
    from gateway.process.dev import run_dev_stack

    run_event_loop(run_dev_stack(args.port, args.data_dir, http_port=args.http_port))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a gateway from a settings file")
    serve.add_argument("--config", type=Path, help="YAML settings file")
    serve.set_defaults(func=_serve)
    dev = commands.add_parser("dev", help="run gateway + simulated worker on loopback")
    dev.add_argument("--port", type=int, default=50051)
    dev.add_argument(
        "--http-port", type=int, default=8080, help="OpenAI-compatible HTTP port (0: a free one)"
    )
    dev.add_argument("--data-dir", type=Path, default=Path(".data"))
    dev.set_defaults(func=_dev)
    check_config = commands.add_parser("check-config", help="validate a settings file offline")
    check_config.add_argument("--config", type=Path, required=True)
    check_config.add_argument(
        "--resolve", action="store_true", help="also resolve and check every egress address"
    )
    check_config.set_defaults(func=_check_config)
    add_ask_command(commands)
    add_token_command(commands)
    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="check a policy directory offline (exit 0/1)")
    check.add_argument("directory", type=Path)
    check.add_argument(
        "--require-register",
        action="store_true",
        help="fail unless the directory has models.yaml and purposes.yaml (production)",
    )
    check.set_defaults(func=_policy_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
