"""Process measurements for the benchmarks, read from /proc: CPU time, RSS, CPU pinning."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_sets() -> tuple[set[int] | None, set[int] | None]:
    """(gateway CPUs, everything else's CPUs); (None, None) on a single-CPU machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin a process to `cpus` (no-op for None)."""
    if cpus:
        os.sched_setaffinity(pid, cpus)


def _stat_fields(pid: int, thread: int | None = None) -> list[str]:
    """The fields after the command name in `/proc/PID/stat` (or one thread's stat)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    raw = Path(path).read_text()
    return raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its live descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid`'s main thread alone (a server's event loop)."""
    try:
        fields = _stat_fields(pid, thread=pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its live descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            total += int(_stat_fields(p)[21]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total
