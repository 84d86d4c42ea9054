"""Checks at the public boundary: turn user input into the shapes the internals trust."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fewshot.errors import DimensionError, InputError


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
            raise InputError(f"{what}[{i}] is an empty string")
    return texts


def as_embeddings(E: Any, *, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """Return ``E`` as a C-contiguous float32 array of shape (n, dim), checking shape and values."""
    if E is None:
        raise InputError(f"{what} is None; expected an array of shape (n, dim)")
    arr = np.asarray(E)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must have shape (n, dim), got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{what} is empty; give at least one row")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionError(f"{what} have dimension {arr.shape[1]}, but this model/index uses {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return arr


def as_labels(y: Any, n: int, *, what: str = "y") -> np.ndarray:
    """Return labels as a 1-d array of length ``n``; labels may be any hashable scalars except None."""
    if y is None:
        raise InputError(f"{what} is None; expected one label per example")
    if isinstance(y, (str, bytes)):
        raise InputError(f"{what} is a single string; give one label per example")
    if hasattr(y, "tolist") and not isinstance(y, np.ndarray):
        y = y.tolist()
    labels = list(y)
    if len(labels) != n:
        raise InputError(f"{what} has {len(labels)} labels for {n} examples")
    for i, lab in enumerate(labels):
        if lab is None or (isinstance(lab, float) and np.isnan(lab)):
            raise InputError(f"{what}[{i}] is missing (None/NaN); every example needs a label")
    arr = np.asarray(labels)
    if arr.dtype == object:
        # mixed types (e.g. 1 and "1") would collide after sorting/encoding: refuse clearly
        kinds = {type(v).__name__ for v in labels}
        if len(kinds) > 1:
            raise InputError(f"{what} mixes label types {sorted(kinds)}; use one type for all labels")
    return arr


def l2_normalize(E: np.ndarray) -> np.ndarray:
    """Row-normalise ``E`` (n, d) to unit L2 norm; zero rows stay zero. Returns a new float32 array."""
    E = np.asarray(E, dtype=np.float32)
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    return np.ascontiguousarray(E / np.maximum(norms, 1e-12), dtype=np.float32)


def json_label(v: Any) -> Any:
    """A label as a JSON scalar (numpy scalars become Python ones); anything else is refused."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise InputError(
        f"label {v!r} of type {type(v).__name__} cannot be saved; saved models keep labels as JSON "
        "strings, numbers or booleans"
    )
