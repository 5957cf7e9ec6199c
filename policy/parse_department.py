"""Parsing one department's policy (its file merged over `department_defaults`)."""

from __future__ import annotations

from yaml.nodes import Node, ScalarNode

from policy.definitions import (
    AuditContent,
    AuditRules,
    Catalog,
    DataRules,
    DepartmentPolicy,
    OnExcess,
    TokenCaps,
)
from policy.parse_defaults import check_version
from policy.parse_guard import parse_guard
from policy.parse_limits import parse_limits
from policy.yamlread import Reader, join

SETTING_KEYS = ("models", "tokens", "data", "priority", "limits", "guard", "audit")
DEPARTMENT_KEYS = ("version", "department", "description", *SETTING_KEYS)


def check_department_defaults(reader: Reader, node: Node, catalog: Catalog) -> None:
    """Validate `department_defaults` on its own: keys and types, nothing required."""
    _Parser(reader, catalog, own_file=None).settings(node, SETTING_KEYS, "")


def parse_department(
    reader: Reader, own: Node, merged: Node, catalog: Catalog
) -> DepartmentPolicy | None:
    """A department's policy from its own file and its merge over the defaults; None if invalid."""
    before = reader.failures
    own_fields = reader.mapping(own, "", DEPARTMENT_KEYS)
    if own_fields is None:
        return None
    check_version(reader, own_fields, own)
    name_node = reader.require(own_fields, own, "", "department")
    name = reader.string(name_node, "department") if name_node else None
    if "description" in own_fields:
        reader.string(own_fields["description"], "description")
    policy = _Parser(reader, catalog, own_file=own.start_mark.name).settings(
        merged, DEPARTMENT_KEYS, name or ""
    )
    if name is None or policy is None or reader.failures > before:
        return None
    return policy


class _Parser:
    """Reads the settings sections; `partial` (defaults alone) skips completeness checks."""

    def __init__(self, reader: Reader, catalog: Catalog, *, own_file: str | None) -> None:
        self.r = reader
        self.catalog = catalog
        self.own_file = own_file  # the department's file; None when checking the defaults alone
        self.partial = own_file is None

    def settings(self, root: Node, keys: tuple[str, ...], name: str) -> DepartmentPolicy | None:
        fields = self.r.mapping(root, "", keys)
        if fields is None:
            return None
        models = self._models(fields, root)
        tokens = self._tokens(fields.get("tokens"), root)
        data = self._data(fields.get("data"), root)
        priority_node = self._required(fields, root, "priority")
        priority_class = None
        if priority_node is not None:
            priority_class = self.r.known(
                priority_node, "priority", self.catalog.priority_classes, "priority class"
            )
        limits = parse_limits(self.r, fields.get("limits"), name)
        guard = parse_guard(self.r, fields.get("guard"))
        audit = self._audit(fields.get("audit"))
        if (
            self.partial
            or models is None
            or tokens is None
            or data is None
            or priority_class is None
            or limits is None
            or guard is None
            or audit is None
        ):
            return None
        priority = self.catalog.priority_classes[priority_class]
        file = root.start_mark.name
        return DepartmentPolicy(
            name, file, models, tokens, data, priority_class, priority, limits, guard, audit
        )

    def _required(
        self, fields: dict[str, Node], owner: Node, key: str, path: str = ""
    ) -> Node | None:
        if self.partial:
            return fields.get(key)
        return self.r.require(fields, owner, path, key)

    def _models(self, fields: dict[str, Node], root: Node) -> frozenset[str] | None:
        node = self._required(fields, root, "models")
        if node is None:
            return None
        catalog = self.catalog
        known = {**catalog.models, **catalog.groups}
        allowed: set[str] = set()
        names = self.r.names(node, "models", known, "model or group")
        if names is None:
            return None
        for name in names:
            allowed.update(catalog.groups.get(name, (name,)))
        if not self.partial and not allowed:
            self.r.error(node, "models", "the department allows no model; list models or groups")
            return None
        return frozenset(allowed)

    def _tokens(self, node: Node | None, root: Node) -> TokenCaps | None:
        if node is None:
            if not self.partial:
                self.r.error(
                    root,
                    "tokens",
                    "missing required key; set tokens.max_prompt and tokens.max_output",
                )
            return None
        keys = ("max_prompt", "max_output", "default_output", "on_excess")
        fields = self.r.mapping(node, "tokens", keys) or {}
        values: dict[str, int] = {}
        for key in ("max_prompt", "max_output", "default_output"):
            value_node = (
                self._required(fields, node, key, "tokens")
                if key != "default_output"
                else fields.get(key)
            )
            value = self.r.integer(value_node, join("tokens", key), 1) if value_node else None
            if value is not None:
                values[key] = value
        on_excess = OnExcess.CLAMP
        if "on_excess" in fields:
            choice = self.r.string(
                fields["on_excess"], "tokens.on_excess", [o.value for o in OnExcess]
            )
            on_excess = OnExcess(choice) if choice else on_excess
        if "max_prompt" not in values or "max_output" not in values:
            return None
        default_output = values.get("default_output", values["max_output"])
        if default_output > values["max_output"]:
            self.r.error(
                fields["default_output"],
                "tokens.default_output",
                "must not exceed tokens.max_output",
            )
            return None
        return TokenCaps(values["max_prompt"], values["max_output"], default_output, on_excess)

    def _data(self, node: Node | None, root: Node) -> DataRules | None:
        if node is None:
            if not self.partial:
                self.r.error(root, "data", "missing required key; set data.allowed and data.pools")
            return None
        before = self.r.failures
        classes = self.catalog.classifications
        keys = ("allowed", "required", "default", "pools", "purpose_required", "registered_purpose")
        fields = self.r.mapping(node, "data", keys) or {}
        allowed_node = self._required(fields, node, "allowed", "data")
        allowed = None
        if allowed_node is not None:
            allowed = self.r.names(allowed_node, "data.allowed", classes, "classification")
        required = False
        if "required" in fields:
            required = bool(self.r.boolean(fields["required"], "data.required"))
        default = None
        if "default" in fields:
            default = self.r.known(fields["default"], "data.default", classes, "classification")
            if default is not None and allowed is not None and default not in allowed:
                self._default_not_allowed(fields["default"], allowed_node, default)
        elif not required and not self.partial:
            message = "missing; a department that does not require a classification needs a default"
            self.r.error(node, "data.default", message)
        purpose: list[str] | None = []
        if "purpose_required" in fields:
            path = "data.purpose_required"
            purpose = self.r.names(fields["purpose_required"], path, classes, "classification")
        registered = False
        if "registered_purpose" in fields:
            path = "data.registered_purpose"
            registered = bool(self.r.boolean(fields["registered_purpose"], path))
        pools = self._pools(fields.get("pools"))
        # Completeness is judged only on a section that is otherwise valid, so that one mistake
        # does not also show up as a classification without pools.
        if self.partial or self.r.failures > before or allowed is None or pools is None:
            return None
        for name in allowed:
            if not pools.get(name):
                message = f"classification {name!r} is allowed but cleared for no pool; "
                message += "list the pools it may go to"
                self.r.error(fields.get("pools", node), f"data.pools.{name}", message)
        return DataRules(
            frozenset(allowed), required, default, pools, frozenset(purpose or ()), registered
        )

    def _default_not_allowed(
        self, default_node: Node, allowed_node: Node | None, name: str
    ) -> None:
        # An inherited default left out by the department's own allowed list is a mistake in
        # the department file, so that is where the error points.
        own, inherited = self.own_file, default_node.start_mark.name
        if allowed_node is not None and allowed_node.start_mark.name == own and inherited != own:
            where = f"{inherited}:{default_node.start_mark.line + 1}"
            message = f"leaves out the default classification {name!r} ({where}); "
            message += "add it or set data.default"
            self.r.error(allowed_node, "data.allowed", message)
        else:
            message = f"{name!r} is not in data.allowed; allow it or pick another"
            self.r.error(default_node, "data.default", message)

    def _pools(self, node: Node | None) -> dict[str, frozenset[str]] | None:
        if node is None:
            return {}
        cleared: dict[str, frozenset[str]] = {}
        for name, key_node, value in self.r.entries(node, "data.pools") or []:
            path = join("data.pools", name)
            kind = self.catalog.classifications.get(name)
            if kind is None:
                known = ", ".join(sorted(self.catalog.classifications))
                self.r.error(
                    key_node,
                    path,
                    f"unknown classification {name!r}; declared in defaults.yaml: {known}",
                )
                continue
            pools = self.r.names(value, path, self.catalog.pools, "pool")
            if pools is None:
                continue
            for index, item in enumerate(value.value if kind.on_prem_only else ()):
                pool = self.catalog.pools.get(item.value) if isinstance(item, ScalarNode) else None
                if pool is not None and not pool.on_prem:
                    message = (
                        f"pool {pool.name!r} is not on-prem; {name!r} data may go on-prem only"
                    )
                    self.r.error(item, f"{path}[{index}]", message)
            cleared[name] = frozenset(pools)
        return cleared

    def _audit(self, node: Node | None) -> AuditRules | None:
        fields = (
            (
                self.r.mapping(node, "audit", ("content", "required", "capture_content_in_traces"))
                or {}
            )
            if node
            else {}
        )
        content = AuditContent.HASHES
        if "content" in fields:
            choice = self.r.string(
                fields["content"], "audit.content", [c.value for c in AuditContent]
            )
            content = AuditContent(choice) if choice else content
        flags = {"required": True, "capture_content_in_traces": False}
        for key in flags:
            if key in fields:
                value = self.r.boolean(fields[key], join("audit", key))
                flags[key] = flags[key] if value is None else value
        return AuditRules(content, flags["required"], flags["capture_content_in_traces"])
