"""`llm-audit`: serve the audit store, verify, query, report, checkpoint, export, erase."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from audit.checkpoint import (
    Checkpoint,
    load_or_create_signing_key,
    load_public_key,
    sign_checkpoint,
)
from audit.ledger import QUERY_COLUMNS, Ledger, QueryFilter
from audit.pseudonym import KeyFileError, Pseudonymizer, load_or_create_key
from audit.report import USAGE_COLUMNS, parse_period, parse_time, render, render_png, usage_dicts
from audit.settings import AuditStoreSettings
from audit.store import open_ledger, serve_store
from audit.verify import verify
from common.settings import load


def _ledger_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--db", help="SQLite ledger file")
    g.add_argument("--postgres", metavar="DSN", help="PostgreSQL connection string")


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

    p = sub.add_parser("check-config", help="validate an audit store settings file")
    p.add_argument("--config", type=Path, required=True, metavar="FILE")

    p = sub.add_parser("verify", help="recompute chains and checkpoints; exit 1 on tampering")
    _ledger_args(p)
    p.add_argument("--public-key", help="the store's checkpoint_ed25519.pub.pem, pinned")
    p.add_argument("--witness", help="JSON lines of checkpoints exported to a witness")

    p = sub.add_parser("checkpoint", help="sign the current chain heads now")
    _ledger_args(p)
    p.add_argument("--keys-dir", required=True)

    p = sub.add_parser("export-checkpoints", help="append new checkpoints to a witness file")
    _ledger_args(p)
    p.add_argument("--out", required=True, help="JSON lines file kept outside the store")

    p = sub.add_parser("erase", help="GDPR erasure: unlink a subject from their records")
    _ledger_args(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject-pseudonym", metavar="P")
    who.add_argument("--subject", metavar="S", help="the subject id (needs --pseudonym-key)")
    p.add_argument("--pseudonym-key", metavar="FILE", help="the gateway's pseudonym key file")

    p = sub.add_parser("query", help="list records")
    _ledger_args(p)
    p.add_argument("--since", help="ISO 8601 date or date-time (UTC unless an offset is given)")
    p.add_argument("--until", help="ISO 8601, exclusive")
    p.add_argument("--department")
    p.add_argument("--model")
    p.add_argument("--outcome")
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = sub.add_parser("report", help="requests and tokens by department, model, purpose, outcome")
    _ledger_args(p)
    p.add_argument("--period", default="30d", help="YYYY-MM, YYYY-MM-DD, Nd or all")
    p.add_argument("--csv", metavar="FILE")
    p.add_argument("--png", metavar="FILE")
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


def _verify(ledger: Ledger, args: argparse.Namespace) -> int:
    key = load_public_key(args.public_key) if args.public_key else None
    witness: list[Checkpoint] = []
    if args.witness:
        lines = Path(args.witness).read_text().splitlines()
        witness = [Checkpoint.from_json(line) for line in lines if line.strip()]
    result = verify(ledger, key, witness)
    for p in result.problems:
        print(f"FAIL [{p.kind}] {p.message}")
    status = "OK" if result.ok else "TAMPERED"
    print(
        f"{status}: {result.records} records in {result.sources} chain(s), "
        f"{result.checkpoints} checkpoint(s)"
        + ("" if key else " (signatures not checked: pass --public-key)")
    )
    return 0 if result.ok else 1


def _erase(ledger: Ledger, args: argparse.Namespace) -> int:
    if args.subject is not None:
        if not args.pseudonym_key:
            print("llm-audit erase: --subject needs --pseudonym-key FILE", file=sys.stderr)
            return 2
        if not Path(args.pseudonym_key).exists():
            print(f"llm-audit erase: {args.pseudonym_key}: no such key file", file=sys.stderr)
            return 2
        pseudonym = Pseudonymizer(load_or_create_key(args.pseudonym_key))(args.subject)
    else:
        pseudonym = args.subject_pseudonym
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
    ledger.add_checkpoint(
        sign_checkpoint(load_or_create_signing_key(args.keys_dir), heads, time.time_ns())
    )
    print(f"signed the heads of {len(heads)} chain(s)")
    return 0


_COMMANDS = {
    "verify": _verify,
    "erase": _erase,
    "query": _query,
    "report": _report,
    "export-checkpoints": _export,
    "checkpoint": _checkpoint,
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
