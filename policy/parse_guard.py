"""Parsing a department's `guard` section: an action per built-in detector, custom patterns."""

from __future__ import annotations

from yaml.nodes import Node

from policy import detectors
from policy.definitions import GuardAction, GuardRules
from policy.detectors import Detector
from policy.yamlread import Reader, join

# Used where neither the department nor department_defaults names an action. CPR numbers are
# blocked unless a department decides otherwise; the other detectors are opt-in.
BUILTIN_DEFAULTS = {
    "cpr": GuardAction.BLOCK,
    "iban": GuardAction.ALLOW,
    "email": GuardAction.ALLOW,
    "phone": GuardAction.ALLOW,
}
_ACTIONS = [a.value for a in GuardAction]


def parse_guard(reader: Reader, node: Node | None) -> GuardRules | None:
    """The detectors a department runs, split by action; None after any error."""
    before = reader.failures
    fields = (reader.mapping(node, "guard", [*detectors.BUILTIN, "patterns"]) or {}) if node else {}
    chosen: list[tuple[Detector, GuardAction]] = []
    for builtin, detector in detectors.BUILTIN.items():
        action = BUILTIN_DEFAULTS[builtin]
        if builtin in fields:
            choice = reader.string(fields[builtin], join("guard", builtin), _ACTIONS)
            action = GuardAction(choice) if choice is not None else action
        chosen.append((detector, action))
    patterns = fields.get("patterns")
    for name, key_node, value in (
        (reader.entries(patterns, "guard.patterns") or []) if patterns else []
    ):
        path = join("guard.patterns", name)
        if name in detectors.BUILTIN or not detectors.CUSTOM_NAME.fullmatch(name):
            reader.error(
                key_node,
                path,
                "pattern names are lower-case letters, digits and _ (at most 40) "
                "and not a built-in detector name",
            )
            continue
        custom = _pattern(reader, value, path, name)
        if custom is not None:
            chosen.append(custom)
    if reader.failures > before:
        return None
    block = tuple(d for d, action in chosen if action is GuardAction.BLOCK)
    redact = tuple(d for d, action in chosen if action is GuardAction.REDACT)
    return GuardRules(block, redact)


def _pattern(
    reader: Reader, node: Node, path: str, name: str
) -> tuple[Detector, GuardAction] | None:
    fields = reader.mapping(node, path, ("regex", "action", "ignore_case", "description"))
    if fields is None:
        return None
    regex_node = reader.require(fields, node, path, "regex")
    action_node = reader.require(fields, node, path, "action")
    regex = reader.string(regex_node, join(path, "regex")) if regex_node else None
    action = reader.string(action_node, join(path, "action"), _ACTIONS) if action_node else None
    ignore_case = False
    if "ignore_case" in fields:
        ignore_case = bool(reader.boolean(fields["ignore_case"], join(path, "ignore_case")))
    if "description" in fields:
        reader.string(fields["description"], join(path, "description"))
    if regex is None or action is None or regex_node is None:
        return None
    try:
        detector = detectors.custom(name, regex, ignore_case)
    except ValueError as err:
        reader.error(regex_node, join(path, "regex"), str(err))
        return None
    return detector, GuardAction(action)
