"""PolicySettings.from_mapping: accepted values and errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.settings import PolicySettings


def test_valid() -> None:
    settings = PolicySettings.from_mapping(
        {"directory": "/etc/p", "reload_interval_s": 5}, "policy"
    )

    assert settings == PolicySettings(Path("/etc/p"), 5.0)
    assert PolicySettings.from_mapping({"directory": "p"}, "policy").reload_interval_s == 2.0


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
        ({"directory": "p", "watch": True}, "policy.watch: unknown key"),
    ],
)
def test_invalid(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicySettings.from_mapping(data, "policy")
