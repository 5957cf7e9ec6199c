"""Policy validation errors: each names the file, line and key path it is about."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Issue:
    """One thing wrong with a policy directory, formatted as `file:line: key: message`.

    `line` is 1-based; 0 means the issue concerns a whole file or directory. `key` is the dotted
    path inside the file (`tokens.max_prompt`, `guard.patterns.study_id.regex`), or `-` when the
    issue is about the file as a whole.
    """

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class PolicyError(Exception):
    """A policy directory that cannot be loaded; `issues` lists every problem found, in order."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        count = len(self.issues)
        lines = "\n".join(str(issue) for issue in self.issues)
        super().__init__(f"policy rejected with {count} error(s):\n{lines}")
