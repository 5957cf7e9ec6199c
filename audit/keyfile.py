"""Permission checks for secret key files, compatible with Kubernetes secret mounts."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path


class KeyFileError(Exception):
    """A key file is missing, unreadable, too short, or readable by others."""


def own_groups() -> frozenset[int]:
    """The process's primary and supplementary groups (a pod's `fsGroup` is one of them)."""
    return frozenset({os.getegid(), *os.getgroups()})


def check_private(path: str | os.PathLike[str], groups: Collection[int] | None = None) -> None:
    """Refuse a key file that anyone outside its owner and the process's own groups can use.

    A Kubernetes secret volume mounts files owned by root with mode 0440 and the pod's `fsGroup`
    as group: the process reads them through that group. So group bits are accepted when the
    file's group is one of the process's groups (`groups`, default `own_groups()`); bits for
    others, or group bits for a foreign group, mean someone else can read the key.
    """
    p = Path(path)
    st = p.stat()
    mode = stat.S_IMODE(st.st_mode)
    allowed_groups = own_groups() if groups is None else groups
    if mode & 0o007:
        raise KeyFileError(
            f"{p}: key file has mode {mode:o}, readable or writable by others; "
            f"run `chmod 600 {p}` (or mount the secret with mode 0440 and the pod's fsGroup)"
        )
    if mode & 0o070 and st.st_gid not in allowed_groups:
        raise KeyFileError(
            f"{p}: key file has mode {mode:o} and group {st.st_gid}, which this process is not "
            f"in; run `chmod 600 {p}`, or give the file the process's group"
        )
