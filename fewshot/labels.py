"""Labels to class codes and back: the one place where user labels meet the integer columns of the maths.

Labels may be any hashable scalars of one type (strings, integers, booleans); ``classes`` is the ordered
array that gives each label its code, as scikit-learn's ``LabelEncoder`` does, except that a classifier
that learns a new class appends it (existing probability columns keep their place) instead of resorting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.errors import InputError


def merge_classes(classes: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """``classes`` followed by the labels of ``y`` not yet in it (sorted); with no ``classes``, ``y``'s
    labels sorted."""
    if classes is None:
        return np.unique(y)
    known = set(classes.tolist())
    new = [c for c in np.unique(y).tolist() if c not in known]
    if not new:
        return classes
    return np.asarray(classes.tolist() + new)


def encode_labels(y: Any, classes: np.ndarray, *, what: str = "y") -> np.ndarray:
    """The code (index into ``classes``) of every label of ``y``, array of shape (n,) of int64.

    Raises
    ------
    InputError
        Naming the labels of ``y`` that are not in ``classes``.
    """
    index = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    values = np.asarray(y).tolist() if not isinstance(y, list) else y
    try:
        return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    except (KeyError, TypeError):
        missing = [v for v in values if _lookup(index, v) is None]
        unknown = sorted({str(v) for v in missing})
        known = ", ".join(map(str, list(index)[:10]))
        hint = ""
        if any(str(v) in {str(c) for c in index} for v in missing):  # "1" against 1: the same text, another type
            have = {type(c).__name__ for c in index}
            hint = f" (labels of type {', '.join(sorted({type(v).__name__ for v in missing}))}; the model's are "
            hint += f"{', '.join(sorted(have))})"
        raise InputError(
            f"{what} holds labels the model never saw: {', '.join(unknown[:5])}; it knows {known}{hint}"
        ) from None


def _lookup(index: dict, v: Any) -> int | None:
    try:
        return index.get(v)
    except TypeError:  # unhashable
        return None


def ordered_classes(y: np.ndarray, classes: Any = None) -> np.ndarray:
    """The class order for a fit: sorted labels of ``y``, or ``classes`` when given, which must list each
    label of ``y`` exactly once."""
    if classes is None:
        return np.unique(y)
    out = np.asarray(list(classes))
    listed = out.tolist()
    if len(set(listed)) != len(listed) or set(listed) != set(np.asarray(y).tolist()):
        raise InputError("classes must list each label of y exactly once")
    return out


def check_label_type(y: np.ndarray, classes: np.ndarray) -> None:
    """Refuse labels of another type than the classes a model knows (``1`` added to ``"a"``, ``"b"``)."""

    def kind(v: Any) -> str:
        v = v.item() if isinstance(v, np.generic) else v
        names = {int: "numbers", float: "numbers", str: "texts", bool: "booleans"}  # 1 and 1.0: one type
        return names.get(type(v), f"{type(v).__name__} values")

    new, old = kind(np.asarray(y)[0]), kind(np.asarray(classes)[0])
    if new != old:
        raise InputError(f"the new labels are {new} but the model's classes are {old}")
