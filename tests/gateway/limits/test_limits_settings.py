"""LimitsSettings: defaults, validation naming the key path, and which limiter it builds."""

from __future__ import annotations

import pytest

from common.settings import SettingsError, read
from gateway.limits import LimitsSettings, MemoryLimiter, RedisLimiter, build_limiter


def test_defaults_and_egress() -> None:
    settings = read(LimitsSettings, {}, "limits")
    assert settings.redis_url is None and settings.egress_urls() == ()
    assert settings.decision_timeout_s == 0.05
    url = "rediss://limits.example.internal:6380/0"
    assert read(LimitsSettings, {"redis_url": url}, "limits").egress_urls() == (url,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"redis_urls": "x"}, "limits: unknown key(s) redis_urls"),
        ({"redis_url": "http://x"}, "limits.redis_url: expected a redis://"),
        ({"redis_url": 5}, "limits.redis_url: expected a non-empty string"),
        ({"decision_timeout_s": "fast"}, "limits.decision_timeout_s: expected float"),
        ({"decision_timeout_s": 0}, "limits.decision_timeout_s: must be greater than 0"),
        ({"fallback_replicas": 1.5}, "limits.fallback_replicas: expected int"),
        ({"fallback_replicas": True}, "limits.fallback_replicas: expected int"),
        ({"key_prefix": "gw{x}:"}, "limits.key_prefix: must not contain"),
        ({"lease_ttl_s": 100, "reservation_ttl_s": 50}, "limits.lease_ttl_s: must not exceed"),
    ],
)
def test_rejects_with_the_full_key_path(data: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        read(LimitsSettings, data, "limits")


def test_password_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        read(LimitsSettings, {"redis_url": "http://user:s3cret@host"}, "gw.limits")
    assert "s3cret" not in str(err.value) and str(err.value).startswith("gw.limits.redis_url")


async def test_build_limiter_picks_the_backend() -> None:
    memory = build_limiter(LimitsSettings())
    assert isinstance(memory, MemoryLimiter)
    shared = build_limiter(LimitsSettings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(shared, RedisLimiter)
    await shared.close()
