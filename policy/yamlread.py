"""Reading composed YAML nodes with their source marks, collecting every issue on the way.

Policies are composed (`yaml.compose`) rather than loaded so that every value keeps its file and
line; the typed readers here turn nodes into Python values or record an `Issue` and return None,
so one pass reports all problems instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common import yamlsafe
from policy.issues import Issue

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
# Only used for its int/bool scalar parsing (`1_000`, `0x10`, `yes`); it never sees a whole file.
_SCALARS = SafeConstructor()


def join(path: str, key: str) -> str:
    """The dotted key path of `key` inside `path`."""
    return f"{path}.{key}" if path else key


def compose(text: str, display: str, issues: list[Issue]) -> Node | None:
    """Compose one YAML document into a node tree whose marks carry `display` as the file name.

    Any document is answered with a node tree or an issue: bounded size, depth and alias
    expansion (`common.yamlsafe`), so a hostile file cannot stall or crash a reload.
    """
    try:
        node = yamlsafe.compose(text, display)
    except yamlsafe.YamlProblem as problem:
        issues.append(Issue(display, problem.line, "-", problem.message))
        return None
    if node is None:
        issues.append(
            Issue(display, 1, "-", "file is empty; write a mapping starting with `version: 1`")
        )
    return node


def merge(base: MappingNode, override: MappingNode) -> MappingNode:
    """Deep-merge two mapping nodes: mappings merge key by key, anything else in `override` wins.

    Keys keep their own marks, so an error in an inherited value still points at the file and
    line it came from.
    """
    overridden = {k.value: v for k, v in override.value if isinstance(k, ScalarNode)}
    inherited = {k.value: v for k, v in base.value if isinstance(k, ScalarNode)}
    pairs: list[tuple[Node, Node]] = [
        (k, v) for k, v in base.value if not (isinstance(k, ScalarNode) and k.value in overridden)
    ]
    for key, value in override.value:
        below = inherited.get(key.value) if isinstance(key, ScalarNode) else None
        if isinstance(below, MappingNode) and isinstance(value, MappingNode):
            value = merge(below, value)
        pairs.append((key, value))
    return MappingNode(override.tag, pairs, override.start_mark, override.end_mark)


class Reader:
    """Typed access to YAML nodes; every failed read records an `Issue` and yields None.

    `prefixes` maps a file name to a key-path prefix for nodes merged in from that file (the
    defaults' `department_defaults` section), so their errors name the key where it is written.
    """

    def __init__(self, issues: list[Issue], prefixes: Mapping[str, str] | None = None) -> None:
        self.issues = issues
        self.failures = 0  # counts every error, also those already recorded (deduplicated)
        self._prefixes = dict(prefixes or {})

    def error(self, node: Node, path: str, message: str) -> None:
        """Record an issue about `node`, found at key `path`."""
        self.failures += 1
        file = node.start_mark.name
        prefix = self._prefixes.get(file)
        key = join(prefix, path) if prefix else path
        issue = Issue(file, node.start_mark.line + 1, key or "-", message)
        if issue not in self.issues:  # inherited values are read once per department
            self.issues.append(issue)

    def mapping(self, node: Node, path: str, allowed: Collection[str]) -> dict[str, Node] | None:
        """A mapping whose keys must all be in `allowed`."""
        entries = self.entries(node, path)
        if entries is None:
            return None
        result: dict[str, Node] = {}
        for key, key_node, value in entries:
            if key in allowed:
                result[key] = value
            else:
                expected = ", ".join(sorted(allowed))
                self.error(key_node, join(path, key), f"unknown key; expected one of: {expected}")
        return result

    def entries(self, node: Node, path: str) -> list[tuple[str, Node, Node]] | None:
        """A mapping with free-form string keys (names), as (key, key node, value node)."""
        if not isinstance(node, MappingNode):
            self.error(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        result: list[tuple[str, Node, Node]] = []
        seen: set[str] = set()
        for key_node, value in node.value:
            if not (isinstance(key_node, ScalarNode) and key_node.tag == _STR and key_node.value):
                self.error(key_node, path, "keys must be non-empty strings")
                continue
            key = key_node.value
            if key in seen:
                self.error(key_node, join(path, key), "duplicate key; write each key once")
                continue
            seen.add(key)
            result.append((key, key_node, value))
        return result

    def require(self, fields: Mapping[str, Node], owner: Node, path: str, key: str) -> Node | None:
        """The value of a required key, or an issue on the mapping that lacks it."""
        value = fields.get(key)
        if value is None:
            self.error(owner, join(path, key), "missing required key")
        return value

    def string(self, node: Node, path: str, choices: Collection[str] = ()) -> str | None:
        """A non-empty string, optionally one of `choices`."""
        if not (isinstance(node, ScalarNode) and node.tag == _STR and node.value):
            self.error(node, path, f"expected a non-empty string, got {_describe(node)}")
            return None
        value: str = node.value
        if choices and value not in choices:
            self.error(node, path, f"expected one of: {', '.join(choices)}; got {value!r}")
            return None
        return value

    def integer(self, node: Node, path: str, minimum: int = 0) -> int | None:
        """An integer of at least `minimum`."""
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.error(node, path, f"expected an integer, got {_describe(node)}")
            return None
        try:
            value = int(_SCALARS.construct_yaml_int(node))
        except ValueError:  # past Python's int-from-string digit limit
            self.error(node, path, "expected an integer of reasonable size")
            return None
        if value < minimum:
            self.error(node, path, f"expected an integer >= {minimum}, got {value}")
            return None
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        """`true` or `false`."""
        if not (isinstance(node, ScalarNode) and node.tag == _BOOL):
            self.error(node, path, f"expected true or false, got {_describe(node)}")
            return None
        return bool(_SCALARS.construct_yaml_bool(node))

    def sequence(self, node: Node, path: str) -> list[Node] | None:
        """A list of nodes."""
        if not isinstance(node, SequenceNode):
            self.error(node, path, f"expected a list, got {_describe(node)}")
            return None
        return list(node.value)

    def names(self, node: Node, path: str, known: Collection[str], what: str) -> list[str] | None:
        """A list of distinct strings, each one of `known`; None if any item is wrong."""
        items = self.sequence(node, path)
        if items is None:
            return None
        before = self.failures
        result: list[str] = []
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            name = self.string(item, item_path)
            if name is None:
                continue
            if name in result:
                self.error(item, item_path, f"{what} {name!r} is listed twice; list it once")
            elif name not in known:
                self.error(item, item_path, f"unknown {what} {name!r}; {_known(known, what)}")
            else:
                result.append(name)
        return result if self.failures == before else None

    def known(self, node: Node, path: str, known: Collection[str], what: str) -> str | None:
        """One string naming an existing thing (a pool, a priority class)."""
        name = self.string(node, path)
        if name is not None and name not in known:
            self.error(node, path, f"unknown {what} {name!r}; {_known(known, what)}")
            return None
        return name


def _known(known: Collection[str], what: str) -> str:
    if not known:
        return f"no {what} is declared in defaults.yaml"
    return f"declared in defaults.yaml: {', '.join(sorted(known))}"


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kinds = {_STR: "a string", _INT: "an integer", _BOOL: "a boolean", _NULL: "nothing (null)"}
    return kinds.get(node.tag, f"a value of type {node.tag.rsplit(':', 1)[-1]}")
