"""A gateway replica in its own process: waits for a start time, fires admissions, prints counts.

Usage: python replica_process.py REDIS_URL START_AT MODE COUNT; MODE is `rpm` or `streams`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from gateway.limits import Admission, LimitsSettings, RedisLimiter
from policy.limits import DepartmentLimits, Limit, LimitSet

LIMITS = {
    "rpm": DepartmentLimits("multi", LimitSet(requests_per_minute=Limit(30, 3600))),
    "streams": DepartmentLimits("multi", LimitSet(concurrent_streams=Limit(7, 0))),
}


async def main(url: str, start_at: float, mode: str, count: int) -> None:
    settings = LimitsSettings(redis_url=url, decision_timeout_s=5.0, socket_timeout_s=5.0)
    limiter = RedisLimiter.from_settings(settings)
    limits = LIMITS[mode]
    await limiter.admit(Admission("warmup", "warmup", "w", 0, DepartmentLimits("warmup")))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    decisions = await asyncio.gather(
        *(limiter.admit(Admission(uuid.uuid4().hex, "multi", "u", 0, limits)) for _ in range(count))
    )
    await limiter.close()
    print(json.dumps({"allowed": sum(d.allowed for d in decisions), "total": len(decisions)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
