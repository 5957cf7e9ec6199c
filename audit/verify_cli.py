"""`llm-audit verify`: progress on stderr, chains in parallel processes, incremental state."""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from audit.chain_check import ChainOutcome, ChainPlan, check_chain
from audit.checkpoint import Checkpoint, load_public_key
from audit.ledger import Ledger
from audit.verify import DEFAULT_MAX_CHECKPOINT_AGE_S, load_state, save_state, verify

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_age(text: str) -> float | None:
    """`none`, seconds, or a number with s/m/h/d (e.g. `24h`, `7d`) to seconds."""
    if text.strip().lower() == "none":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise ValueError(f"--max-checkpoint-age {text!r}: expected e.g. 3600, 90m, 24h, 7d or none")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", help="the store's checkpoint_ed25519.pub.pem, pinned")
    p.add_argument("--witness", help="JSON lines of checkpoints exported to a witness")
    p.add_argument(
        "--max-checkpoint-age",
        default=f"{DEFAULT_MAX_CHECKPOINT_AGE_S / 3600:g}h",
        metavar="AGE",
        help="with --public-key, fail when the newest checkpoint is older (default 24h; none)",
    )
    p.add_argument("--state", metavar="FILE", help="after an OK run, save the newest checkpoint")
    p.add_argument(
        "--from-checkpoint",
        action="store_true",
        help="incremental: check only what follows the checkpoint saved in --state",
    )
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="chains in N processes")
    p.add_argument(
        "--all-signatures",
        action="store_true",
        help="check every checkpoint's own signature, not one per run of linked checkpoints",
    )
    p.add_argument(
        "--progress", action="store_true", help="show progress on stderr (default: on a TTY)"
    )


class Progress:
    """Records per second and time left on one stderr line, redrawn at most once a second."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.done, self._out = max(total, 1), 0, out
        self._started = self._drawn = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn >= 1.0:
            self._drawn = now
            self.draw(now)

    def draw(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-9)
        left = max(self.total - self.done, 0) / rate if rate else 0.0
        self._out.write(
            f"\rverify: {self.done:,}/{self.total:,} records, {rate:,.0f} records/s, "
            f"{int(left) // 60}:{int(left) % 60:02d} left "
        )
        self._out.flush()

    def finish(self) -> None:
        self.draw(time.monotonic())
        self._out.write("\n")


_worker: dict[str, Any] = {}


def _init_worker(target: tuple[str | None, str | None], counter: Any) -> None:
    from audit.store import open_ledger

    _worker["ledger"], _worker["counter"] = open_ledger(*target), counter


def _count(n: int) -> None:
    with _worker["counter"].get_lock():
        _worker["counter"].value += n


def _check_in_worker(plan: ChainPlan) -> ChainOutcome:
    return check_chain(_worker["ledger"], plan, _count)


def parallel(
    target: tuple[str | None, str | None], jobs: int, progress: Progress | None
) -> Callable[[list[ChainPlan]], list[ChainOutcome]]:
    """Run chains in `jobs` processes, each with its own connection to the ledger."""

    def run(plans: list[ChainPlan]) -> list[ChainOutcome]:
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("q", 0)
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(1.0):
                if progress is not None:
                    progress.add(counter.value - progress.done)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with ctx.Pool(jobs, _init_worker, (target, counter)) as pool:
                return pool.map(_check_in_worker, plans, chunksize=1)
        finally:
            stop.set()
            watcher.join()
            if progress is not None:
                progress.done = counter.value

    return run


def _witness(path: Path) -> Iterator[Checkpoint]:
    """The witness file's checkpoints, read a line at a time in the same pass as the ledger's."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Checkpoint.from_json(line)
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{n}: not a checkpoint line ({err})") from err


def run_verify(ledger: Ledger, args: argparse.Namespace) -> int:
    key = load_public_key(args.public_key) if args.public_key else None
    witness: Iterator[Checkpoint] = iter(())
    if args.witness:
        if not Path(args.witness).is_file():
            raise ValueError(f"--witness {args.witness}: no such file")
        witness = _witness(Path(args.witness))
    state = Path(args.state) if args.state else None
    if (args.from_checkpoint or state) and key is None:
        raise ValueError("--state and --from-checkpoint need --public-key")
    if args.from_checkpoint and state is None:
        raise ValueError("--from-checkpoint needs --state FILE (written by an earlier run)")
    if args.jobs < 1:
        raise ValueError("--jobs: expected a positive number of processes")
    start = load_state(state, key) if args.from_checkpoint and state and key else None
    progress = None
    if args.progress or sys.stderr.isatty():
        done = start.heads() if start else {}
        total = sum(
            h.chain_index - (done[s].chain_index if s in done else 0)
            for s, h in ledger.heads().items()
        )
        progress = Progress(total, sys.stderr)
    runner = None
    if args.jobs > 1:
        runner = parallel((args.db, args.postgres), args.jobs, progress)
    result = verify(
        ledger,
        key,
        witness,
        max_checkpoint_age_s=parse_age(args.max_checkpoint_age),
        start=start,
        run_chains=runner,
        on_records=progress.add if progress else None,
        all_signatures=args.all_signatures,
    )
    if progress is not None:
        progress.finish()
    for line in result.retention:
        print(f"retention: {line}")
    for p in result.problems:
        print(f"FAIL [{p.kind}] {p.message}")
    status = "OK" if result.ok else "TAMPERED"
    print(
        f"{status}: {result.records} records in {result.sources} chain(s), "
        f"{result.checkpoints} checkpoint(s)"
        + (f", {result.signatures} signature(s) checked" if key else "")
        + ("" if key else " (signatures not checked: pass --public-key)")
    )
    if start is not None:
        print(
            f"incremental: checked only records after checkpoint {start.created_ns} and "
            "checkpoints newer than it; earlier records were not read (run a full verify weekly)"
        )
    if result.uncovered:
        print(f"{result.uncovered} record(s) appended after the newest checkpoint")
    if result.ok and state is not None and result.newest is not None:
        save_state(state, result.newest)
    return 0 if result.ok else 1
