"""A weighted choice among values, as a settings file declares it (`{value: weight, ...}`)."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, init=False)
class Weighted(Generic[T]):
    """`pick` draws one of `values` with probability weight / total weight."""

    values: tuple[T, ...]
    weights: tuple[float, ...]
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __init__(self, values: Sequence[T], weights: Sequence[float]) -> None:
        if len(values) != len(weights) or not values:
            raise ValueError("expected one weight per value, and at least one value")
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "_cumulative", tuple(itertools.accumulate(self.weights)))

    def pick(self, rng: random.Random) -> T:
        point = rng.random() * self._cumulative[-1]
        return self.values[bisect.bisect_right(self._cumulative, point)]
