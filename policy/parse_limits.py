"""Parsing a department's `limits` section into `policy.limits.DepartmentLimits`."""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from policy.limits import DepartmentLimits, FailureMode, Limit, LimitSet
from policy.yamlread import Reader, join

# Seconds per window; 0 marks a concurrency limit (leases held, not a rate). A month is a
# rolling 30 days so that the budget does not jump at calendar boundaries.
PERIODS = {
    "requests_per_minute": 60,
    "concurrent_streams": 0,
    "tokens_per_minute": 60,
    "tokens_per_day": 86_400,
    "tokens_per_month": 30 * 86_400,
}
UNLIMITED = "unlimited"


def parse_limits(reader: Reader, node: Node | None, department: str) -> DepartmentLimits | None:
    """The department's limits (absent = unlimited, failing closed); None after any error."""
    if node is None:
        return DepartmentLimits(department=department)
    before = reader.failures
    fields = reader.mapping(node, "limits", ("on_limiter_failure", "department", "user")) or {}
    mode = FailureMode.CLOSED
    if "on_limiter_failure" in fields:
        choices = [m.value for m in FailureMode]
        value = reader.string(fields["on_limiter_failure"], "limits.on_limiter_failure", choices)
        mode = FailureMode(value) if value is not None else mode
    dept = _limit_set(reader, fields.get("department"), "limits.department")
    user = _limit_set(reader, fields.get("user"), "limits.user")
    if reader.failures > before:
        return None
    return DepartmentLimits(department, dept, user, mode)


def _limit_set(reader: Reader, node: Node | None, path: str) -> LimitSet:
    if node is None:
        return LimitSet()
    fields = reader.mapping(node, path, PERIODS) or {}
    limits = {
        key: _limit(reader, value, join(path, key), PERIODS[key]) for key, value in fields.items()
    }
    return LimitSet(**limits)


def _limit(reader: Reader, node: Node, path: str, period_s: int) -> Limit | None:
    if isinstance(node, ScalarNode) and node.value == UNLIMITED:
        return None
    if isinstance(node, MappingNode):
        fields = reader.mapping(node, path, ("amount", "shadow")) or {}
        amount_node = reader.require(fields, node, path, "amount")
        amount = reader.integer(amount_node, join(path, "amount"), 1) if amount_node else None
        shadow = False
        if "shadow" in fields:
            shadow = bool(reader.boolean(fields["shadow"], join(path, "shadow")))
        return Limit(amount, period_s, shadow) if amount is not None else None
    if isinstance(node, ScalarNode) and node.tag.endswith(":int"):
        amount = reader.integer(node, path, 1)
        return Limit(amount, period_s) if amount is not None else None
    reader.error(
        node,
        path,
        f"expected a positive integer, `{UNLIMITED}`, or a mapping with amount and shadow",
    )
    return None
