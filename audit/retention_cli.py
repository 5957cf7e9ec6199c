"""`llm-audit retain` and `llm-audit hold add|remove|list`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from audit.checkpoint import load_or_create_signing_key
from audit.ledger import Ledger
from audit.report import parse_time
from audit.retention import describe, load_rules, retain
from audit.retention_sql import Hold


def add_retain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy-dir", required=True, help="policy directory with purposes.yaml")
    p.add_argument("--keys-dir", required=True, help="the store's checkpoint key directory")
    p.add_argument("--as-of", metavar="TIME", help="evaluate retention at this ISO 8601 time")
    p.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    p.add_argument(
        "--default-retention-days",
        type=int,
        metavar="N",
        help="retention of records with an empty or unregistered purpose (default: kept)",
    )


def add_hold_arguments(
    p: argparse.ArgumentParser, subject_args: Callable[[argparse.ArgumentParser], None]
) -> None:
    p.add_argument("action", choices=("add", "remove", "list"))
    subject_args(p)
    p.add_argument("--department", help="hold every record of this department")
    p.add_argument("--reason", help="why (case number, court order); required to add or remove")
    p.add_argument("--all", action="store_true", help="list: include lifted holds")


def run_retain(ledger: Ledger, args: argparse.Namespace) -> int:
    rules = load_rules(args.policy_dir, args.default_retention_days)
    as_of = parse_time(args.as_of) if args.as_of else time.time_ns()
    key = None if args.dry_run else load_or_create_signing_key(args.keys_dir)
    results = retain(ledger, rules, key, as_of, dry_run=args.dry_run)
    for line in describe(results, args.dry_run):
        print(line)
    if not results:
        print("no records: nothing to retain")
    return 0


def _row(h: Hold) -> str:
    from audit.retention import _fmt

    state = "active" if h.lifted_ns is None else f"lifted {_fmt(h.lifted_ns)} ({h.lifted_reason})"
    return f"{h.id}\t{h.kind}\t{h.value}\tplaced {_fmt(h.placed_ns)}\t{h.reason}\t{state}"


def run_hold(ledger: Ledger, args: argparse.Namespace, pseudonym: str | None) -> int:
    if args.action == "list":
        holds = ledger.holds(include_lifted=args.all)
        print("id\tkind\tvalue\tplaced\treason\tstate")
        for h in holds:
            print(_row(h))
        return 0
    if (pseudonym is None) == (args.department is None):
        raise ValueError(f"hold {args.action}: give exactly one of --subject and --department")
    if not args.reason:
        raise ValueError(f"hold {args.action}: --reason is required (it is kept with the hold)")
    kind, value = "department", args.department
    if pseudonym is not None:
        kind, value = "subject", pseudonym
    if args.action == "add":
        n = ledger.add_hold(kind, value, args.reason)
        print(f"legal hold placed on {kind} {value}; {n} active hold(s)")
        return 0
    n = ledger.lift_hold(kind, value, args.reason)
    if n == 0:
        raise ValueError(f"hold remove: no active hold on {kind} {value}")
    print(f"legal hold on {kind} {value} lifted")
    return 0
