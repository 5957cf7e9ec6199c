"""RoutingSettings: defaults, key paths in errors, egress targets."""

from __future__ import annotations

import pytest

from common.settings import SettingsError, read
from gateway.routing.settings import RoutingSettings


def test_defaults_and_a_full_mapping() -> None:
    assert read(RoutingSettings, None, "routing") == RoutingSettings()
    settings = read(
        RoutingSettings,
        {
            "workers": ["10.0.0.5:50061"],
            "dns_names": ["llm-workers.gpu.svc:50061"],
            "redis_url": "rediss://redis.internal:6380/0",
            "max_attempts": 2,
            "queue_size": 10,
            "eject_base_s": 1,
        },
        "routing",
    )
    assert settings.max_attempts == 2 and settings.eject_base_s == 1.0
    assert settings.egress_targets() == (
        "10.0.0.5:50061",
        "llm-workers.gpu.svc:50061",
        "rediss://redis.internal:6380/0",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_atempts": 2}, "gw.routing: unknown key(s) max_atempts"),
        ({"max_attempts": "3"}, "gw.routing.max_attempts: expected int"),
        ({"max_attempts": 0}, "gw.routing.max_attempts: must be greater than 0"),
        ({"workers": ["no-port"]}, "gw.routing.workers[0]: expected host:port"),
        ({"dns_names": "svc:1"}, "gw.routing.dns_names: expected a list of strings"),
        ({"redis_url": "http://x"}, "gw.routing.redis_url: expected a redis://"),
        ({"affinity_load_factor": 0.5}, "gw.routing.affinity_load_factor: must be at least 1.0"),
        ({"eject_base_s": 90}, "gw.routing.eject_base_s: must not exceed gw.routing.eject_max_s"),
    ],
)
def test_errors_name_the_full_key_path(data: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        read(RoutingSettings, data, "gw.routing")
    assert message in str(error.value)
