"""A persistent, searchable store of embeddings: FAISS for vectors, one SQLite table for everything else.

The FAISS index (``IndexIDMap2`` over an exact flat index or an approximate HNSW graph, inner product on
normalised vectors, i.e. cosine) and the SQLite table ``items(id, item, label, metadata)`` share the same
integer ids, so there are no parallel lists to keep in sync. A save is a folder with the FAISS file, the
SQLite file and a ``manifest.json`` (encoder identity, dim, metric, kind, count, versions), written
atomically (see :mod:`fewshot._bundle`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._bundle import read_bundle, write_bundle
from fewshot._validate import as_embeddings, json_label, l2_normalize
from fewshot.encoders import Encoder, TextEncoder, check_same_encoder, encoder_from_identity
from fewshot.errors import CorruptFileError, InputError

KINDS = ("auto", "flat", "hnsw")
# below this many candidates a filtered search is done exactly over the matching vectors
EXACT_FILTER_LIMIT = 20_000


def index_dir() -> Path:
    """Where indexes saved by name live: ``$FEWSHOT_INDEX_DIR``, or ``indexes/`` in the working folder."""
    return Path(os.environ.get("FEWSHOT_INDEX_DIR", "indexes"))


def resolve_index_path(spec: str | Path) -> Path:
    """A bare name (``"news"``) means ``indexes/news``; anything with a path separator is a path."""
    text = str(spec)
    if not text.strip():
        raise InputError("index name is empty")
    if isinstance(spec, Path) or os.sep in text or "/" in text or text.startswith("."):
        return Path(spec)
    return index_dir() / text


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    score: float
    item: str | None = None
    label: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _faiss():
    import faiss

    return faiss


class EmbeddingIndex:
    """Vectors with ids, labels and metadata; search by text or by vector, optionally filtered.

    Parameters
    ----------
    encoder : the encoder that turns added items and text queries into vectors. None means the default
        :class:`~fewshot.TextEncoder` (bundled all-MiniLM-L6-v2), unless ``dim`` is given, which makes an
        index of precomputed vectors only (``add_embeddings`` / vector queries).
    dim : dimension of an encoder-less index.
    kind : ``"flat"`` (exact), ``"hnsw"`` (approximate, fast on large collections) or ``"auto"`` (flat, then
        HNSW once the index holds more than ``auto_threshold`` vectors).
    name : the index's name; ``save()`` without a path writes to ``indexes/<name>/``.
    hnsw_m, ef_construction, ef_search : HNSW graph degree, build beam and search beam. The defaults give
        recall@10 of at least 0.95 against exact search at 1M vectors of 384 dimensions (eval/bench_core.py).
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        dim: int | None = None,
        kind: str = "auto",
        name: str = "default",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        auto_threshold: int = 50_000,
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if encoder is None and dim is None:
            encoder = TextEncoder()
        if encoder is not None and not isinstance(encoder, Encoder):
            raise InputError(f"encoder must be a fewshot Encoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self._dim = dim
        self.kind = kind
        self.name = name
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.auto_threshold = auto_threshold
        self._index: Any = None  # built on first add, when the dimension is known
        self._db = _new_db()
        self._next_id = 0
        self._removed: set[int] = set()  # ids still in an HNSW graph but deleted (HNSW cannot remove)
        self._saved_identity: dict[str, Any] | None = None  # checked lazily after load without an encoder

    # -- properties ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self.encoder.dim
        return self._dim

    @property
    def structure(self) -> str:
        """The FAISS structure in use now: ``"flat"`` or ``"hnsw"``."""
        if self.kind == "auto":
            return "hnsw" if self._index is not None and self._is_hnsw() else "flat"
        return self.kind

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def __repr__(self) -> str:
        return f"EmbeddingIndex(name={self.name!r}, kind={self.kind!r}, count={len(self)})"

    # -- adding -------------------------------------------------------------------------------------
    def add(
        self,
        items: Any,
        ids: Any = None,
        labels: Any = None,
        metadata: list[dict[str, Any]] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Encode ``items`` and store them; return their ids, array of shape (n,)."""
        encoder = self._require_encoder("add items")
        items = encoder.validate(items)
        E = encoder.encode(items, show_progress=show_progress)
        return self.add_embeddings(E, ids=ids, labels=labels, metadata=metadata, items=[_item_text(x) for x in items])

    def add_embeddings(
        self,
        embeddings: Any,
        ids: Any = None,
        labels: Any = None,
        metadata: list[dict[str, Any]] | None = None,
        items: list[str] | None = None,
    ) -> np.ndarray:
        """Store precomputed vectors of shape (n, dim); they are L2-normalised. Return their ids."""
        E = l2_normalize(as_embeddings(embeddings, dim=self.dim))
        n = len(E)
        ids_arr = self._check_new_ids(ids, n)
        rows_label = _column(labels, n, "labels")
        rows_meta = _column(metadata, n, "metadata")
        rows_item = _column(items, n, "items")
        for i, m in enumerate(rows_meta):
            if m is not None and not isinstance(m, dict):
                raise InputError(f"metadata[{i}] must be a dict, got {type(m).__name__}")
        records = []
        for i in range(n):
            try:
                meta = json.dumps(rows_meta[i] or {}, sort_keys=True)
            except TypeError as exc:
                raise InputError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc
            label = None if rows_label[i] is None else json.dumps(json_label(rows_label[i]))
            records.append((int(ids_arr[i]), rows_item[i], label, meta))
        index = self._ensure_index()
        with self._db:
            self._db.executemany("INSERT INTO items (id, item, label, metadata) VALUES (?, ?, ?, ?)", records)
        index.add_with_ids(E, ids_arr)
        self._next_id = max(self._next_id, int(ids_arr.max()) + 1)
        self._maybe_grow()
        return ids_arr

    def _check_new_ids(self, ids: Any, n: int) -> np.ndarray:
        if ids is None:
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        arr = np.asarray(ids)
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"ids must be {n} integers, got {arr.dtype} array of shape {arr.shape}")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise InputError("ids must be non-negative integers")
        if len(np.unique(arr)) != n:
            raise InputError("ids contain duplicates")
        taken = self._existing(arr.tolist()) | (self._removed & set(arr.tolist()))
        if taken:
            raise InputError(f"ids already in the index: {sorted(taken)[:5]}")
        return arr

    def _existing(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            q = f"SELECT id FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self._db.execute(q, chunk))
        return found

    # -- removing -----------------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Delete the given ids; return how many were present. Unknown ids are ignored."""
        ids_list = [int(i) for i in np.atleast_1d(np.asarray(ids, dtype=np.int64)).tolist()]
        present = sorted(self._existing(ids_list))
        if not present:
            return 0
        with self._db:
            self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in present])
        if self._is_hnsw():
            self._removed.update(present)  # HNSW graphs cannot drop nodes; searches skip these ids
        else:
            self._index.remove_ids(np.asarray(present, dtype=np.int64))
        return len(present)

    def compact(self) -> None:
        """Rebuild the HNSW graph without removed vectors (searches already skip them)."""
        if not self._removed:
            return
        ids, vecs = self._all_vectors()
        keep = ~np.isin(ids, np.fromiter(self._removed, dtype=np.int64))
        self._index = self._new_index("hnsw")
        self._index.add_with_ids(vecs[keep], ids[keep])
        self._removed.clear()

    # -- searching ----------------------------------------------------------------------------------
    def search(self, query: Any, k: int = 10, where: dict[str, Any] | None = None) -> list[Hit] | list[list[Hit]]:
        """Find the ``k`` stored items most similar to a query.

        Parameters
        ----------
        query : one query (a string for a text encoder, or a vector of shape (dim,)) or several (a list of
            strings, or an array of shape (n, dim)).
        k : hits per query.
        where : keep only items whose fields match: ``{"label": "sports"}``, ``{"lang": ["en", "fr"]}``
            (a metadata field, any of the values), ``{"id": [1, 2]}``; several keys must all match.

        Returns
        -------
        For one query a list of :class:`Hit` (best first); for several, one such list per query.
        """
        single, Q = self._queries(query)
        D, I = self.search_embeddings(Q, k=k, where=where)
        hits = self._hits(D, I)
        return hits[0] if single else hits

    def search_embeddings(
        self, queries: Any, k: int = 10, where: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS-style search: ``D, I`` of shape (n_queries, k), scores and ids, padded with -inf / -1."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        Q = l2_normalize(as_embeddings(queries, dim=self.dim, what="queries"))
        nq = len(Q)
        D = np.full((nq, k), -np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        if self._index is None or len(self) == 0:
            return D, I
        allowed = self._where_ids(where) if where else None
        if allowed is not None and len(allowed) == 0:
            return D, I
        if allowed is not None and len(allowed) <= EXACT_FILTER_LIMIT:
            return self._exact_subset(Q, k, allowed)
        faiss = _faiss()
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
        elif self._removed:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._removed, dtype=np.int64)))
        kk = min(k, self._index.ntotal)
        if self._is_hnsw():
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, kk))
            if sel is not None:
                params.sel = sel
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        d, i = self._index.search(Q, kk, params=params)
        D[:, :kk], I[:, :kk] = d, i
        D[I < 0] = -np.inf
        return D, I

    def _exact_subset(self, Q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vecs = np.vstack([self._index.reconstruct(int(i)) for i in allowed])  # callers pass a non-empty set
        S = Q @ vecs.T
        kk = min(k, len(allowed))
        top = np.argsort(-S, axis=1, kind="stable")[:, :kk]
        D = np.full((len(Q), k), -np.inf, dtype=np.float32)
        I = np.full((len(Q), k), -1, dtype=np.int64)
        D[:, :kk] = np.take_along_axis(S, top, axis=1)
        I[:, :kk] = allowed[top]
        return D, I

    def _where_ids(self, where: dict[str, Any]) -> np.ndarray:
        if not isinstance(where, dict):
            raise InputError(f"where must be a dict of field -> value(s), got {type(where).__name__}")
        clauses, args = [], []
        for key, value in where.items():
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            if not values:
                raise InputError(f"where[{key!r}] is an empty list")
            marks = ",".join("?" * len(values))
            if key == "id":
                clauses.append(f"id IN ({marks})")
                args.extend(int(v) for v in values)
            elif key == "label":
                clauses.append(f"label IN ({marks})")
                args.extend(json.dumps(json_label(v)) for v in values)
            else:
                if not isinstance(key, str) or not key.replace("_", "").isalnum():
                    raise InputError(f"where key {key!r} must be a field name of letters, digits and _")
                clauses.append(f"json_extract(metadata, '$.{key}') IN ({marks})")
                args.extend(_sql_value(v) for v in values)
        rows = self._db.execute(f"SELECT id FROM items WHERE {' AND '.join(clauses)} ORDER BY id", args)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def _queries(self, query: Any) -> tuple[bool, np.ndarray]:
        if isinstance(query, np.ndarray) and np.issubdtype(query.dtype, np.number) and query.ndim <= 2:
            if query.shape[-1] == self.dim or self.encoder is None or self.encoder.modality == "text":
                return query.ndim == 1, query
        if isinstance(query, (str, Path)) or type(query).__module__.startswith("PIL.") or isinstance(query, np.ndarray):
            return True, self._encode_queries([str(query) if isinstance(query, Path) else query])
        return False, self._encode_queries(list(query) if not isinstance(query, list) else query)

    def _encode_queries(self, queries: list[Any]) -> np.ndarray:
        return self._require_encoder("search by content").encode_queries(queries)

    def _hits(self, D: np.ndarray, I: np.ndarray) -> list[list[Hit]]:
        wanted = sorted({int(i) for i in I.ravel() if i >= 0})
        rows: dict[int, tuple] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            q = f"SELECT id, item, label, metadata FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            rows.update({r[0]: r for r in self._db.execute(q, chunk)})
        out = []
        for d_row, i_row in zip(D, I):
            hits = []
            for score, i in zip(d_row, i_row):
                r = rows.get(int(i))
                if i < 0 or r is None:
                    continue
                label = None if r[2] is None else json.loads(r[2])
                hits.append(Hit(id=int(i), score=float(score), item=r[1], label=label, metadata=json.loads(r[3])))
            out.append(hits)
        return out

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write the index to a folder (``indexes/<name>/`` by default) atomically; return the folder."""
        target = resolve_index_path(path) if path is not None else index_dir() / self.name
        faiss = _faiss()
        index = self._ensure_index()
        with self._db:
            self._db.execute("DELETE FROM removed")
            self._db.executemany("INSERT INTO removed (id) VALUES (?)", [(i,) for i in sorted(self._removed)])
        meta = {
            "name": self.name,
            "encoder": None if self.encoder is None else (self._saved_identity or self.encoder.identity),
            "dim": self.dim,
            "metric": "inner_product",
            "kind": self.kind,
            "structure": self.structure,
            "count": len(self),
            "vectors": int(index.ntotal),
            "next_id": self._next_id,
            "hnsw": {"m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self.ef_search},
            "auto_threshold": self.auto_threshold,
        }

        def write_db(p: Path) -> None:
            dst = sqlite3.connect(p)
            try:
                self._db.backup(dst)
            finally:
                dst.close()

        write_bundle(
            target, "index", meta, {"index.faiss": lambda p: faiss.write_index(index, str(p)), "meta.sqlite": write_db}
        )
        return target

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> EmbeddingIndex:
        """Open a saved index.

        Parameters
        ----------
        path : the folder, or a bare name for ``indexes/<name>/``.
        encoder : the encoder to use for new items and text queries. It must be the one the index was
            built with (checked: :class:`~fewshot.errors.EncoderMismatchError` otherwise). None recreates
            the recorded encoder; it is checked against the recorded weights hash when first used.
        """
        folder = resolve_index_path(path)
        manifest, files = read_bundle(folder, "index")
        faiss = _faiss()
        try:
            index = faiss.read_index(str(files["index.faiss"]))
        except (RuntimeError, KeyError) as exc:
            raise CorruptFileError(f"{folder}: the FAISS file cannot be read ({exc})") from exc
        saved_identity = manifest.get("encoder")
        deferred = None
        if saved_identity is not None:
            if encoder is not None:
                check_same_encoder(saved_identity, encoder, f"the index at {folder}")
            else:
                # recreated from the manifest; its weights are checked when it is first used
                encoder, deferred = encoder_from_identity(saved_identity), saved_identity
        elif encoder is not None:
            raise InputError(f"the index at {folder} holds raw vectors with no encoder; load it without one")
        try:
            self = cls(
                encoder,
                dim=int(manifest["dim"]),
                kind=manifest["kind"],
                name=manifest.get("name", folder.name),
                hnsw_m=manifest["hnsw"]["m"],
                ef_construction=manifest["hnsw"]["ef_construction"],
                ef_search=manifest["hnsw"]["ef_search"],
                auto_threshold=manifest.get("auto_threshold", 50_000),
            )
            expected = (int(manifest["count"]), int(manifest["vectors"]), int(manifest["next_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"{folder}: the manifest lacks or garbles a field ({exc})") from exc
        self._saved_identity = deferred
        try:
            src = sqlite3.connect(f"file:{files['meta.sqlite']}?mode=ro", uri=True)
            try:
                src.backup(self._db)
            finally:
                src.close()
            self._removed = {r[0] for r in self._db.execute("SELECT id FROM removed")}
            count = len(self)
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(f"{folder}: the metadata table cannot be read ({exc})") from exc
        if index.d != self.dim:
            raise CorruptFileError(f"{folder}: the FAISS index has dimension {index.d}, the manifest says {self.dim}")
        if count != expected[0] or index.ntotal != expected[1] or index.ntotal != count + len(self._removed):
            raise CorruptFileError(
                f"{folder}: the manifest says {expected[0]} items, but the table holds {count} and the "
                f"FAISS index {index.ntotal} vectors; the save is inconsistent"
            )
        self._index = index
        self._next_id = expected[2]
        return self

    def info(self) -> dict[str, Any]:
        """A summary for people: name, kind, structure, count, dim, encoder."""
        enc = None
        if self.encoder is not None:
            enc = self._saved_identity or self.encoder.identity
        labels = self._db.execute("SELECT COUNT(DISTINCT label) FROM items WHERE label IS NOT NULL").fetchone()[0]
        return {
            "name": self.name,
            "kind": self.kind,
            "structure": self.structure,
            "count": len(self),
            "dim": self.dim,
            "labels": labels,
            "removed_pending_compaction": len(self._removed),
            "encoder": enc,
        }

    # -- internals ----------------------------------------------------------------------------------
    def _require_encoder(self, action: str) -> Encoder:
        if self.encoder is None:
            raise InputError(f"cannot {action}: this index has no encoder (it stores raw vectors); pass vectors")
        if self._saved_identity is not None:  # recreated at load: check its weights before first use
            check_same_encoder(self._saved_identity, self.encoder, "this index")
            self._saved_identity = None
        return self.encoder

    def _new_index(self, structure: str) -> Any:
        faiss = _faiss()
        if structure == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    def _ensure_index(self) -> Any:
        if self._index is None:
            self._index = self._new_index("hnsw" if self.kind == "hnsw" else "flat")
        return self._index

    def _is_hnsw(self) -> bool:
        if self._index is None:
            return self.kind == "hnsw"
        inner = _faiss().downcast_index(self._index.index)
        return "HNSW" in type(inner).__name__

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vecs = self._index.index.reconstruct_n(0, self._index.ntotal)
        return ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def _maybe_grow(self) -> None:
        if self.kind == "auto" and not self._is_hnsw() and self._index.ntotal > self.auto_threshold:
            ids, vecs = self._all_vectors()
            self._index = self._new_index("hnsw")
            self._index.add_with_ids(vecs, ids)


def _new_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, item TEXT, label TEXT, metadata TEXT NOT NULL)")
    db.execute("CREATE TABLE removed (id INTEGER PRIMARY KEY)")
    db.execute("CREATE INDEX items_label ON items(label)")
    return db


def _column(values: Any, n: int, what: str) -> list[Any]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)):
        raise InputError(f"{what} must be a list with one entry per item, not a single string")
    if hasattr(values, "tolist") and not isinstance(values, list):
        values = values.tolist()
    values = list(values)
    if len(values) != n:
        raise InputError(f"{what} has {len(values)} entries for {n} items")
    return values


def _sql_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return int(v)  # json_extract returns 0/1 for JSON booleans
    if v is None or isinstance(v, (str, int, float)):
        return v
    raise InputError(f"cannot filter on {v!r}: use strings, numbers or booleans")


def _item_text(x: Any) -> str | None:
    """What the table keeps of an added item: its text, or an image's path; in-memory images keep nothing."""
    return x if isinstance(x, str) else None
