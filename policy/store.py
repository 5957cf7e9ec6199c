"""The live policy: load once, serve the current version lock-free, hot-reload on change."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter, Gauge

from policy.issues import Issue, PolicyError
from policy.loader import Snapshot, build, read_snapshot
from policy.policyset import PolicySet

log = logging.getLogger(__name__)

RELOADS = Counter(
    "llmgw_policy_reloads_total",
    "Policy loads and reloads by result; a failed reload keeps the last good policy in force.",
    ["result"],
)
LAST_SUCCESS = Gauge(
    "llmgw_policy_last_success_timestamp_seconds",
    "Unix time at which the policy in force was loaded.",
)
DEGRADED = Gauge(
    "llmgw_policy_reload_failing",
    "1 while the newest policy on disk is invalid and an older version is in force, else 0.",
)
VERSION = Gauge(
    "llmgw_policy_version_info",
    "1 for the policy version in force (first 12 hex digits of its sha256), by version.",
    ["version"],
    multiprocess_mode="max",
)
_UNREADABLE = "unreadable"  # stands for the version of a directory that cannot be read
_HEALTH_ISSUES = 5  # errors shown in health(); the checker lists them all


class PolicyStore:
    """The policy of one directory, swapped whole on reload.

    `current()` is a plain attribute read: request handlers never lock and always see one
    complete `PolicySet`. `run_reloader` polls file names, sizes and mtimes, and re-reads the
    contents when they change (or after a failed attempt, in case a write landed within one
    mtime tick); a new version is installed only if it validates completely.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._current: PolicySet | None = None
        self._loaded_at = ""
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._failed_version = ""
        self._last_error = ""
        self._last_error_at = ""
        self._version_label = ""

    def load(self) -> PolicySet:
        """Load the directory now; raises `PolicyError` (every problem listed) if it is invalid."""
        fingerprint = self._stat()
        try:
            snapshot = read_snapshot(self.directory)
        except OSError as err:
            issues = [self._unreadable(err)]
            self._fail(_UNREADABLE, issues)
            raise PolicyError(issues) from None
        return self._install(snapshot, fingerprint)

    def current(self) -> PolicySet:
        """The policy in force; `load()` must have succeeded once."""
        policy = self._current
        if policy is None:
            raise RuntimeError("PolicyStore.current() called before a successful load()")
        return policy

    def reload_if_changed(self) -> bool:
        """Install the directory's newest version if it changed and is valid; True if installed.

        Never raises for an invalid policy: the failure is logged, counted and shown in `health()`.
        """
        fingerprint = self._stat()
        if fingerprint == self._fingerprint and not self._failed_version:
            return False
        try:
            snapshot = read_snapshot(self.directory)
        except OSError as err:
            if self._failed_version != _UNREADABLE:  # report an outage once, not every poll
                self._fail(_UNREADABLE, [self._unreadable(err)])
            return False
        self._fingerprint = fingerprint
        if snapshot.version == self._failed_version:
            return False  # the same invalid content, already reported
        current = self._current
        if current is not None and snapshot.version == current.version:
            if self._failed_version:  # the bad change was reverted
                log.info("policy in %s is back to the version in force", self.directory)
                self._failed_version = ""
                DEGRADED.set(0)
            return False
        try:
            self._install(snapshot, fingerprint)
        except PolicyError:
            return False
        return True

    async def run_reloader(self, interval_s: float) -> None:
        """Poll the directory every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                # Parsing a large policy takes milliseconds; keep it off the event loop.
                await asyncio.to_thread(self.reload_if_changed)
            except Exception as err:  # a bug in validation must not stop reloading for good
                self._crashed(err)

    def health(self) -> dict[str, str]:
        """Health details: status (`ok`, `degraded`, `not_loaded`), version, last error."""
        policy = self._current
        details = {
            "status": "not_loaded"
            if policy is None
            else "degraded"
            if self._failed_version
            else "ok",
            "directory": str(self.directory),
            "version": policy.version if policy else "",
            "departments": str(len(policy.departments)) if policy else "0",
            "loaded_at": self._loaded_at,
        }
        if self._last_error:
            details["last_error"] = self._last_error
            details["last_error_at"] = self._last_error_at
        return details

    def _install(
        self, snapshot: Snapshot, fingerprint: tuple[tuple[str, int, int], ...]
    ) -> PolicySet:
        try:
            policy = build(snapshot)
        except PolicyError as err:
            self._fingerprint = fingerprint
            self._fail(snapshot.version, err.issues)
            raise
        self._current = policy
        self._fingerprint = fingerprint
        self._failed_version = ""
        self._loaded_at = _now()
        RELOADS.labels(result="success").inc()
        LAST_SUCCESS.set(time.time())
        DEGRADED.set(0)
        if self._version_label:
            # Not `clear()`: multi-process mode cannot remove a series, so the old one says 0.
            VERSION.labels(version=self._version_label).set(0)
        self._version_label = policy.version[:12]
        VERSION.labels(version=self._version_label).set(1)
        log.info(
            "policy %s loaded from %s: %d departments",
            policy.version[:12],
            self.directory,
            len(policy.departments),
        )
        return policy

    def _crashed(self, err: Exception) -> None:
        """An unexpected failure of one reload attempt: reported like an invalid policy."""
        log.exception("policy reload of %s failed unexpectedly", self.directory)
        issue = Issue(
            str(self.directory), 0, "-", f"reload failed unexpectedly ({type(err).__name__})"
        )
        # The fingerprint is kept, so the next poll tries again.
        self._fail(f"crashed:{time.monotonic()}", [issue])

    def _unreadable(self, err: OSError) -> Issue:
        return Issue(
            str(self.directory), 0, "-", f"cannot read the policy directory: {err.strerror}"
        )

    def _fail(self, version: str, issues: Sequence[Issue]) -> None:
        self._failed_version = version
        shown = "; ".join(str(issue) for issue in issues[:_HEALTH_ISSUES])
        more = len(issues) - _HEALTH_ISSUES
        self._last_error = shown + (f"; and {more} more" if more > 0 else "")
        self._last_error_at = _now()
        RELOADS.labels(result="failure").inc()
        DEGRADED.set(1 if self._current is not None else 0)
        in_force = self._current.version[:12] if self._current else "none"
        log.error(
            "policy in %s rejected (%d errors), keeping version %s: %s",
            self.directory,
            len(issues),
            in_force,
            self._last_error,
        )

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
            return tuple(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()
            )
        except OSError:
            return ()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
