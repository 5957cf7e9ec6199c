"""Reader shapes beyond scalars: weighted choices, inline (shorthand) sections, plain fields."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import pytest

from common.settings import SettingsError, read, setting, walk
from common.settings_checks import positive
from common.weighted import Weighted


@dataclass(frozen=True, slots=True)
class Pool:
    name: str = setting(doc="name")
    weight: float = setting(1.0, doc="share", check=positive)


@dataclass(frozen=True, slots=True)
class Phase:
    seconds: float = setting(doc="length", check=positive)
    rate: float | None = setting(None, doc="per second", check=positive)


@dataclass(frozen=True, slots=True)
class Plan:
    kinds: Weighted[Literal["a", "b"]] = setting(doc="kinds")
    sizes: Weighted[int] = setting(Weighted((8,), (1.0,)), doc="sizes")
    pools: Weighted[Pool] | None = setting(None, doc="pools")
    phases: tuple[Phase, ...] = setting((), doc="phases")
    phase: Phase | None = setting(None, inline=True, instead_of="phases", doc="one phase")
    origin: str = field(default="code")  # not declared with setting(): set by the code only


def test_weighted_mappings_and_lists_of_weighted_sections() -> None:
    plan = read(
        Plan, {"kinds": {"a": 3, "b": 1}, "pools": [{"name": "x"}, {"name": "y", "weight": 4}]}
    )
    assert plan.kinds == Weighted(("a", "b"), (3.0, 1.0)) and plan.sizes.values == (8,)
    assert plan.pools is not None and plan.pools.weights == (1.0, 4.0)
    rng = random.Random(7)
    draws = Counter(plan.kinds.pick(rng) for _ in range(4000))
    assert 0.71 <= draws["a"] / 4000 <= 0.79


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kinds": {"c": 1}}, "plan.kinds.c: expected one of 'a', 'b', got 'c'"),
        ({"kinds": {"a": 0}}, "plan.kinds.a: expected a positive number (a weight), got 0"),
        ({"kinds": {"a": True}}, "plan.kinds.a: expected a positive number (a weight), got True"),
        ({"kinds": {"a": float("inf")}}, "plan.kinds.a: expected a positive number (a weight)"),
        ({"kinds": {}}, "plan.kinds: expected a non-empty mapping of one of 'a', 'b' to weight"),
        ({"kinds": {"a": 1}, "sizes": {"big": 1}}, "plan.sizes.big: expected int, got 'big'"),
        ({"kinds": {"a": 1}, "pools": []}, "plan.pools: expected a non-empty list of mappings"),
        (
            {"kinds": {"a": 1}, "pools": [{"name": "x", "wieght": 2}]},
            "plan.pools[0]: unknown key(s) wieght; allowed: name, weight",
        ),
        ({"kinds": {"a": 1}, "pools": [{"name": "x", "weight": -1}]}, "plan.pools[0].weight: must"),
    ],
)
def test_weighted_errors_name_the_entry(data: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        read(Plan, data, "plan")
    assert str(error.value).startswith(message)


def test_an_inline_section_is_written_in_its_parent_and_named_there() -> None:
    plan = read(Plan, {"kinds": {"a": 1}, "seconds": 5, "rate": 2})
    assert plan.phase == Phase(5.0, 2.0) and plan.phases == ()
    assert read(Plan, {"kinds": {"a": 1}}).phase is None  # none of its keys: absent
    with pytest.raises(SettingsError, match=r"^plan\.rate: must be greater than 0, got -1"):
        read(Plan, {"kinds": {"a": 1}, "seconds": 5, "rate": -1}, "plan")
    with pytest.raises(SettingsError, match=r"^plan\.seconds: expected float .*required"):
        read(Plan, {"kinds": {"a": 1}, "rate": 2}, "plan")
    with pytest.raises(SettingsError, match=r"^plan: give either `phases` or seconds/rate, not"):
        read(Plan, {"kinds": {"a": 1}, "rate": 2, "phases": [{"seconds": 1}]}, "plan")


def test_unknown_keys_list_inline_keys_but_not_plain_fields() -> None:
    with pytest.raises(SettingsError) as error:
        read(Plan, {"kinds": {"a": 1}, "origin": "file"}, "plan")
    assert str(error.value) == (
        "plan: unknown key(s) origin; allowed: kinds, sizes, pools, phases, seconds, rate"
    )
    assert read(Plan, {"kinds": {"a": 1}}).origin == "code"


def test_walk_names_list_items_and_documents_an_inline_section_once() -> None:
    keys = [key for key, _, _ in walk(Plan)]
    assert keys == [
        "kinds", "sizes", "pools", "pools[].name", "pools[].weight",
        "phases", "phases[].seconds", "phases[].rate", "phase",
    ]  # fmt: skip
