"""Reading PolicySettings: accepted values and errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import read
from policy.settings import PolicySettings


def test_valid() -> None:
    settings = read(PolicySettings, {"directory": "/etc/p", "reload_interval_s": 5}, "policy")

    assert settings == PolicySettings(Path("/etc/p"), 5.0)
    assert read(PolicySettings, {"directory": "p"}, "policy").reload_interval_s == 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "policy.directory: expected a string"),
        ({"directory": 3}, "policy.directory: expected a string"),
        (
            {"directory": "p", "reload_interval_s": "5"},
            "policy.reload_interval_s: expected a number",
        ),
        (
            {"directory": "p", "reload_interval_s": True},
            "policy.reload_interval_s: expected a number",
        ),
        (
            {"directory": "p", "reload_interval_s": -1},
            "policy.reload_interval_s: expected a number",
        ),
        (
            {"directory": "p", "watch": True},
            r"policy: unknown key\(s\) watch; allowed: directory, reload_interval_s",
        ),
    ],
)
def test_invalid(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read(PolicySettings, data, "policy")
