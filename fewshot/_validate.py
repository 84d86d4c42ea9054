"""Checks at the public boundary: turn user input into the shapes the internals trust."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fewshot.errors import DimensionError, InputError, warn_user


def check_sequence(X: Any, what: str, items: str) -> None:
    """Refuse containers whose iteration is not a sequence of ``items``: a table (a DataFrame iterates over
    its column names), a mapping (over its keys) and a set (in no fixed order)."""
    if getattr(X, "ndim", 1) == 2 and hasattr(X, "columns"):
        columns = [str(c) for c in list(X.columns)[:5]]
        raise InputError(
            f"{what} is a table (columns {columns}); pass one column of {items}, e.g. df[{columns[0]!r}]"
            if columns
            else f"{what} is a table with no columns; pass a list of {items}"
        )
    if isinstance(X, Mapping):
        raise InputError(f"{what} is a {type(X).__name__}; pass a list of {items} (a mapping iterates over its keys)")
    if isinstance(X, (set, frozenset)):
        raise InputError(f"{what} is a set, which has no order; pass a list of {items}")


def check_unicode(s: str, what: str) -> None:
    """Refuse a string holding a lone surrogate: it is not Unicode text, so no tokenizer, file or database
    takes it (it is often half of an emoji whose JSON escape was cut in two)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} holds a lone surrogate ({s[exc.start]!r} at character {exc.start}), which is not valid Unicode "
            "text; repair its source (e.g. decode with errors='replace') or drop it"
        ) from None


def has_visible(text: str) -> bool:
    """Whether ``text`` has a character that shows: not whitespace, a control, a format character (such as a
    zero-width space) or an unassigned code point."""
    return any(c.isprintable() and not c.isspace() for c in text)


def as_text_list(X: Any, *, what: str = "X") -> list[str]:
    """Return ``X`` (a string sequence or a pandas Series) as a list of non-empty strings.

    Raises
    ------
    InputError
        If ``X`` is None, a bare string, empty, or holds anything but non-blank strings.
    """
    if X is None:
        raise InputError(f"{what} is None; expected a list of strings")
    if isinstance(X, (str, bytes)):
        raise InputError(f"{what} is a single string; wrap it in a list: [{X!r}]")
    check_sequence(X, what, "strings")
    if hasattr(X, "tolist") and not isinstance(X, np.ndarray):  # pandas Series / Index
        X = X.tolist()
    if isinstance(X, np.ndarray):
        if X.ndim != 1:
            raise InputError(f"{what} must be one-dimensional, got shape {X.shape}")
        X = X.tolist()
    if not isinstance(X, Iterable):
        raise InputError(f"{what} must be a list of strings, got {type(X).__name__}")
    texts = list(X)
    if not texts:
        raise InputError(f"{what} is empty; give at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is {type(t).__name__} ({t!r}), not a string")
        if not t.strip():
            raise InputError(f"{what}[{i}] is {'an empty string' if not t else 'empty but for whitespace'} ({t!r})")
        if not has_visible(t):  # e.g. zero-width spaces only
            raise InputError(f"{what}[{i}] has no visible character ({t!r})")
        check_unicode(t, f"{what}[{i}]")
    return texts


def as_embeddings(E: Any, *, dim: int | None = None, what: str = "embeddings", allow_1d: bool = False) -> np.ndarray:
    """Return ``E`` as a C-contiguous float32 array of shape (n, dim), checking shape and values.

    A 1-d array is one row when ``allow_1d`` is set (a single query vector), and an error otherwise.
    """
    if E is None:
        raise InputError(f"{what} is None; expected an array of shape (n, dim)")
    if hasattr(E, "toarray") and not isinstance(E, np.ndarray):
        raise InputError(f"{what} is a sparse matrix; pass a dense array (call .toarray() on it)")
    arr = np.asarray(E)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{what}: complex data not supported")
    if arr.ndim == 1:
        if not allow_1d:
            raise InputError(f"{what} must have shape (n, dim), got a 1-d array of length {len(arr)}")
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must have shape (n, dim), got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what} is empty; give at least one row")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"{what}: dimension {arr.shape[1]}, but this model/index uses {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return arr


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def label_key(name: str) -> str:
    """What two labels share when they differ only in case or surrounding spaces ("card" and "Card ")."""
    return name.strip().casefold()


def _warn_near_duplicate_labels(names: set[str]) -> None:
    """Warn when distinct labels differ only in case or surrounding spaces ("card" and "card "): each is a
    class of its own, which is rarely what was meant."""
    seen: dict[str, str] = {}
    for name in sorted(names):
        key = label_key(name)
        if key in seen:
            warn_user(
                f"the labels {seen[key]!r} and {name!r}, which differ only in case or spaces, are each a class of "
                "their own, though an uncased encoder reads them alike"
            )
            return
        seen[key] = name


def as_labels(y: Any, n: int, *, what: str = "y") -> np.ndarray:
    """Return labels as a 1-d array of length ``n``.

    Labels may be strings, integers, integral floats or booleans, all of one type. Refused, each with a
    message naming the first offender: None or NaN, an empty or blank string, a mix of types (``1`` and
    ``"one"`` would otherwise both become strings), a continuous target (scikit-learn's "Unknown label
    type"), and a 2-d ``y`` other than a single column.
    """
    from sklearn.utils.multiclass import type_of_target

    if y is None:
        raise InputError(f"{what} is None; expected one label per example")
    if isinstance(y, (str, bytes)):
        raise InputError(f"{what} is a single string; give one label per example")
    if hasattr(y, "to_numpy") and not isinstance(y, np.ndarray):  # pandas
        y = y.to_numpy()
    elif hasattr(y, "__array__") and not isinstance(y, (np.ndarray, list, tuple)):  # other array-likes
        y = np.asarray(y)
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] == 1:
        from sklearn.utils.validation import column_or_1d

        y = column_or_1d(y, warn=True)  # scikit-learn's DataConversionWarning, flattened
    if isinstance(y, np.ndarray) and y.ndim != 1:
        raise InputError(f"{what} must be one label per example (shape (n,)), got shape {y.shape}")
    labels = [_plain(v) for v in (y.tolist() if isinstance(y, np.ndarray) else list(y))]
    if len(labels) != n:
        raise InputError(f"{what} has {len(labels)} labels for {n} examples")
    for i, lab in enumerate(labels):
        if lab is None or (isinstance(lab, float) and np.isnan(lab)) or type(lab).__name__ in ("NAType", "NaTType"):
            raise InputError(f"{what}[{i}] is missing (None/NaN/NA); every example needs a label")
        if isinstance(lab, float) and np.isinf(lab):
            raise InputError(f"{what}[{i}] is infinite; a label is a class name or number")
        if isinstance(lab, str) and not lab.strip():
            raise InputError(f"{what}[{i}] is an empty label; every example needs a non-blank label")
        if isinstance(lab, str):
            check_unicode(lab, f"{what}[{i}]")
        if isinstance(lab, (list, tuple, set, dict, np.ndarray)):
            raise InputError(
                f"Unknown label type: {what}[{i}] is a {type(lab).__name__}; a few-shot classifier takes one "
                "label an example (for several, tag with ZeroShotClassifier.tag)"
            )
    kinds = {type(v) for v in labels}
    if len(kinds) > 1:
        if kinds <= {int, float}:  # 1 and 2.0 are one numeric type
            labels = [float(v) for v in labels]
        else:
            names = sorted(k.__name__ for k in kinds)
            raise InputError(f"{what} mixes label types {names}; use one type for all labels")
    arr = np.empty(len(labels), dtype=object)
    arr[:] = labels
    kind = next(iter(kinds)) if len(kinds) == 1 else float
    if kind is str:
        _warn_near_duplicate_labels(set(labels))
        arr = arr.astype(str)
    elif kind is bool:
        arr = arr.astype(bool)
    elif kind in (int, float):
        arr = np.asarray(labels)
        target = type_of_target(arr)
        if target == "continuous":
            raise InputError(
                f"Unknown label type: continuous. {what} holds non-integral numbers (e.g. {arr[0]!r}); a "
                "classifier needs class labels, not a continuous target"
            )
    else:
        raise InputError(f"Unknown label type: {kind.__name__}; labels must be strings, integers or booleans")
    return arr


def warn_conflicting_labels(items: list[Any], y: np.ndarray, what: str = "X") -> None:
    """Warn when the same text is given with two different labels (contradictory supervision)."""
    seen: dict[str, Any] = {}
    conflicts = []
    for text, label in zip(items, y.tolist()):
        if not isinstance(text, str):
            return
        if text in seen and seen[text] != label:
            conflicts.append((text, seen[text], label))
        seen.setdefault(text, label)
    if conflicts:
        text, a, b = conflicts[0]
        short = text if len(text) <= 60 else text[:57] + "..."
        warn_user(
            f"{len(conflicts)} example(s) of {what} appear with two different labels, e.g. {short!r} as "
            f"{a!r} and {b!r}; each copy counts as an example of its label"
        )


def finite_number(v: Any) -> bool:
    """Whether ``v`` is a finite real number: a Python or numpy int or float, not a bool."""
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, (bool, np.bool_))
        and bool(np.isfinite(v))
    )


def int64(v: int) -> bool:
    """Whether the integer ``v`` fits in 64 bits (what SQLite and FAISS ids hold)."""
    return -(2**63) <= v < 2**63


def json_label(v: Any) -> Any:
    """A label as a JSON scalar (numpy scalars become Python ones); anything else is refused."""
    v = _plain(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if isinstance(v, float):
        if not np.isfinite(v):
            raise InputError(f"label {v!r} cannot be saved: labels must be finite")
        return v
    raise InputError(
        f"label {v!r} of type {type(v).__name__} cannot be saved; saved models keep labels as JSON "
        "strings, numbers or booleans"
    )
