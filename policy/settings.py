"""Process settings of the policy component: where the policy directory is, how often to poll."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import SettingsError, setting

_SECONDS = "a number of seconds >= 0"


def _seconds(value: float, key: str) -> None:
    if value < 0:
        raise SettingsError(f"{key}: expected {_SECONDS}, got {value!r}")


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The `policy` section of the gateway's settings file."""

    directory: Path = setting(
        doc="directory holding defaults.yaml and one policy file per department",
        expect="a string (the policy directory)",
    )
    reload_interval_s: float = setting(
        2.0,
        doc="how often the directory is polled for changes, in seconds (0 turns hot reload off)",
        expect=_SECONDS,
        check=_seconds,
    )
