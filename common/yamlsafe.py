"""Parsing untrusted YAML: bounded size, depth and alias expansion; every failure one `YamlProblem`.

PyYAML raises from the loader's constructor (control characters), from composing (syntax,
nesting deep enough for a `RecursionError`) and from constructing (a timestamp such as
`2001-13-01` raises `ValueError`). Aliases make a document that is small on disk expand to an
exponential number of values for anything that walks it (the "billion laughs"): the tree is
measured with aliases counted at every use, without expanding it, and refused past a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 1024 * 1024  # a settings or policy file is a few KB; 1 MiB is far beyond any real one
MAX_DEPTH = 64  # nesting levels; real files use fewer than 10
MAX_NODES = 100_000  # values after alias expansion; real files have a few thousand at most


@dataclass(frozen=True, slots=True)
class YamlProblem(Exception):
    """Why a document was refused; `line` is 1-based, 0 when no position applies."""

    line: int
    message: str

    def __str__(self) -> str:
        return self.message


def compose(text: str, name: str) -> Node | None:
    """One document as a node tree whose marks carry `name`; None for an empty document."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(
            0,
            f"file is larger than {MAX_BYTES} bytes; policy and settings files are a few kilobytes",
        )
    loader: yaml.SafeLoader | None = None
    try:
        # The constructor already reads the text and raises ReaderError on control characters.
        loader = yaml.SafeLoader(text)
        loader.name = name
        _check_nesting(loader)
        loader.dispose()
        loader = yaml.SafeLoader(text)
        loader.name = name
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlProblem(line, f"invalid YAML: {err.problem or err.context}") from None
    except yaml.reader.ReaderError as err:
        raise YamlProblem(
            0,
            f"invalid YAML: {err.reason} (character {err.character!r} at position {err.position})",
        ) from None
    except yaml.YAMLError as err:
        raise YamlProblem(0, f"invalid YAML: {err}") from None
    except RecursionError:
        raise YamlProblem(0, f"invalid YAML: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is not None:
        check_shape(node)
    return node


def load(text: str, name: str) -> object:
    """One document as Python values (None when empty), within the same limits as `compose`."""
    node = compose(text, name)
    if node is None:
        return None
    constructor = yaml.constructor.SafeConstructor()
    try:
        return constructor.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlProblem(line, f"invalid YAML value: {err.problem or err.context}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
        # e.g. `2001-13-01` is resolved as a timestamp and then refused by datetime.
        raise YamlProblem(0, f"invalid YAML value: {err}") from None
    except RecursionError:
        raise YamlProblem(0, f"invalid YAML: nested deeper than {MAX_DEPTH} levels") from None


def check_shape(root: Node) -> None:
    """Refuse a tree that is recursive, deeper than MAX_DEPTH or over MAX_NODES once expanded.

    Iterative, and each distinct node is visited once (a shared node's expanded size is
    memoized), so the check itself costs time linear in the document, not in its expansion.
    """
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, depth, children done?)
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_NODES:
                raise YamlProblem(
                    node.start_mark.line + 1,
                    f"document expands to more than {MAX_NODES} values (aliases counted at "
                    "each use); write it without alias chains",
                )
            sizes[key] = size
            heights[key] = 1 + max((heights[id(child)] for child in children), default=0)
            continue
        if key in sizes:  # a shared node, already measured: only its depth here is new
            if depth + heights[key] - 1 > MAX_DEPTH:
                raise YamlProblem(
                    node.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels"
                )
            continue
        if key in on_path:
            raise YamlProblem(node.start_mark.line + 1, "an alias refers to its own anchor")
        if depth > MAX_DEPTH:
            raise YamlProblem(node.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in children:
            if id(child) in on_path:
                raise YamlProblem(child.start_mark.line + 1, "an alias refers to its own anchor")
            stack.append((child, depth + 1, False))


_OPEN = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _check_nesting(loader: yaml.SafeLoader) -> None:
    """Refuse deep nesting from the token stream, before the recursive composer sees it."""
    depth = 0
    while (token := loader.get_token()) is not None:  # type: ignore[no-untyped-call]
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(
                    token.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels"
                )
        elif isinstance(token, _CLOSE):
            depth -= 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [item for pair in node.value for item in pair]
    return []
