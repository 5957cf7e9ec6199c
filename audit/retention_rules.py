"""Retention rules as signed into retention checkpoints, and the text-expiry test verify applies."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DAY_NS = 86_400 * 1_000_000_000


def subject_tag(pseudonym: str) -> str:
    """How a held subject is named in a signed statement: a hash of the pseudonym, not itself."""
    return hashlib.sha256(b"hold\x00" + pseudonym.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """Days each purpose keeps records and text, from one version of the purpose register.

    `default_days` applies to records whose purpose is empty or not registered; None keeps
    them for ever (never pruned).
    """

    register_version: str
    purposes: Mapping[str, tuple[int, int]]  # purpose -> (records_days, text_days)
    default_days: int | None = None

    def days(self, purpose: str) -> tuple[int, int] | None:
        """(records_days, text_days) for `purpose`, or None when such records are kept."""
        got = self.purposes.get(purpose)
        if got is not None:
            return got
        if self.default_days is not None:
            return self.default_days, self.default_days
        return None

    def statement(self) -> dict[str, Any]:
        return {
            "register_version": self.register_version,
            "retention": {p: list(d) for p, d in sorted(self.purposes.items())},
            "default_days": self.default_days,
        }

    @classmethod
    def from_statement(cls, data: Mapping[str, Any]) -> RetentionRules:
        """The rules a checkpoint signed; raises KeyError/TypeError/ValueError when malformed."""
        purposes = {str(p): (int(d[0]), int(d[1])) for p, d in data["retention"].items()}
        default = data["default_days"]
        days = None if default is None else int(default)
        return cls(str(data["register_version"]), purposes, days)


@dataclass(frozen=True, slots=True)
class Holds:
    """Active legal holds: departments by name, subjects by pseudonym."""

    departments: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()

    def held(self, department: str, pseudonym: str | None) -> bool:
        return department in self.departments or (
            pseudonym is not None and pseudonym in self.subjects
        )

    def statement(self) -> dict[str, Any]:
        return {
            "held_departments": sorted(self.departments),
            "held_subjects": sorted(subject_tag(p) for p in self.subjects),
        }


@dataclass(frozen=True, slots=True)
class TextExpiry:
    """A verified, signed text-expiry statement of one source: what verify lets go missing.

    A record's missing text is accepted only when its chain index is in [first, last], its own
    hashed time plus its purpose's text retention (under `rules`) had passed at `as_of_ns`, and
    it was not under a hold the statement names. Everything else about the record (its subject
    link, its body) is still checked, and a text row that is present is still compared.
    """

    first: int
    last: int
    as_of_ns: int
    rules: RetentionRules
    held_departments: frozenset[str] = field(default_factory=frozenset)
    held_subjects: frozenset[str] = field(default_factory=frozenset)

    def covers(self, index: int, body: Mapping[str, Any], pseudonym: str | None) -> bool:
        if not self.first <= index <= self.last:
            return False
        days = self.rules.days(str(body.get("purpose", "")))
        time_ns = body.get("time_ns")
        if days is None or not isinstance(time_ns, int):
            return False
        if time_ns + days[1] * DAY_NS > self.as_of_ns:
            return False
        if body.get("department") in self.held_departments:
            return False
        return pseudonym is None or subject_tag(pseudonym) not in self.held_subjects


def text_expired(
    expiries: list[TextExpiry], index: int, body: Mapping[str, Any], pseudonym: str | None
) -> bool:
    """Whether a signed text-expiry statement accounts for this record's missing text."""
    return any(e.covers(index, body, pseudonym) for e in expiries)
