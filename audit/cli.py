"""`llm-audit`: serve the audit store, verify, query, report, checkpoint, export, erase, retain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from audit import retention_cli, verify_cli
from audit.checkpoint import load_or_create_signing_key, sign_checkpoint
from audit.coarsen import KEEP_ALL_DAYS, coarsen_checkpoints
from audit.export import write_export
from audit.ledger import QUERY_COLUMNS, Ledger, QueryFilter
from audit.pseudonym import KeyFileError, Pseudonymizer, load_or_create_key
from audit.report import USAGE_COLUMNS, parse_period, parse_time, render, render_png, usage_dicts
from audit.settings import AuditStoreSettings
from audit.store import open_ledger, serve_store
from common.settings import load


def _ledger_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--db", help="SQLite ledger file")
    g.add_argument("--postgres", metavar="DSN", help="PostgreSQL connection string")


def _subject_args(p: argparse.ArgumentParser, required: bool) -> None:
    who = p.add_mutually_exclusive_group(required=required)
    who.add_argument("--subject-pseudonym", metavar="P")
    who.add_argument("--subject", metavar="S", help="the subject id (needs --pseudonym-key)")
    p.add_argument("--pseudonym-key", metavar="FILE", help="the gateway's pseudonym key file")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llm-audit", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    # Flags override the settings file; unset ones take its values, then the defaults.
    p = sub.add_parser("serve", help="run the audit store (OTLP/gRPC TraceService)")
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML settings; flags override")
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:4317)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", help="SQLite ledger file")
    g.add_argument("--postgres", metavar="DSN", help="PostgreSQL connection string")
    p.add_argument("--keys-dir", help="directory of the checkpoint signing key")
    p.add_argument("--checkpoint-interval", type=float, metavar="SECONDS")
    p.add_argument("--tls-cert", help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--retain-policy-dir", help="run retention periodically with this policy")
    p.add_argument("--retain-interval-s", type=float, metavar="SECONDS", help="default 86400")
    p.add_argument("--default-retention-days", type=int, metavar="N")

    p = sub.add_parser("check-config", help="validate an audit store settings file")
    p.add_argument("--config", type=Path, required=True, metavar="FILE")

    p = sub.add_parser("verify", help="recompute chains and checkpoints; exit 1 on tampering")
    _ledger_args(p)
    verify_cli.add_arguments(p)

    p = sub.add_parser("coarsen-checkpoints", help="keep recent checkpoints, one a day after")
    _ledger_args(p)
    p.add_argument("--keep-all-days", type=int, default=KEEP_ALL_DAYS, metavar="N")

    p = sub.add_parser("checkpoint", help="sign the current chain heads now")
    _ledger_args(p)
    p.add_argument("--keys-dir", required=True)

    p = sub.add_parser("export-checkpoints", help="append new checkpoints to a witness file")
    _ledger_args(p)
    p.add_argument("--out", required=True, help="JSON lines file kept outside the store")

    p = sub.add_parser("erase", help="GDPR erasure: unlink a subject from their records")
    _ledger_args(p)
    _subject_args(p, required=True)

    p = sub.add_parser("export", help="GDPR access: one person's records as JSON and a table")
    _ledger_args(p)
    _subject_args(p, required=True)
    p.add_argument("--out", required=True, metavar="DIR", help="writes records.json, records.txt")

    p = sub.add_parser("retain", help="prune expired records and text; signs what it removed")
    _ledger_args(p)
    retention_cli.add_retain_arguments(p)

    p = sub.add_parser("hold", help="legal holds that suspend retention: add, remove, list")
    _ledger_args(p)
    retention_cli.add_hold_arguments(p, lambda q: _subject_args(q, required=False))

    p = sub.add_parser("query", help="list records")
    _ledger_args(p)
    p.add_argument("--since", help="ISO 8601 date or date-time (UTC unless an offset is given)")
    p.add_argument("--until", help="ISO 8601, exclusive")
    p.add_argument("--department")
    p.add_argument("--model")
    p.add_argument("--outcome")
    _subject_args(p, required=False)
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = sub.add_parser("report", help="requests and tokens by department, model, purpose, outcome")
    _ledger_args(p)
    p.add_argument("--period", default="30d", help="YYYY-MM, YYYY-MM-DD, Nd or all")
    p.add_argument("--csv", metavar="FILE")
    p.add_argument("--png", metavar="FILE")

    p = sub.add_parser("register-report", help="models and purposes used in a period (Markdown)")
    _ledger_args(p)
    p.add_argument("--policy-dir", required=True, help="the policy directory with the registers")
    p.add_argument("--from", dest="since", required=True, help="ISO 8601 date or date-time")
    p.add_argument("--to", dest="until", required=True, help="ISO 8601, exclusive")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown here (else stdout)")
    p.add_argument("--csv", metavar="FILE", help="also write one CSV row per model/purpose/dept")
    return ap


def store_settings(args: argparse.Namespace) -> AuditStoreSettings:
    """The settings file (if `--config`), with the flags given on the command line over it."""
    flags = {
        "keys_dir": "keys_dir",
        "listen": "listen",
        "db": "db_path",
        "postgres": "postgres_dsn",
        "checkpoint_interval": "checkpoint_interval_s",
        "tls_cert": "tls_cert_file",
        "tls_key": "tls_key_file",
        "retain_policy_dir": "retain_policy_dir",
        "retain_interval_s": "retain_interval_s",
        "default_retention_days": "retain_default_days",
    }
    overrides = {key: getattr(args, dest, None) for dest, key in flags.items()}
    return load(AuditStoreSettings, args.config, overrides)


def _check_config(args: argparse.Namespace) -> int:
    settings = load(AuditStoreSettings, args.config)
    ledger = "SQLite " + settings.db_path if settings.db_path else "PostgreSQL"
    print(f"{args.config}: OK ({ledger} ledger, listen {settings.listen})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = store_settings(args)

    async def run() -> None:
        handle = await serve_store(settings)
        print(f"llm-audit: listening on port {handle.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await handle.stop()

    asyncio.run(run())
    return 0


def _pseudonym(args: argparse.Namespace) -> str | None:
    """The pseudonym named by --subject-pseudonym, or --subject through --pseudonym-key."""
    if args.subject is None:
        pseudonym: str | None = args.subject_pseudonym
        return pseudonym
    if not args.pseudonym_key:
        raise ValueError("--subject needs --pseudonym-key FILE (the gateway's pseudonym key)")
    if not Path(args.pseudonym_key).exists():
        raise ValueError(f"{args.pseudonym_key}: no such key file")
    return Pseudonymizer(load_or_create_key(args.pseudonym_key))(args.subject)


def _erase(ledger: Ledger, args: argparse.Namespace) -> int:
    pseudonym = _pseudonym(args)
    assert pseudonym is not None  # argparse requires one of the two
    n = ledger.erase_subject(pseudonym)
    print(f"erased the subject link of {n} record(s); the chain is unchanged")
    return 0


def _query(ledger: Ledger, args: argparse.Namespace) -> int:
    flt = QueryFilter(
        since_ns=parse_time(args.since) if args.since else None,
        until_ns=parse_time(args.until) if args.until else None,
        department=args.department,
        model=args.model,
        outcome=args.outcome,
        subject_pseudonym=_pseudonym(args),
    )
    sys.stdout.write(render(ledger.query(flt, args.limit), QUERY_COLUMNS, args.format))
    return 0


def _report(ledger: Ledger, args: argparse.Namespace) -> int:
    since, until = parse_period(args.period)
    rows = ledger.usage(QueryFilter(since_ns=since, until_ns=until))
    sys.stdout.write(render(usage_dicts(rows), USAGE_COLUMNS, "table"))
    if args.csv:
        Path(args.csv).write_text(render(usage_dicts(rows), USAGE_COLUMNS, "csv"))
    if args.png:
        render_png(rows, args.png, f"LLM usage, period {args.period}")
    return 0


def _export(ledger: Ledger, args: argparse.Namespace) -> int:
    out = Path(args.out)
    have = set(out.read_text().splitlines()) if out.exists() else set()
    new = [cp.to_json() for cp in ledger.checkpoints() if cp.to_json() not in have]
    with out.open("a") as fh:
        fh.writelines(line + "\n" for line in new)
    print(f"exported {len(new)} new checkpoint(s) to {out}")
    return 0


def _checkpoint(ledger: Ledger, args: argparse.Namespace) -> int:
    heads = ledger.heads()
    if not heads:
        print("no records yet: nothing to sign")
        return 0
    key = load_or_create_signing_key(args.keys_dir)
    ledger.add_checkpoint(sign_checkpoint(key, heads, time.time_ns(), ledger.newest_checkpoint()))
    print(f"signed the heads of {len(heads)} chain(s)")
    return 0


def _register_report(ledger: Ledger, args: argparse.Namespace) -> int:
    from audit import register_report
    from policy import PolicyError, load_directory

    try:
        register = load_directory(args.policy_dir).register
    except PolicyError as err:
        print(f"llm-audit register-report: {err}", file=sys.stderr)
        return 2
    report = register_report.build_report(
        ledger, register, parse_time(args.since), parse_time(args.until)
    )
    markdown = register_report.render_markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    else:
        sys.stdout.write(markdown)
    if args.csv:
        Path(args.csv).write_text(register_report.render_csv(report))
    return 0


def _export_subject(ledger: Ledger, args: argparse.Namespace) -> int:
    pseudonym = _pseudonym(args)
    assert pseudonym is not None  # argparse requires one of the two
    n = write_export(ledger, pseudonym, Path(args.out))
    print(f"exported {n} record(s) to {args.out}/records.json and {args.out}/records.txt")
    return 0


def _coarsen(ledger: Ledger, args: argparse.Namespace) -> int:
    n = coarsen_checkpoints(ledger, time.time_ns(), args.keep_all_days)
    print(f"removed {n} checkpoint(s) older than {args.keep_all_days} days (kept one a day)")
    return 0


def _hold(ledger: Ledger, args: argparse.Namespace) -> int:
    return retention_cli.run_hold(ledger, args, _pseudonym(args))


_COMMANDS = {
    "retain": retention_cli.run_retain,
    "hold": _hold,
    "verify": verify_cli.run_verify,
    "coarsen-checkpoints": _coarsen,
    "export": _export_subject,
    "erase": _erase,
    "query": _query,
    "report": _report,
    "export-checkpoints": _export,
    "checkpoint": _checkpoint,
    "register-report": _register_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            return _check_config(args)
        if args.db and not Path(args.db).exists():
            print(f"llm-audit {args.command}: {args.db}: no such ledger file", file=sys.stderr)
            return 2
        ledger = open_ledger(args.db, args.postgres)
        try:
            return _COMMANDS[args.command](ledger, args)
        finally:
            ledger.close()
    except (ValueError, OSError, KeyFileError) as err:
        print(f"llm-audit {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
