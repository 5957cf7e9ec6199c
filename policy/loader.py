"""Loading a policy directory: read every file once, validate all of it, build a `PolicySet`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import MappingNode, Node

from common import yamlsafe
from policy.definitions import Catalog, DepartmentPolicy
from policy.issues import Issue, PolicyError
from policy.parse_defaults import parse_defaults
from policy.parse_department import check_department_defaults, parse_department
from policy.parse_register import MODELS_FILE, PURPOSES_FILE, parse_models, parse_purposes
from policy.policyset import PolicySet
from policy.register import Register
from policy.yamlread import Reader, compose, merge

DEFAULTS_FILE = "defaults.yaml"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The bytes of every policy file of a directory at one moment, and their content hash."""

    directory: Path
    files: Mapping[str, bytes]  # file name -> content, sorted by name
    version: str


def read_snapshot(directory: Path) -> Snapshot:
    """Read all policy files (`*.yaml`, `*.yml`, not hidden) of `directory`; raises `OSError`."""
    names = sorted(
        entry.name
        for entry in directory.iterdir()
        if entry.suffix in SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    )
    files = {name: _read_bounded(directory / name) for name in names}
    digest = hashlib.sha256()
    for name, content in files.items():
        # Length-prefixed so that no two different directories hash alike.
        digest.update(f"{len(name)}:{name}:{len(content)}:".encode())
        digest.update(content)
    return Snapshot(directory, files, digest.hexdigest())


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, or only the first MAX_BYTES + 1 of a larger one (refused as too large)."""
    with path.open("rb") as file:
        return file.read(yamlsafe.MAX_BYTES + 1)


def load_directory(directory: Path | str) -> PolicySet:
    """Load and validate a policy directory; raises `PolicyError` listing every problem."""
    path = Path(directory)
    try:
        snapshot = read_snapshot(path)
    except OSError as err:
        raise PolicyError(
            [Issue(str(path), 0, "-", f"cannot read policy directory: {err.strerror}")]
        ) from None
    return build(snapshot)


def build(snapshot: Snapshot) -> PolicySet:
    """Validate a snapshot and build its `PolicySet`; raises `PolicyError` listing every problem."""
    issues: list[Issue] = []
    nodes = {name: _compose(snapshot, name, issues) for name in snapshot.files}
    defaults_name = str(snapshot.directory / DEFAULTS_FILE)
    defaults = nodes.pop(DEFAULTS_FILE, None)
    registers = {name: nodes.pop(name, None) for name in (MODELS_FILE, PURPOSES_FILE)}
    if DEFAULTS_FILE not in snapshot.files:
        issues.append(
            Issue(defaults_name, 0, "-", "missing; every policy directory needs a defaults.yaml")
        )
    if defaults is None:
        raise PolicyError(issues)
    catalog, dept_defaults = parse_defaults(Reader(issues), defaults)
    reader = Reader(issues, {defaults_name: "department_defaults"})
    if dept_defaults is not None:
        check_department_defaults(reader, dept_defaults, catalog)
    departments: dict[str, DepartmentPolicy] = {}
    defined_at: dict[str, Node] = {}
    for node in nodes.values():
        if node is None:
            continue
        merged = (
            merge(dept_defaults, node) if isinstance(node, MappingNode) and dept_defaults else node
        )
        policy = parse_department(reader, node, merged, catalog)
        name_node = _department_node(node)
        if name_node is None or not isinstance(name_node.value, str):
            continue
        first = defined_at.setdefault(name_node.value, name_node)
        if first is not name_node:
            where = f"{first.start_mark.name}:{first.start_mark.line + 1}"
            reader.error(
                name_node,
                "department",
                f"department {name_node.value!r} is already defined in {where}; "
                "keep one file per department",
            )
        elif policy is not None:
            departments[policy.name] = policy
    register = _register(Reader(issues), registers, catalog, departments, defined_at)
    if issues:
        raise PolicyError(issues)
    return PolicySet(snapshot.version, str(snapshot.directory), catalog, departments, register)


def _register(
    reader: Reader,
    nodes: Mapping[str, Node | None],
    catalog: Catalog,
    departments: Mapping[str, DepartmentPolicy],
    defined: Mapping[str, Node],
) -> Register:
    """The model and purpose registers (each optional) and their cross-references."""
    models_node, purposes_node = nodes[MODELS_FILE], nodes[PURPOSES_FILE]
    models = parse_models(reader, models_node, catalog) if models_node is not None else None
    parsed = (
        parse_purposes(reader, purposes_node, catalog, defined)
        if purposes_node is not None
        else None
    )
    register = Register(models=models)
    if parsed is not None:
        purposes, floor, special = parsed
        register = Register(models, purposes, floor, special)
    if models is not None and register.purposes is not None:
        for entry in models.values():
            for purpose in entry.intended_purposes:
                if purpose not in register.purposes:
                    reader.issues.append(
                        Issue(
                            _file_of(models_node),
                            0,
                            f"models.{entry.name}.intended_purposes",
                            f"unknown purpose {purpose!r}; declare it in {PURPOSES_FILE}",
                        )
                    )
    if register.purposes is None:
        for department in departments.values():
            if department.data.registered_purpose:
                reader.issues.append(
                    Issue(
                        department.file,
                        0,
                        "data.registered_purpose",
                        f"requires registered purposes but the directory has no {PURPOSES_FILE}",
                    )
                )
    return register


def _file_of(node: Node | None) -> str:
    """The file name a node was read from."""
    return node.start_mark.name if node is not None else "-"


def _compose(snapshot: Snapshot, name: str, issues: list[Issue]) -> Node | None:
    display = str(snapshot.directory / name)
    if len(snapshot.files[name]) > yamlsafe.MAX_BYTES:
        issues.append(
            Issue(display, 0, "-", f"file is larger than {yamlsafe.MAX_BYTES} bytes; split it")
        )
        return None
    try:
        text = snapshot.files[name].decode("utf-8")
    except UnicodeDecodeError:
        issues.append(Issue(display, 0, "-", "not valid UTF-8; save the file as UTF-8"))
        return None
    return compose(text, display, issues)


def _department_node(node: Node) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    return next((v for k, v in node.value if getattr(k, "value", None) == "department"), None)
