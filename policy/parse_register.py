"""Parsing `models.yaml` (the model register) and `purposes.yaml` (the purpose register)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import date

from yaml.nodes import Node, ScalarNode

from policy.definitions import Catalog
from policy.parse_defaults import check_version
from policy.register import (
    AI_ACT_CATEGORIES,
    ARTICLE_6_BASES,
    ARTICLE_9_CONDITIONS,
    DEFAULT_RETENTION_FLOOR_DAYS,
    DEPLOYER_ROLES,
    Approval,
    LegalBasis,
    ModelEntry,
    ModelStatus,
    Purpose,
)
from policy.yamlread import Reader, join

MODELS_FILE = "models.yaml"
PURPOSES_FILE = "purposes.yaml"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MODEL_KEYS = (
    "display_name",
    "provider",
    "licence",
    "version",
    "weights_digest",
    "intended_purposes",
    "known_limitations",
    "ai_act",
    "approval",
    "status",
)
_PURPOSE_KEYS = (
    "description",
    "legal_basis",
    "departments",
    "models",
    "classifications",
    "retention",
)


def parse_models(reader: Reader, root: Node, catalog: Catalog) -> dict[str, ModelEntry] | None:
    """The model register; every catalog model must be registered, and only catalog models."""
    fields = reader.mapping(root, "", ("version", "models"))
    if fields is None:
        return None
    check_version(reader, fields, root)
    node = reader.require(fields, root, "", "models")
    if node is None:
        return None
    entries = reader.entries(node, "models")
    if entries is None:
        return None
    result: dict[str, ModelEntry] = {}
    for name, key_node, value in entries:
        path = join("models", name)
        if name not in catalog.models:
            reader.error(
                key_node, path, "not a model of the catalog in defaults.yaml; add it there first"
            )
            continue
        entry = _model(reader, name, value, path)
        if entry is not None:
            result[name] = entry
    listed = {key for key, _, _ in entries}
    for name in catalog.models:
        if name not in listed:
            reader.error(
                node,
                join("models", name),
                f"catalog model {name!r} is not registered; add it (status: suspended until "
                "approved)",
            )
    return result


def _model(reader: Reader, name: str, node: Node, path: str) -> ModelEntry | None:
    before = reader.failures
    fields = reader.mapping(node, path, _MODEL_KEYS)
    if fields is None:
        return None
    text = {
        key: _required_string(reader, fields, node, path, key)
        for key in ("display_name", "provider", "licence", "version", "weights_digest")
    }
    digest = text["weights_digest"]
    if digest is not None and not _DIGEST.fullmatch(digest):
        reader.error(
            fields["weights_digest"],
            join(path, "weights_digest"),
            "expected sha256:<64 lower-case hex digits>, as `llm-worker digest` prints it",
        )
    purposes = _strings(reader, fields.get("intended_purposes"), join(path, "intended_purposes"))
    limitations = _strings(reader, fields.get("known_limitations"), join(path, "known_limitations"))
    ai_act = _section(reader, fields, node, path, "ai_act", ("category", "deployer_role"))
    category = role = None
    if ai_act is not None:
        category = _choice(reader, fields, ai_act, path, "ai_act", "category", AI_ACT_CATEGORIES)
        role = _choice(reader, fields, ai_act, path, "ai_act", "deployer_role", DEPLOYER_ROLES)
    approval = _approval(reader, fields, node, path)
    status_node = reader.require(fields, node, path, "status")
    status = None
    if status_node is not None:
        value = reader.string(status_node, join(path, "status"), [s.value for s in ModelStatus])
        status = ModelStatus(value) if value is not None else None
    if reader.failures > before or None in text.values():
        return None
    assert category and role and approval and status and purposes is not None
    return ModelEntry(
        name=name,
        display_name=text["display_name"] or "",
        provider=text["provider"] or "",
        licence=text["licence"] or "",
        version=text["version"] or "",
        weights_digest=digest or "",
        intended_purposes=tuple(purposes),
        known_limitations=tuple(limitations or ()),
        ai_act_category=category,
        deployer_role=role,
        approval=approval,
        status=status,
    )


def _approval(reader: Reader, fields: dict[str, Node], owner: Node, path: str) -> Approval | None:
    section = _section(reader, fields, owner, path, "approval", ("by", "date", "assessment"))
    if section is None:
        return None
    where = join(path, "approval")
    by = _required_string(reader, section, fields["approval"], where, "by")
    assessment = _required_string(reader, section, fields["approval"], where, "assessment")
    when = _date(reader, reader.require(section, fields["approval"], where, "date"), where)
    if by is None or assessment is None or when is None:
        return None
    return Approval(by, when, assessment)


def parse_purposes(
    reader: Reader, root: Node, catalog: Catalog, departments: Collection[str]
) -> tuple[dict[str, Purpose], int, frozenset[str]] | None:
    """The purpose register, its retention floor and its special-category classifications."""
    fields = reader.mapping(
        root, "", ("version", "retention_floor_days", "special_categories", "purposes")
    )
    if fields is None:
        return None
    check_version(reader, fields, root)
    floor = DEFAULT_RETENTION_FLOOR_DAYS
    if "retention_floor_days" in fields:
        floor = reader.integer(fields["retention_floor_days"], "retention_floor_days", 1) or floor
    special: frozenset[str] = frozenset()
    if "special_categories" in fields:
        names = reader.names(
            fields["special_categories"],
            "special_categories",
            catalog.classifications,
            "classification",
        )
        special = frozenset(names or ())
    node = reader.require(fields, root, "", "purposes")
    entries = reader.entries(node, "purposes") if node is not None else None
    if entries is None:
        return None
    result: dict[str, Purpose] = {}
    for name, _key_node, value in entries:
        purpose = _purpose(reader, name, value, catalog, departments, floor, special)
        if purpose is not None:
            result[name] = purpose
    return result, floor, special


def _purpose(
    reader: Reader,
    name: str,
    node: Node,
    catalog: Catalog,
    departments: Collection[str],
    floor: int,
    special: frozenset[str],
) -> Purpose | None:
    path = join("purposes", name)
    before = reader.failures
    fields = reader.mapping(node, path, _PURPOSE_KEYS)
    if fields is None:
        return None
    description = _required_string(reader, fields, node, path, "description")
    basis = _legal_basis(reader, fields, node, path)
    lists: dict[str, frozenset[str]] = {}
    known: Mapping[str, Collection[str]] = {
        "departments": departments,
        "models": catalog.models,
        "classifications": catalog.classifications,
    }
    for key, names in known.items():
        value = reader.require(fields, node, path, key)
        found = reader.names(value, join(path, key), names, key[:-1]) if value else None
        lists[key] = frozenset(found or ())
    retention = _section(reader, fields, node, path, "retention", ("records_days", "text_days"))
    records = text = None
    if retention is not None:
        where = join(path, "retention")
        records_node = reader.require(retention, fields["retention"], where, "records_days")
        if records_node is not None:
            records = reader.integer(records_node, join(where, "records_days"), 1)
            if records is not None and records < floor:
                reader.error(
                    records_node,
                    join(where, "records_days"),
                    f"records are kept {records} days, below the floor of {floor} days "
                    "(retention_floor_days; the AI Act asks for at least six months of logs)",
                )
        text_node = retention.get("text_days")
        text = records
        if text_node is not None:
            text = reader.integer(text_node, join(where, "text_days"), 0)
            if text is not None and records is not None and text > records:
                reader.error(
                    text_node, join(where, "text_days"), "kept text cannot outlive its record"
                )
    if basis is not None and basis.article_9 is None and lists["classifications"] & special:
        reader.error(
            fields["legal_basis"],
            join(path, "legal_basis.article_9"),
            f"allows special-category data ({', '.join(sorted(lists['classifications'] & special))}"
            "); name the GDPR Art. 9(2) condition",
        )
    if reader.failures > before or description is None or basis is None:
        return None
    assert records is not None and text is not None
    return Purpose(
        id=name,
        description=description,
        legal_basis=basis,
        departments=lists["departments"],
        models=lists["models"],
        classifications=lists["classifications"],
        retention_records_days=records,
        retention_text_days=text,
    )


def _legal_basis(
    reader: Reader, fields: dict[str, Node], owner: Node, path: str
) -> LegalBasis | None:
    section = _section(
        reader, fields, owner, path, "legal_basis", ("article_6", "article_9", "reference")
    )
    if section is None:
        return None
    article_6 = _choice(reader, fields, section, path, "legal_basis", "article_6", ARTICLE_6_BASES)
    article_9 = None
    if "article_9" in section:
        where = join(path, "legal_basis.article_9")
        article_9 = reader.string(section["article_9"], where, ARTICLE_9_CONDITIONS)
    reference = ""
    if "reference" in section:
        reference = reader.string(section["reference"], join(path, "legal_basis.reference")) or ""
    if article_6 is None:
        return None
    return LegalBasis(article_6, article_9, reference)


def _section(
    reader: Reader,
    fields: dict[str, Node],
    owner: Node,
    path: str,
    key: str,
    keys: tuple[str, ...],
) -> dict[str, Node] | None:
    node = reader.require(fields, owner, path, key)
    return reader.mapping(node, join(path, key), keys) if node is not None else None


def _choice(
    reader: Reader,
    fields: dict[str, Node],
    section: dict[str, Node],
    path: str,
    parent: str,
    key: str,
    choices: tuple[str, ...],
) -> str | None:
    where = join(path, parent)
    node = reader.require(section, fields[parent], where, key)
    return reader.string(node, join(where, key), choices) if node is not None else None


def _required_string(
    reader: Reader, fields: dict[str, Node], owner: Node, path: str, key: str
) -> str | None:
    node = reader.require(fields, owner, path, key)
    return reader.string(node, join(path, key)) if node is not None else None


def _strings(reader: Reader, node: Node | None, path: str) -> list[str] | None:
    if node is None:
        return []
    items = reader.sequence(node, path)
    if items is None:
        return None
    values = [reader.string(item, f"{path}[{i}]") for i, item in enumerate(items)]
    return [v for v in values if v is not None]


def _date(reader: Reader, node: Node | None, path: str) -> str | None:
    if node is None:
        return None
    # An unquoted 2026-10-01 is a YAML timestamp; its text is what matters here.
    raw = str(node.value) if isinstance(node, ScalarNode) else ""
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        reader.error(node, join(path, "date"), f"expected a date as YYYY-MM-DD, got {raw!r}")
        return None
