"""Process settings of the policy component: where the policy directory is, how often to poll."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The `policy` section of the gateway's settings file.

    `directory` holds defaults.yaml and one file per department; `reload_interval_s` is how
    often it is polled for changes (0 turns hot reload off).
    """

    directory: Path
    reload_interval_s: float = 2.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], path: str) -> Self:
        """Build from a parsed mapping; errors name the full key path (`policy.directory`)."""
        unknown = sorted(set(data) - {"directory", "reload_interval_s"})
        if unknown:
            raise ValueError(
                f"{path}.{unknown[0]}: unknown key; expected directory, reload_interval_s"
            )
        directory = data.get("directory")
        if not isinstance(directory, str) or not directory:
            raise ValueError(f"{path}.directory: expected a string (the policy directory)")
        interval = data.get("reload_interval_s", 2.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ValueError(f"{path}.reload_interval_s: expected a number of seconds >= 0")
        return cls(Path(directory), float(interval))
