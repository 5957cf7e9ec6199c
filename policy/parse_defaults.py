"""Parsing defaults.yaml: pools, models and groups, classifications, priority classes."""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, SequenceNode

from policy.definitions import Catalog, Classification, Pool
from policy.yamlread import Reader, join

SCHEMA_VERSION = 1
DEFAULTS_KEYS = (
    "version",
    "pools",
    "models",
    "groups",
    "classifications",
    "clearance_default",
    "priority_classes",
    "department_defaults",
)


def check_version(reader: Reader, fields: dict[str, Node], owner: Node) -> None:
    """Every policy file starts with `version: 1`; other versions are refused, not guessed at."""
    node = reader.require(fields, owner, "", "version")
    if node is None:
        return
    version = reader.integer(node, "version")
    if version is not None and version != SCHEMA_VERSION:
        reader.error(
            node,
            "version",
            f"unsupported schema version {version}; this gateway reads version {SCHEMA_VERSION}",
        )


def parse_defaults(reader: Reader, root: Node) -> tuple[Catalog, MappingNode | None]:
    """The catalog declared by defaults.yaml and its `department_defaults` node (unparsed)."""
    fields = reader.mapping(root, "", DEFAULTS_KEYS) or {}
    check_version(reader, fields, root)
    pools = _pools(reader, reader.require(fields, root, "", "pools"))
    models = _models(reader, reader.require(fields, root, "", "models"), pools)
    groups = _groups(reader, fields.get("groups"), models)
    classes = _classifications(reader, reader.require(fields, root, "", "classifications"))
    priorities = _priorities(reader, reader.require(fields, root, "", "priority_classes"))
    clearance = _clearance_default(reader, fields.get("clearance_default"), classes)
    catalog = Catalog(pools, models, groups, classes, priorities, clearance)
    dept_defaults = fields.get("department_defaults")
    if dept_defaults is not None and not isinstance(dept_defaults, MappingNode):
        reader.error(dept_defaults, "department_defaults", "expected a mapping")
        dept_defaults = None
    return catalog, dept_defaults


def _pools(reader: Reader, node: Node | None) -> dict[str, Pool]:
    pools: dict[str, Pool] = {}
    for name, _, value in (reader.entries(node, "pools") or []) if node else []:
        path = join("pools", name)
        fields = reader.mapping(value, path, ("on_prem", "description"))
        if fields is None:
            continue
        on_prem_node = reader.require(fields, value, path, "on_prem")
        on_prem = reader.boolean(on_prem_node, join(path, "on_prem")) if on_prem_node else None
        if "description" in fields:
            reader.string(fields["description"], join(path, "description"))
        if on_prem is not None:
            pools[name] = Pool(name, on_prem)
    if isinstance(node, MappingNode) and not node.value:
        reader.error(node, "pools", "declare at least one pool")
    return pools


def _models(
    reader: Reader, node: Node | None, pools: dict[str, Pool]
) -> dict[str, tuple[str, ...]]:
    models: dict[str, tuple[str, ...]] = {}
    for name, _, value in (reader.entries(node, "models") or []) if node else []:
        path = join("models", name)
        fields = reader.mapping(value, path, ("pools", "description"))
        if fields is None:
            continue
        if "description" in fields:
            reader.string(fields["description"], join(path, "description"))
        pools_node = reader.require(fields, value, path, "pools")
        if pools_node is None:
            continue
        served = reader.names(pools_node, join(path, "pools"), pools, "pool")
        if isinstance(pools_node, SequenceNode) and not pools_node.value:
            reader.error(
                pools_node, join(path, "pools"), "list at least one pool serving the model"
            )
        if served:
            models[name] = tuple(served)
    return models


def _groups(
    reader: Reader, node: Node | None, models: dict[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for name, key_node, value in (reader.entries(node, "groups") or []) if node else []:
        if name in models:
            reader.error(
                key_node,
                join("groups", name),
                "a group may not share its name with a model; rename it",
            )
            continue
        members = reader.names(value, join("groups", name), models, "model")
        if members is not None:
            groups[name] = tuple(members)
    return groups


def _classifications(reader: Reader, node: Node | None) -> dict[str, Classification]:
    classes: dict[str, Classification] = {}
    items = (reader.sequence(node, "classifications") or []) if node else []
    for index, item in enumerate(items):
        path = f"classifications[{index}]"
        on_prem_only = False
        name_node: Node | None = item
        if isinstance(item, MappingNode):
            fields = reader.mapping(item, path, ("name", "on_prem_only")) or {}
            name_node = reader.require(fields, item, path, "name")
            if "on_prem_only" in fields:
                on_prem_only = bool(
                    reader.boolean(fields["on_prem_only"], join(path, "on_prem_only"))
                )
            path = join(path, "name")
        name = reader.string(name_node, path) if name_node is not None else None
        if name is None:
            continue
        if name in classes:
            reader.error(item, path, f"classification {name!r} is listed twice; list it once")
            continue
        classes[name] = Classification(name, len(classes), on_prem_only)
    if isinstance(node, SequenceNode) and not items:
        reader.error(
            node, "classifications", "declare at least one classification, least sensitive first"
        )
    return classes


def _priorities(reader: Reader, node: Node | None) -> dict[str, int]:
    priorities: dict[str, int] = {}
    for name, _, value in (reader.entries(node, "priority_classes") or []) if node else []:
        priority = reader.integer(value, join("priority_classes", name), minimum=0)
        if priority is not None:
            priorities[name] = priority
    return priorities


def _clearance_default(
    reader: Reader, node: Node | None, classes: dict[str, Classification]
) -> str:
    lowest = next(iter(classes), "")
    if node is None:
        return lowest
    return reader.known(node, "clearance_default", classes, "classification") or lowest
