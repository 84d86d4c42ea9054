"""Parameter checks from one table per estimator, as scikit-learn's ``_parameter_constraints`` does.

An estimator lists, for each ``__init__`` parameter, the constraints a value may satisfy (any one of them);
:func:`validate_params` reads the table when the estimator is fitted, so ``set_params`` and ``clone`` go
through the same checks as the constructor, and an error names the parameter, the value and what it takes.

Constraints: ``None``; a type (``bool``, ``dict``, a class such as ``Encoder``); :class:`Interval`;
:class:`Options` (a fixed set of values); or :class:`Check` (a predicate with a description).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fewshot.errors import InputError


@dataclass(frozen=True)
class Interval:
    """A finite real or integral number in a range; ``None`` bounds are open-ended (infinity is no setting:
    a save could not store it)."""

    kind: type  # numbers.Integral or numbers.Real
    left: float | None = None
    right: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def __call__(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.kind):
            return False
        if v != v or v in (math.inf, -math.inf):  # NaN or infinity
            return False
        lo_ok = self.left is None or (v >= self.left if self.closed in ("both", "left") else v > self.left)
        hi_ok = self.right is None or (v <= self.right if self.closed in ("both", "right") else v < self.right)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        what = "an integer" if self.kind is numbers.Integral else "a finite number"
        lo = "(" if self.closed in ("neither", "right") else "["
        hi = ")" if self.closed in ("neither", "left") else "]"
        left = "-inf" if self.left is None else f"{self.left:g}"
        right = "inf" if self.right is None else f"{self.right:g}"
        return f"{what} in {lo}{left}, {right}{hi}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (compared with ``==``, booleans only with booleans)."""

    values: tuple

    def __call__(self, v: Any) -> bool:
        return any(type(v) is type(o) and v == o for o in self.values if isinstance(o, bool)) or any(
            not isinstance(v, bool) and not isinstance(o, bool) and _eq(v, o) for o in self.values
        )

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def _eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a plain ==
        return False


@dataclass(frozen=True)
class Check:
    """Any value the predicate accepts; ``description`` says what that is."""

    predicate: Callable[[Any], bool]
    description: str

    def __call__(self, v: Any) -> bool:
        try:
            return bool(self.predicate(v))
        except Exception:
            return False

    def __str__(self) -> str:
        return self.description


def _satisfies(value: Any, constraint: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        if constraint is bool:
            return isinstance(value, bool)
        return isinstance(value, constraint) and not (constraint in (int, float) and isinstance(value, bool))
    return constraint(value)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return {bool: "a boolean", dict: "a dict", str: "a string"}.get(constraint, f"a {constraint.__name__}")
    return str(constraint)


def validate_params(estimator: Any) -> None:
    """Check every parameter of ``estimator`` against its class's ``_parameter_constraints``.

    Raises
    ------
    InputError
        For the first parameter whose value meets none of its constraints, naming what it accepts.
    """
    table: dict[str, list[Any]] = getattr(type(estimator), "_parameter_constraints", {})
    params = estimator.get_params(deep=False)
    for name, constraints in table.items():
        if name not in params:
            continue
        value = params[name]
        if any(_satisfies(value, c) for c in constraints):
            continue
        accepted = "; or ".join(_describe(c) for c in constraints)
        raise InputError(f"{type(estimator).__name__}: {name}={value!r} is not valid; it takes {accepted}")


POSITIVE = Interval(numbers.Real, 0, None, closed="neither")
NON_NEGATIVE = Interval(numbers.Real, 0, None, closed="left")
POSITIVE_INT = Interval(numbers.Integral, 1, None)
NON_NEGATIVE_INT = Interval(numbers.Integral, 0, None)
SEED = Interval(numbers.Integral, 0, None)
