"""The metadata half of the store: one SQLite table ``items(id, item, label, metadata)`` keyed by the same
ids as the vectors, and the JSON kinds each field holds (which the ``where`` compiler checks against).

The connection is in memory and shared by threads under a mutex; saving serialises the whole database to
bytes, loading deserialises it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import numpy as np

from fewshot._validate import check_unicode, int64
from fewshot.errors import CorruptFileError, InputError
from fewshot.index.filters import compile_where, json_kind, sql_kind, sql_types

Record = tuple[int, "str | None", "str | None", str]  # id, item text, label as JSON, metadata as JSON


def _new_connection() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False)


def _create_schema(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, item TEXT, label TEXT, metadata TEXT NOT NULL)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY)")
    db.execute("CREATE INDEX IF NOT EXISTS items_label ON items(label)")


BUILT_IN_FIELDS = ("id", "label")  # where-filter keys that mean the item's own id and label


MAX_METADATA_DEPTH = 32  # lists and dicts nested in one item's metadata, at most


def encode_metadata(meta: Any, i: int) -> str:
    """One item's metadata as JSON text: a dict with string keys and finite values, or None (empty).

    What could be stored but never filtered on or returned is refused here: an integer outside 64 bits, values
    nested more than :data:`MAX_METADATA_DEPTH` deep. (A field name with a double quote is stored and returned
    with its item, though a filter cannot name it.)"""
    if meta is None:
        return "{}"
    if not isinstance(meta, dict):
        raise InputError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
    for key in meta:
        if not isinstance(key, str) or not key:
            raise InputError(f"metadata[{i}] has the key {key!r}; keys must be non-empty strings")
        if key in BUILT_IN_FIELDS:
            raise InputError(
                f"metadata[{i}] has the key {key!r}, a field every item has (where={{{key!r}: ...}} filters on "
                f"the item's own {key}); give the metadata field another name, e.g. 'source_{key}'"
            )
    _check_values(meta, i)
    try:
        check_unicode(json.dumps(meta, ensure_ascii=False, default=_json_default), f"metadata[{i}]")
        return json.dumps(meta, sort_keys=True, allow_nan=False, default=_json_default)
    except InputError:  # a lone surrogate, said as such (InputError is a ValueError too)
        raise
    except ValueError as exc:
        raise InputError(f"metadata[{i}] holds NaN or infinity, which cannot be stored or matched: {exc}") from exc
    except TypeError as exc:
        raise InputError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc


def _check_values(meta: dict, i: int) -> None:
    """Refuse nesting deeper than MAX_METADATA_DEPTH and integers outside 64 bits (walked without recursion,
    so no depth breaks the check itself)."""
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise InputError(f"metadata[{i}] is nested more than {MAX_METADATA_DEPTH} levels deep")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and not int64(int(value)):
            raise InputError(f"metadata[{i}] holds {value}, outside the 64-bit integers an index can store and filter")


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} {v!r}")


class MetadataTable:
    """Items' text, label and metadata by id, with the JSON kinds of every metadata field and of the labels."""

    def __init__(self, db: sqlite3.Connection | None = None) -> None:
        self._db = db or _new_connection()
        self._mutex = threading.Lock()
        _create_schema(self._db)
        self.field_kinds: dict[str, set[str]] = {}
        self.member_kinds: dict[str, set[str]] = {}  # field -> the kinds of the values its lists hold
        self.label_kinds: set[str] = set()
        if db is not None:
            self._recount_kinds()

    def _recount_kinds(self) -> None:
        fields: dict[str, set[str]] = {}
        q = "SELECT DISTINCT j.key, j.type FROM items, json_each(items.metadata) AS j"
        for key, typ in self._db.execute(q):
            fields.setdefault(key, set()).add(sql_kind(typ))
        labels = {sql_kind(t) for (t,) in self._db.execute("SELECT DISTINCT json_type(label) FROM items")}
        self.field_kinds, self.label_kinds = fields, labels
        members: dict[str, set[str]] = {key: set() for key, kinds in fields.items() if "array" in kinds}
        q = (
            "SELECT DISTINCT j.key, m.type FROM items, json_each(items.metadata) AS j, json_each(j.value) AS m "
            "WHERE j.type = 'array'"
        )
        for key, typ in self._db.execute(q):
            members.setdefault(key, set()).add(sql_kind(typ))
        self.member_kinds = members

    # -- reading ------------------------------------------------------------------------------------
    def count(self) -> int:
        with self._mutex:
            return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def distinct_labels(self) -> int:
        with self._mutex:
            return self._db.execute("SELECT COUNT(DISTINCT label) FROM items WHERE label IS NOT NULL").fetchone()[0]

    def existing(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        with self._mutex:
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                q = f"SELECT id FROM items WHERE id IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in self._db.execute(q, chunk))
        return found

    def select_ids(self, where: dict[str, Any], strict: bool = True) -> np.ndarray:
        """Sorted ids of the items matching ``where`` (see :mod:`fewshot.index.filters`; ``strict=False``
        matches nothing, rather than refusing, by a field or a kind of value no item holds)."""
        with self._mutex:
            condition, args = compile_where(where, self.field_kinds, self.label_kinds, self.member_kinds, strict)
            rows = self._db.execute(f"SELECT id FROM items WHERE {condition} ORDER BY id", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def rows(self, ids: list[int]) -> dict[int, tuple[str | None, Any, dict[str, Any]]]:
        """id -> (item, label, metadata) for the ids present."""
        out: dict[int, tuple[str | None, Any, dict[str, Any]]] = {}
        with self._mutex:
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                q = f"SELECT id, item, label, metadata FROM items WHERE id IN ({','.join('?' * len(chunk))})"
                for i, item, label, meta in self._db.execute(q, chunk):
                    out[i] = (item, None if label is None else json.loads(label), json.loads(meta))
        return out

    # -- writing ------------------------------------------------------------------------------------
    def insert(self, records: list[Record], metadata: list[Any], labels: list[Any]) -> None:
        """Insert prepared records; ``metadata`` and ``labels`` are the Python values (for the kinds)."""
        with self._mutex, self._db:
            self._db.executemany("INSERT INTO items (id, item, label, metadata) VALUES (?, ?, ?, ?)", records)
        for meta in metadata:
            for key, value in (meta or {}).items():
                self.field_kinds.setdefault(key, set()).add(json_kind(value))
                if isinstance(value, (list, tuple)):
                    self.member_kinds.setdefault(key, set()).update(json_kind(v) for v in value)
        self.label_kinds.update(json_kind(v) for v in labels)

    def delete(self, ids: list[int]) -> None:
        """Delete the items ``ids``. A metadata field (or a kind of value of a field, or of the labels) that no
        item holds any more is forgotten, as a table read back from its bytes would not know it either."""
        with self._mutex, self._db:
            fields: dict[str, set[str]] = {}  # the fields (and their kinds) the deleted items held
            members: dict[str, set[str]] = {}  # and the kinds their lists held
            labels: set[str] = set()
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                q = (
                    "SELECT DISTINCT j.key, j.type FROM items, json_each(items.metadata) AS j "
                    f"WHERE items.id IN ({marks})"
                )
                for key, typ in self._db.execute(q, chunk):
                    fields.setdefault(key, set()).add(sql_kind(typ))
                q = (
                    "SELECT DISTINCT j.key, m.type FROM items, json_each(items.metadata) AS j, json_each(j.value) AS m "
                    f"WHERE items.id IN ({marks}) AND j.type = 'array'"
                )
                for key, typ in self._db.execute(q, chunk):
                    members.setdefault(key, set()).add(sql_kind(typ))
                q = f"SELECT DISTINCT json_type(label) FROM items WHERE id IN ({marks})"
                labels.update(sql_kind(t) for (t,) in self._db.execute(q, chunk))
            self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
            self._forget_unheld(fields, self.field_kinds, "", "j.type")
            for key in fields:
                if not self.field_kinds.get(key, True):
                    del self.field_kinds[key]
            # what the remaining lists hold
            self._forget_unheld(members, self.member_kinds, ", json_each(j.value) AS m", "m.type", "j.type = 'array'")
            for key in list(self.member_kinds):
                if "array" not in self.field_kinds.get(key, ()):
                    del self.member_kinds[key]
            for kind in labels:
                types = [] if kind == "null" else sql_types(kind)  # a missing label is SQL NULL
                held = f"json_type(label) IN ({','.join('?' * len(types))})" if types else "label IS NULL"
                if self._db.execute(f"SELECT 1 FROM items WHERE {held} LIMIT 1", types).fetchone() is None:
                    self.label_kinds.discard(kind)

    def _forget_unheld(
        self, held: dict[str, set[str]], kinds: dict[str, set[str]], join: str, column: str, also: str = "1"
    ) -> None:
        """Drop from ``kinds`` each field's kind in ``held`` that no item holds any more (``join``: more of the
        metadata to walk, ``column`` its type, ``also`` a further condition; the caller holds the mutex)."""
        for key, found in held.items():
            for kind in found:  # json_each decodes the keys, whatever characters they hold
                types = sql_types(kind)
                q = (
                    f"SELECT 1 FROM items, json_each(items.metadata) AS j{join} WHERE j.key = ? AND {also} "
                    f"AND {column} IN ({','.join('?' * len(types))}) LIMIT 1"
                )
                if self._db.execute(q, [key, *types]).fetchone() is None:
                    kinds.get(key, set()).discard(kind)

    # -- bytes --------------------------------------------------------------------------------------
    def to_bytes(self, removed: set[int]) -> bytes:
        with self._mutex:
            with self._db:
                self._db.execute("DELETE FROM removed")
                self._db.executemany("INSERT INTO removed (id) VALUES (?)", [(i,) for i in sorted(removed)])
            return self._db.serialize()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> tuple[MetadataTable, set[int]]:
        db = _new_connection()
        try:
            db.deserialize(data)
            removed = {r[0] for r in db.execute("SELECT id FROM removed")}
            table = cls(db)
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(f"{where}: the metadata table cannot be read ({exc})") from exc
        return table, removed

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.to_bytes(set())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        db = _new_connection()
        db.deserialize(state["data"])
        self.__init__(db)
