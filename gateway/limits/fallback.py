"""Per-replica shares of a department's limits, enforced locally while Redis is unreachable."""

from __future__ import annotations

import math
from dataclasses import fields, replace

from policy.limits import DepartmentLimits, Limit, LimitSet


def scaled_for_replicas(limits: DepartmentLimits, replicas: int) -> DepartmentLimits:
    """Each limit divided by the number of replicas (rounded up, at least 1).

    N replicas failing open together then admit about what the declared limit allows, instead
    of N times it.
    """
    if replicas <= 1:
        return limits
    return replace(
        limits,
        department_limits=_scaled(limits.department_limits, replicas),
        user_limits=_scaled(limits.user_limits, replicas),
    )


def _scaled(limit_set: LimitSet, replicas: int) -> LimitSet:
    changes: dict[str, Limit] = {}
    for f in fields(limit_set):
        limit: Limit | None = getattr(limit_set, f.name)
        if limit is not None:
            changes[f.name] = replace(limit, amount=max(1, math.ceil(limit.amount / replicas)))
    return replace(limit_set, **changes)
