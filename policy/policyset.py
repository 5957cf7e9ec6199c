"""A loaded, validated policy directory: the catalog and every department, indexed by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from policy.definitions import Catalog, DepartmentPolicy
from policy.register import Register


@dataclass(frozen=True, slots=True)
class PolicySet:
    """One immutable version of the policy; swapped whole on reload, never changed in place.

    `version` is the sha256 of the directory's policy files (names and contents), recorded in
    every audit record so a decision can be traced to the exact policy that made it.
    """

    version: str
    directory: str
    catalog: Catalog
    departments: Mapping[str, DepartmentPolicy]
    register: Register = field(default_factory=Register)

    @property
    def model_catalog(self) -> Mapping[str, tuple[str, ...]]:
        """Model name -> the pools serving it (for routing and ListModels)."""
        return self.catalog.models

    def department(self, name: str) -> DepartmentPolicy | None:
        """The policy of department `name`, or None if it has none."""
        return self.departments.get(name)
