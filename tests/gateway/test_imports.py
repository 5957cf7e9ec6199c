"""What a gateway process loads: redis-py only when Redis discovery is configured.

redis-py's import alone is ~11 MB of resident memory (docs/performance.md, section 4); the
limiter talks to Redis through its own client, so a gateway without Redis discovery must not pay it.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import gateway.cli, gateway.process.server, gateway.settings, gateway.process.logging_setup
from gateway.limits import LimitsSettings, build_limiter
from gateway.routing.factory import build_registry
from gateway.routing.settings import RoutingSettings
build_limiter(LimitsSettings(redis_url="redis://127.0.0.1:1/0"))
build_registry(RoutingSettings(workers=("127.0.0.1:1",)))
print(sorted(m for m in sys.modules if m == "redis" or m.startswith("redis.")))
"""


def test_gateway_with_redis_limiter_and_static_workers_does_not_import_redis_py() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
