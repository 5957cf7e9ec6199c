"""`llm-gateway token`: mint a development token signed with the local development key."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.auth.devkeys import mint_dev_token

DEFAULT_DATA_DIR = ".data"


def add_token_command(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Register `token` on a subparsers object; the parsed namespace's `func` runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "token",
        help="mint a development token (trusted only by the dev stack)",
        description="Print a development JWT, signed with the development key of the data "
        "directory (created on first use). Production configurations refuse this key.",
    )
    parser.add_argument("--department", required=True, help="the caller's department")
    parser.add_argument("--subject", required=True, help="the caller's id (sub claim)")
    parser.add_argument("--roles", default="", help="comma-separated roles")
    parser.add_argument("--clearance", default=None, help="clearance level")
    parser.add_argument("--purpose", default=None, help="purpose or legal basis of the use")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help=f"data directory (default {DEFAULT_DATA_DIR})"
    )
    parser.set_defaults(func=token_command)
    return parser


def token_command(args: argparse.Namespace) -> int:
    """Print the token alone on stdout; returns the process exit status."""
    if args.ttl <= 0:
        print("llm-gateway token: --ttl must be greater than 0", file=sys.stderr)
        return 2
    token = mint_dev_token(
        args.data_dir,
        department=args.department,
        subject=args.subject,
        roles=[r.strip() for r in args.roles.split(",") if r.strip()],
        clearance=args.clearance,
        purpose=args.purpose,
        ttl_s=args.ttl,
    )
    print(token)
    return 0
