"""``where`` filters: from a dict to a typed SQL condition on the metadata table.

Semantics
---------
``where`` maps a field to a value or a list of values (any of them matches); several fields must all
match. A field is ``"id"``, ``"label"`` or a top-level metadata key (any non-empty string without ``"``).

- Values are JSON scalars and match by type and value: a string matches only that string, a number
  matches any equal number (``1`` matches ``1.0``), a boolean matches only that boolean (``True`` never
  matches ``1``).
- ``None`` matches items whose field is null or missing (and items without a label, for ``"label"``).
- A filter that could never match is refused with :class:`~fewshot.errors.InputError` rather than
  answered with nothing: a field no item has, a value of a type the field never holds (``label=3`` where
  labels are strings), an empty list, NaN or infinity, or a list or dict as a value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fewshot.errors import InputError

# JSON types as SQLite's json_type names them, folded into the kinds a filter value can have
_KIND_OF_SQL = {"text": "string", "integer": "number", "real": "number", "true": "boolean", "false": "boolean",
                "null": "null", "array": "array", "object": "object"}  # fmt: skip


def json_kind(v: Any) -> str:
    """The JSON kind of a Python value: string, number, boolean, null, array or object."""
    if v is None:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "boolean"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def sql_kind(json_type: str | None) -> str:
    return _KIND_OF_SQL.get(json_type or "null", "null")


def _scalar(key: str, v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
        raise InputError(f"where[{key!r}]: {v} is outside the 64-bit integers a filter can compare")
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"where[{key!r}]: {v!r} cannot match anything (NaN and infinity are never stored)")
    if v is not None and not isinstance(v, (str, int, float, bool)):
        raise InputError(f"where[{key!r}]: cannot filter on {v!r}; use strings, numbers, booleans or None")
    return v


def _path(key: str) -> str:
    """The JSON path of a top-level key (passed to SQLite as a parameter, never spliced into the SQL)."""
    if not isinstance(key, str) or not key or '"' in key:
        raise InputError(f"where key {key!r} must be a non-empty field name without double quotes")
    return '$."' + key + '"'


def compile_where(where: Any, field_kinds: dict[str, set[str]], label_kinds: set[str]) -> tuple[str, list[Any]]:
    """A SQL condition on ``items(id, label, metadata)`` and its arguments.

    Parameters
    ----------
    where : the user's filter (see the module docstring).
    field_kinds : metadata field -> JSON kinds it holds in the index (missing from every item: absent).
    label_kinds : the JSON kinds of the stored labels ("null" for items without one).
    """
    if not isinstance(where, dict):
        raise InputError(f"where must be a dict of field -> value(s), got {type(where).__name__}")
    if not where:
        raise InputError("where is empty; leave it out to search everything")
    clauses: list[str] = []
    args: list[Any] = []
    for key, value in where.items():
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        if not values:
            raise InputError(f"where[{key!r}] is an empty list; it would match nothing")
        values = [_scalar(key, v) for v in values]
        ors: list[str] = []
        if key == "id":
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise InputError(f"where['id'] takes integer ids, got {v!r}")
            ors.append(f"id IN ({','.join('?' * len(values))})")
            args.extend(values)
        else:
            if key == "label":
                column, path, kinds, what = "label", "$", label_kinds, "labels"
            else:
                column, path, kinds, what = "metadata", _path(key), field_kinds.get(key), f"field {key!r}"
                if kinds is None and any(v is not None for v in values):
                    known = ", ".join(sorted(field_kinds)[:10]) or "none"
                    raise InputError(f"no item has the metadata field {key!r}; fields: {known}")
            kinds = kinds or set()
            for v in values:
                kind = json_kind(v)
                if kind != "null" and kind not in kinds:
                    hint = f"; did you mean {str(v)!r}?" if "string" in kinds and kind in ("number", "boolean") else ""
                    held = ", ".join(sorted(kinds - {"null"})) or "no values"
                    raise InputError(f"where[{key!r}] = {v!r} is a {kind}, but the {what} hold {held}{hint}")
                if kind == "null":
                    if column == "label":
                        ors.append("label IS NULL")
                    else:
                        ors.append("(json_type(metadata, ?) IS NULL OR json_type(metadata, ?) = 'null')")
                        args.extend([path, path])
                elif kind == "boolean":
                    ors.append(f"json_type({column}, ?) = ?")
                    args.extend([path, "true" if v else "false"])
                elif kind == "number":
                    ors.append(f"(json_type({column}, ?) IN ('integer', 'real') AND json_extract({column}, ?) = ?)")
                    args.extend([path, path, v])
                else:
                    ors.append(f"(json_type({column}, ?) = 'text' AND json_extract({column}, ?) = ?)")
                    args.extend([path, path, v])
        clauses.append("(" + " OR ".join(ors) + ")")
    return " AND ".join(clauses), args
