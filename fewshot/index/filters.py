"""``where`` filters: from a dict to a typed SQL condition on the metadata table.

Semantics
---------
``where`` maps a field to a value or a list of values (any of them matches); several fields must all
match. A field is ``"id"``, ``"label"`` or a top-level metadata key (any non-empty string without ``"``).

- Values are JSON scalars and match by type and value: a string matches only that string, a number
  matches any equal number (``1`` matches ``1.0``), a boolean matches only that boolean (``True`` never
  matches ``1``).
- ``None`` matches items whose field is null or missing (and items without a label, for ``"label"``).
- A field that holds lists (``{"tags": ["sale", "new"]}``) matches a value its list holds: ``where={"tags":
  "sale"}`` finds that item, ``where={"tags": ["sale", "old"]}`` any item holding either.
- A filter that could never match is refused with :class:`~fewshot.errors.InputError` rather than
  answered with nothing: a field no item has, a value of a type the field never holds (``label=3`` where
  labels are strings; for a field of lists, a type they never hold), an empty list, NaN or infinity, or a
  list or dict as a value.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from fewshot._validate import check_unicode, int64
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


def sql_types(kind: str) -> list[str]:
    """SQLite's json_type names of a kind (number: integer and real)."""
    return [t for t, k in _KIND_OF_SQL.items() if k == kind]


def _scalar(key: str, v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int) and not isinstance(v, bool) and not int64(v):
        raise InputError(f"where[{key!r}]: {v} is outside the 64-bit integers a filter can compare")
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"where[{key!r}]: {v!r} cannot match anything (NaN and infinity are never stored)")
    if v is not None and not isinstance(v, (str, int, float, bool)):
        raise InputError(f"where[{key!r}]: cannot filter on {v!r}; use strings, numbers, booleans or None")
    if isinstance(v, str):
        check_unicode(v, f"where[{key!r}]")
    return v


def _paths(key: str) -> list[str]:
    """The JSON paths of a top-level key (passed to SQLite as parameters, never spliced into the SQL).

    Metadata is stored as ASCII JSON, so a key with other characters (``café``, a backslash, a tab) is written
    escaped; SQLite 3.40 matches a path against the key as written, a later one may decode it first, so such
    a key is looked up both ways."""
    if not isinstance(key, str) or not key or '"' in key:
        raise InputError(f"where key {key!r} must be a non-empty field name without double quotes")
    check_unicode(key, f"where key {key!r}")
    written = "$." + json.dumps(key)
    plain = '$."' + key + '"'
    return [written] if written == plain else [written, plain]


def _at(fn: str, column: str, paths: list[str]) -> str:
    """``fn(column, path)`` of the first path that finds something (one ``?`` per path)."""
    calls = [f"{fn}({column}, ?)" for _ in paths]
    return calls[0] if len(calls) == 1 else "COALESCE(" + ", ".join(calls) + ")"


def _member(kind: str) -> str:
    """Whether the metadata value at a path (``?``) is, or is a list holding, a scalar of ``kind`` (``?``)."""
    test = {
        "boolean": "e.type = ?",
        "number": "e.type IN ('integer', 'real') AND e.value = ?",
        "string": "e.type = 'text' AND e.value = ?",
    }[kind]
    return f"EXISTS (SELECT 1 FROM json_each(metadata, ?) AS e WHERE {test})"


def _lists_of(members: set[str]) -> list[str]:
    """How the error of a mistyped filter names a field's lists: by what they hold."""
    held = sorted(members - {"null", "array", "object"})
    return ["lists of " + " and ".join(held) if held else "lists of no value a filter can match"]


def compile_where(
    where: Any,
    field_kinds: dict[str, set[str]],
    label_kinds: set[str],
    member_kinds: dict[str, set[str]] | None = None,
    strict: bool = True,
) -> tuple[str, list[Any]]:
    """A SQL condition on ``items(id, label, metadata)`` and its arguments.

    Parameters
    ----------
    where : the user's filter (see the module docstring).
    field_kinds : metadata field -> JSON kinds it holds in the index (missing from every item: absent).
    label_kinds : the JSON kinds of the stored labels ("null" for items without one).
    member_kinds : field holding lists -> the JSON kinds of the values in its lists (None: not known, and any
        scalar may match one).
    strict : refuse a field or a value's kind that no item holds (a search); False lets it match nothing (a
        removal, which may be run again after the last item holding it is gone).
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
                column, paths, kinds, what = "label", ["$"], label_kinds, "labels"
            else:
                column, paths, kinds, what = "metadata", _paths(key), field_kinds.get(key), f"field {key!r}"
                if kinds is None and any(v is not None for v in values) and strict:
                    known = ", ".join(sorted(field_kinds)[:10]) or "none"
                    raise InputError(f"no item has the metadata field {key!r}; fields: {known}")
            kinds = kinds or set()
            lists = column == "metadata" and "array" in kinds  # a value matches the lists that hold it
            members: set[str] = set()  # the kinds the field's lists hold (unknown: any scalar)
            if lists:
                members = {"string", "number", "boolean"} if member_kinds is None else member_kinds.get(key, set())
            matchable = kinds | members
            for v in values:
                kind = json_kind(v)
                if kind != "null" and kind not in matchable and not strict:
                    ors.append("0")  # no item holds a value of this kind here: nothing to match
                    continue
                if kind != "null" and kind not in matchable:
                    hint = (
                        f"; did you mean {str(v)!r}?" if "string" in matchable and kind in ("number", "boolean") else ""
                    )
                    held = ", ".join(sorted(kinds - {"null", "array"}) + _lists_of(members) * lists) or "no values"
                    verb = "hold" if what == "labels" else "holds"
                    raise InputError(f"where[{key!r}] = {v!r} is a {kind}, but the {what} {verb} {held}{hint}")
                if kind != "null" and lists:
                    ors.append(" OR ".join([_member(kind)] * len(paths)))
                    for path in paths:
                        args.extend([path, ("true" if v else "false") if kind == "boolean" else v])
                elif kind == "null":
                    if column == "label":
                        ors.append("label IS NULL")
                    else:
                        typ = _at("json_type", "metadata", paths)
                        ors.append(f"({typ} IS NULL OR {typ} = 'null')")
                        args.extend(paths + paths)
                elif kind == "boolean":
                    ors.append(f"{_at('json_type', column, paths)} = ?")
                    args.extend([*paths, "true" if v else "false"])
                elif kind == "number":
                    typ, value = _at("json_type", column, paths), _at("json_extract", column, paths)
                    ors.append(f"({typ} IN ('integer', 'real') AND {value} = ?)")
                    args.extend([*paths, *paths, v])
                else:
                    typ, value = _at("json_type", column, paths), _at("json_extract", column, paths)
                    ors.append(f"({typ} = 'text' AND {value} = ?)")
                    args.extend([*paths, *paths, v])
        clauses.append("(" + " OR ".join(ors) + ")")
    return " AND ".join(clauses), args
