"""``EmbeddingIndex``: the public index that joins the vector store and the metadata table, encodes items
and queries, and saves to a checked folder."""

from __future__ import annotations

import inspect
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._concurrency import RWLock
from fewshot._validate import as_embeddings, check_unicode, int64, json_label
from fewshot.encoders import Encoder, TextEncoder, check_same_encoder, encoder_from_identity
from fewshot.errors import (
    ConcurrentWriteError,
    CorruptFileError,
    FewShotError,
    InputError,
    SaveExistsError,
    SaveNotFoundError,
    warn_user,
)
from fewshot.index import journal
from fewshot.index.filters import json_kind
from fewshot.index.metadata import MetadataTable, encode_metadata
from fewshot.index.paths import checked_name, index_dir, resolve_index_path
from fewshot.index.rawvectors import RawVectors, stale_segments
from fewshot.index.vectors import HNSWSettings, IVFPQSettings, VectorStore
from fewshot.maths import l2_normalize
from fewshot.storage import FolderLock, read_bundle, read_manifest, write_bundle
from fewshot.storage.bundle import check_target

KINDS = ("auto", "flat", "hnsw", "ivfpq")
FILES = ("index.faiss", "meta.sqlite", "positions.npy")  # positions.npy: the row order of IVF-PQ vectors on disk
OWNED = (journal.LOGICAL,)  # the journal of a durable index lives beside its save
MAX_ID = 2**63 - 1  # the largest id SQLite and FAISS hold
UNFINISHED = "unfinished_first_save"  # the manifest of the empty index an IVF-PQ first save writes first
CHECKPOINT_BYTES = 64 << 20  # a durable index writes a new save when its journal grows past this
# kind="auto" goes from flat to HNSW past ``auto_threshold`` vectors and from either to IVF-PQ past this
# many (eval/bench_scale.py measures the sizes where HNSW's float32 copy and build time stop paying)
IVFPQ_THRESHOLD = 1_000_000


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    score: float
    item: str | None = None
    label: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _unit_rows(E: Any, dim: int, what: str, allow_1d: bool = False) -> np.ndarray:
    """``E`` checked (:func:`as_embeddings`) and L2-normalised; an all-zero row, which has no direction to
    compare by and would score 0 against everything, is refused by its place."""
    E = as_embeddings(E, dim=dim, what=what, allow_1d=allow_1d)
    zero = np.flatnonzero(~E.any(axis=1))
    if len(zero):
        where = f"row {zero[0]}" if len(E) > 1 else "the vector"
        raise InputError(f"{what}: {where} is all zeros, which has no direction to compare by")
    return l2_normalize(E)


def check_readable(E: np.ndarray, items: list[Any], what: str, encoder: Any) -> None:
    """Refuse, by its place and in its own terms, an item the encoder gave the zero vector (a text a static
    model has no token for): it has no direction to store or search by."""
    zero = np.flatnonzero(~np.asarray(E).any(axis=1))
    if not len(zero):
        return
    i = int(zero[0])
    place = what if what.startswith("the ") else f"{what}[{i}]"
    more = f" ({len(zero)} of the {len(items)} are)" if len(zero) > 1 else ""
    raise InputError(
        f"{place} ({str(items[i])[:40]!r}) has no token {encoder.describe_source()} knows: its vector is all zeros, "
        f"which has no direction to compare by{more}"
    )


class EmbeddingIndex:
    """Vectors with ids, labels and metadata; search by text, image or vector, optionally filtered.

    Parameters
    ----------
    encoder : the encoder that turns added items and queries into vectors. None means the default
        :class:`~fewshot.TextEncoder` (bundled all-MiniLM-L6-v2), unless ``dim`` is given, which makes an
        index of precomputed vectors only (``add_embeddings`` and vector queries).
    dim : dimension of an encoder-less index.
    kind : ``"flat"`` (exact), ``"hnsw"`` (approximate, fast on large collections), ``"ivfpq"`` (compressed
        codes in memory, exact vectors on disk for re-ranking: for collections that do not fit in memory as
        float32; exact until ``train_size`` vectors, and as many as training needs, are in) or ``"auto"``
        (flat, HNSW once the index holds more than ``auto_threshold`` vectors, IVF-PQ past
        ``ivfpq_threshold``).
    name : the index's name; ``save()`` without a path writes to ``indexes/<name>/``.
    hnsw_m, ef_construction, ef_search : HNSW graph degree, build beam and search beam
        (:class:`~fewshot.index.vectors.HNSWSettings`).
    ivfpq : IVF-PQ settings, a dict or :class:`~fewshot.index.vectors.IVFPQSettings` (``nlist``, ``m``,
        ``nbits``, ``nprobe``, ``refine``, ``train_size``, ``seed``); ``index.ivfpq.nprobe = 64`` changes
        a setting that applies at search time.
    ivfpq_threshold : the size past which ``kind="auto"`` moves to IVF-PQ.

    Threads: searches run concurrently; ``add``, ``remove`` and ``compact`` are exclusive (readers wait for
    them, and never see half a batch). Encoding happens outside the lock. Processes: a save holds the
    folder's writer lock, and :meth:`update` holds it for a whole load-modify-save; a save over a folder
    that another writer changed since this index was loaded is refused instead of losing that change.
    :meth:`open` makes a durable index: it holds the folder for its lifetime and every write is in its
    journal on disk before the call returns (see :mod:`fewshot.index.journal`).
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
        ivfpq: dict[str, Any] | IVFPQSettings | None = None,
        ivfpq_threshold: int = IVFPQ_THRESHOLD,
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if encoder is None and dim is None:
            encoder = TextEncoder()
        if encoder is not None and not isinstance(encoder, Encoder):
            raise InputError(f"encoder must be a fewshot Encoder, got {type(encoder).__name__}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise InputError(f"dim must be a positive integer, got {dim!r}")
        for param, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{param} must be a positive integer, got {value!r}")
        self.encoder = encoder
        self.kind = kind
        self.name = checked_name(name)
        self.hnsw = HNSWSettings(hnsw_m, ef_construction, ef_search)
        self.ivfpq = ivfpq if isinstance(ivfpq, IVFPQSettings) else IVFPQSettings.from_dict(ivfpq)
        for param, value in (("auto_threshold", auto_threshold), ("ivfpq_threshold", ivfpq_threshold)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{param} must be a positive integer, got {value!r}")
        self.auto_threshold = auto_threshold
        self.ivfpq_threshold = ivfpq_threshold
        self._dim = dim
        self._vectors: VectorStore | None = None  # made on first add, when the dimension is known
        self._table = MetadataTable()
        self._next_id = 0
        self._saved_identity: dict[str, Any] | None = None  # checked lazily after load without an encoder
        self._saved_at: tuple[str, str] | None = None  # (folder, save_id) this index was loaded from / saved to
        # every folder this index was loaded from or saved to: (save_id, bytes of its journal then), so a save
        # there is refused when another writer saved or journalled since, whichever folder was used last
        self._seen: dict[str, tuple[str, int]] = {}
        self._held: tuple[Path, FolderLock] | None = None  # the folder an update() block holds
        self._saved_as: str | None = None  # the name when it was last loaded or saved
        self._lock = RWLock()
        self._durable: tuple[Path, FolderLock, journal.JournalWriter] | None = None  # set by open()

    # -- properties ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self.encoder.dim
        return self._dim

    @property
    def structure(self) -> str:
        """The FAISS structure in use now: ``"flat"``, ``"hnsw"`` or ``"ivfpq"`` (an ``ivfpq`` index is
        ``"flat"`` until it holds enough vectors to train on)."""
        if self._vectors is None:
            return "hnsw" if self.kind == "hnsw" else "flat"
        return self._vectors.structure

    def _new_store(self) -> VectorStore:
        return VectorStore(self.dim, "hnsw" if self.kind == "hnsw" else "flat", self.hnsw, self.ivfpq)

    def __len__(self) -> int:
        return self._table.count()

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
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode ``items`` and store them; return their ids, array of shape (n,).

        ``labels`` (one per item, or None) and ``metadata`` (one dict per item, JSON values, no NaN or
        infinity) are checked before anything is encoded, and the batch is stored whole or not at all.
        """
        encoder = self._require_encoder("add items")
        items = encoder.validate(items)
        n = len(items)
        self._prepare_rows(n, ids, labels, metadata, [_item_text(x) for x in items])  # fail before encoding
        E = encoder.encode(items, show_progress=show_progress)
        check_readable(E, items, "items", encoder)
        return self.add_embeddings(E, ids=ids, labels=labels, metadata=metadata, items=[_item_text(x) for x in items])

    def add_embeddings(
        self,
        embeddings: Any,
        ids: Any = None,
        labels: Any = None,
        metadata: list[dict[str, Any]] | None = None,
        items: list[str | None] | None = None,
    ) -> np.ndarray:
        """Store precomputed vectors of shape (n, dim); they are L2-normalised. Return their ids."""
        E = _unit_rows(embeddings, self.dim, "embeddings")
        with self._lock.write():
            records, rows_meta, rows_label, ids_arr = self._prepare_rows(len(E), ids, labels, metadata, items)
            if self._durable is not None:  # on disk before anything changes in memory
                frame = journal.add_record(ids_arr, E, rows_label, [r[3] for r in records], [r[1] for r in records])
                with self._durable[2].logged(frame):  # a refused add leaves no record behind
                    self._apply_add(E, ids_arr, records, rows_meta, rows_label)
            else:
                self._apply_add(E, ids_arr, records, rows_meta, rows_label)
        self._maybe_checkpoint()
        return ids_arr

    def _apply_add(self, E: np.ndarray, ids_arr: np.ndarray, records: list, rows_meta: list, rows_label: list) -> None:
        """Store prepared rows and their vectors in memory (the caller holds the write lock)."""
        if self._vectors is None:
            self._vectors = self._new_store()
        self._table.insert(records, rows_meta, rows_label)
        try:
            self._vectors.add(E, ids_arr)
        except Exception:
            self._table.delete(ids_arr.tolist())
            raise
        self._next_id = max(self._next_id, int(ids_arr.max()) + 1)
        structure = self._vectors.structure
        try:
            self._grow(self._vectors.ntotal)
        except Exception as exc:  # the rows are in, in the structure they went into: the add stands
            warn_user(
                f"the index stays {structure}: moving it to another structure failed ({exc}); the next add tries again"
            )

    def _grow(self, n: int, expected: int | None = None) -> None:
        """Move to the structure ``kind`` calls for at ``n`` vectors (``expected``: the size being built to)."""
        structure = self._vectors.structure
        if self.kind == "auto":
            if (
                structure != "ivfpq"
                and n > self.ivfpq_threshold
                and n >= self.ivfpq.training_minimum(max(n, expected or 0))
            ):
                self._vectors.rebuild("ivfpq", expected)
            elif structure == "flat" and n > self.auto_threshold:
                self._vectors.rebuild("hnsw")
        elif self.kind == "ivfpq" and structure != "ivfpq" and self.ivfpq.trainable(n, expected):
            self._vectors.rebuild("ivfpq", expected)

    def add_batch_output(
        self,
        path: str | Path,
        *,
        id_col: str | None = "auto",
        label_col: str | None = None,
        meta_cols: list[str] | tuple[str, ...] = (),
        item_col: str | None = "auto",
        batch_rows: int = 50_000,
    ) -> int:
        """Add the vectors a batch ``embed`` job wrote (:func:`fewshot.batch.embed`), encoding nothing again;
        return how many were added.

        Parameters
        ----------
        path : the job's output folder. Its encoder (recorded in every shard) must be this index's
            (:class:`~fewshot.errors.EncoderMismatchError` otherwise); an index of raw vectors with no
            encoder takes vectors of its dimension.
        id_col : ``"auto"`` uses the output's id column when it holds integers: the input's ids, or, for
            a job that read none, its row numbers in an empty index (added to an index that holds items,
            they are numbered after its largest id). Text ids are kept as metadata and the items numbered
            (a column called ``id`` as the field ``source_id``: ``id`` in a filter is the item's own id). A
            column name; or None to number the items.
        label_col, meta_cols, item_col : output columns (kept from the input with ``keep_cols``) to store as
            the label, as metadata fields (``id`` as ``source_id``), and as the item's text. ``item_col="auto"``
            is the column the job read its texts from, when it kept it (else one called ``text``, else none);
            None stores no text.
        batch_rows : rows added at a time (memory stays bounded by it).

        For ``kind="auto"`` the structure is chosen for the size the index will have, and an IVF-PQ
        structure is trained on a seeded sample of the whole output before the first vector is added.
        """
        from fewshot.index.from_batch import add_batch_output

        return add_batch_output(
            self,
            path,
            id_col=id_col,
            label_col=label_col,
            meta_cols=tuple(meta_cols),
            item_col=item_col,
            batch_rows=batch_rows,
        )

    @classmethod
    def from_batch_output(cls, path: str | Path, *, kind: str = "auto", name: str = "default", **kwargs: Any):
        """A new index with the encoder a batch ``embed`` output records (its weights load, and are checked
        against the record, when a text or image query first needs them), filled from that output.
        ``kwargs`` go to :meth:`add_batch_output`."""
        from fewshot.index.from_batch import describe_output

        identity = describe_output(path)[1]["encoder"]
        index = cls(encoder_from_identity(identity), kind=kind, name=name)
        index._saved_identity = identity
        index.add_batch_output(path, **kwargs)
        return index

    def _plan_for(self, adding: int) -> None:
        """Before a bulk add of ``adding`` vectors to an empty ``auto`` index, start in the structure its
        final size calls for (HNSW past ``auto_threshold``) instead of moving there midway."""
        with self._lock.write():
            if self._vectors is None:
                self._vectors = self._new_store()
            if (
                self.kind == "auto"
                and self._vectors.ntotal == 0
                and self._vectors.structure == "flat"
                and self.auto_threshold < adding <= self.ivfpq_threshold
            ):
                self._vectors = VectorStore(self.dim, "hnsw", self.hnsw, self.ivfpq)

    def _wants_ivfpq(self, adding: int) -> bool:
        final = len(self) + adding
        return (self.kind == "ivfpq" and self.ivfpq.trainable(final)) or (
            self.kind == "auto" and final > self.ivfpq_threshold
        )

    def _train_for(self, sample: np.ndarray, expected: int) -> None:
        """Become IVF-PQ trained on ``sample`` for a collection of about ``expected`` vectors."""
        with self._lock.write():
            if self._vectors.ntotal == 0:
                self._vectors.train(l2_normalize(sample), expected)
            else:
                self._vectors.rebuild("ivfpq", expected)

    def _prepare_rows(self, n: int, ids: Any, labels: Any, metadata: Any, items: Any):
        if self.kind in ("ivfpq", "auto"):
            self.ivfpq.code_bytes(self.dim)  # settings IVF-PQ cannot train with are refused before anything is added
        ids_arr = self._check_new_ids(ids, n)
        rows_label = _column(labels, n, "labels")
        rows_meta = _column(metadata, n, "metadata")
        rows_item = _column(items, n, "items")
        records = []
        for i in range(n):
            meta = encode_metadata(rows_meta[i], i)
            label = rows_label[i].item() if isinstance(rows_label[i], np.generic) else rows_label[i]
            if (isinstance(label, float) and np.isnan(label)) or type(label).__name__ in ("NAType", "NaTType"):
                raise InputError(f"labels[{i}] is {label} (a missing value); give None for an item with no label")
            if isinstance(label, str) and not label.strip():
                raise InputError(f"labels[{i}] is an empty string; give a label or None")
            if isinstance(label, str):
                check_unicode(label, f"labels[{i}]")
            if isinstance(label, int) and not isinstance(label, bool) and not int64(label):
                raise InputError(f"labels[{i}] is {label}, outside the 64-bit integers an index can store and filter")
            if isinstance(rows_item[i], str):
                check_unicode(rows_item[i], f"items[{i}]")
            label_json = None if label is None else json.dumps(json_label(label))
            records.append((int(ids_arr[i]), rows_item[i], label_json, meta))
        plain = [None if v is None else json_label(v) for v in rows_label]
        self._check_label_kind(plain)
        return records, rows_meta, plain, ids_arr

    def _check_label_kind(self, labels: list[Any]) -> None:
        """Refuse labels of a kind (text, number, boolean) other than the index's: a filter on ``label`` reads
        its value as the labels' kind, which must then be one."""
        held = self._table.label_kinds - {"null"}
        kinds = [json_kind(v) for v in labels]
        first = next((k for k in kinds if k != "null"), None)
        expected = next(iter(held)) if len(held) == 1 else first  # an index saved with mixed labels stays open
        for i, (kind, label) in enumerate(zip(kinds, labels, strict=True)):
            if kind != "null" and kind != expected and kind not in held:
                where = "the index's labels are" if held else f"labels[{kinds.index(expected)}] is"
                hint = f"; give {json.dumps(str(label))} for text" if expected == "string" else ""
                raise InputError(
                    f"labels[{i}] is {_KIND_NAMES[kind]} ({label!r}), but {where} {_KIND_NAMES[expected]}: an "
                    "index's labels are all text, all numbers or all booleans, so that a filter on label means "
                    f"one thing{hint}"
                )

    def _check_new_ids(self, ids: Any, n: int) -> np.ndarray:
        if ids is None:
            if self._next_id + n - 1 > MAX_ID:
                raise InputError(
                    f"the index cannot number {n} more item(s) itself: it has held id {self._next_id - 1}, and ids "
                    f"stop at 2**63 - 1; pass ids= for them"
                )
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        arr = np.asarray(ids)
        whole = arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.ravel())
        if whole and arr.shape == (n,):  # Python integers past 64 bits
            raise InputError("ids must be integers from 0 to 2**63 - 1 (SQLite's and FAISS's 64-bit ids)")
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"ids must be integers, one for each of the {n} items; got {arr.dtype} array of shape {arr.shape}"
            )
        if arr.dtype == np.uint64 and (arr > MAX_ID).any():
            raise InputError("ids must be integers from 0 to 2**63 - 1 (SQLite's and FAISS's 64-bit ids)")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise InputError("ids must be non-negative integers")
        values, counts = np.unique(arr, return_counts=True)
        if len(values) != n:
            repeated = values[counts > 1][:5].tolist()
            raise InputError(f"ids contain duplicates ({', '.join(map(str, repeated))} more than once)")
        taken = self._table.existing(arr.tolist())
        if taken:
            raise InputError(f"ids already in the index: {sorted(taken)[:5]}")
        pending = (self._vectors.removed if self._vectors is not None else set()) & set(arr.tolist())
        if pending:
            raise InputError(
                f"ids {sorted(pending)[:5]} were removed but their vectors are still in the HNSW graph; "
                "call compact() to free them, or add under new ids"
            )
        return arr

    # -- removing -----------------------------------------------------------------------------------
    def remove(self, ids: Any = None, *, where: dict[str, Any] | None = None) -> int:
        """Delete the given ids, or with ``where`` (a filter, as :meth:`search` takes) every item matching it,
        or the given ids that match it when both are given; return how many were deleted. Unknown ids are
        ignored, and so is a filter on a field, or a kind of value, that no item holds (it matches nothing,
        so that a removal may be run again). An HNSW graph keeps the removed vectors, and their ids, until
        :meth:`compact`."""
        if ids is None and where is None:
            raise InputError("remove() takes ids, a where filter, or both")
        if where is not None and not where:  # filters' own message speaks of searching
            raise InputError("remove(where={}) names no field to match; give ids, or a field and its value(s)")
        ids_list = _storable(_id_list(ids)) if ids is not None else None
        with self._lock.write():
            if where is not None:
                matching = self._table.select_ids(where, strict=False).tolist()
                present = sorted(set(matching).intersection(ids_list) if ids_list is not None else matching)
            else:
                present = sorted(self._table.existing(ids_list))
            if not present:
                return 0
            if self._durable is None:
                self._table.delete(present)
                self._vectors.remove(present)
            else:
                with self._durable[2].logged(journal.remove_record(present)):
                    self._table.delete(present)
                    self._vectors.remove(present)
        self._maybe_checkpoint()
        return len(present)

    def compact(self) -> None:
        """Rebuild the HNSW graph without removed vectors (searches already skip them); for IVF-PQ, drop
        removed rows from the vectors on disk (the next save writes the smaller files). A durable index
        (:meth:`open`) writes a new save at once: the journal holds adds and removals, not compactions, so
        replayed over the old save an id added again after the compaction would be taken for a removed one."""
        with self._lock.write():
            changed = False
            if self._vectors is not None and self._vectors.removed:
                self._vectors.rebuild(self._vectors.structure)
                changed = True
            raw = self._vectors.raw if self._vectors is not None else None
            if raw is not None and raw.live < raw.rows:
                fresh = RawVectors(raw.dim)
                for ids, vecs in raw.iter_live():
                    fresh.add(vecs, ids)
                self._vectors.raw = fresh
                changed = True
            if changed and self._durable is not None:
                self.checkpoint()

    def retrain(self) -> None:
        """Train an IVF-PQ index's lists and codes again on a fresh sample of its vectors (from disk), e.g.
        after it has grown far past the collection it was trained on."""
        with self._lock.write():
            if self._vectors is None or self._vectors.structure != "ivfpq":
                raise InputError(f"retrain() is for a trained IVF-PQ index; this one is {self.structure}")
            self._vectors.rebuild("ivfpq")

    # -- searching ----------------------------------------------------------------------------------
    def search(self, query: Any, k: int = 10, where: dict[str, Any] | None = None) -> list[Hit]:
        """The ``k`` stored items most similar to one query, best first.

        Parameters
        ----------
        query : a string is a text query (through the encoder's text side: text encoders, CLIP, ConSE);
            a ``pathlib.Path``, a PIL image or an array of shape (H, W) or (H, W, 1|3|4) is an image query; a 1-d array
            of length ``dim`` is a vector. A string is never read as a file name.
        k : hits to return (fewer when fewer items match).
        where : keep only items whose fields match: ``{"label": "sports"}``, ``{"lang": ["en", "fr"]}``
            (any of the values), ``{"id": [1, 2]}``; several keys must all match. See
            :mod:`fewshot.index.filters` for types, missing fields and None.
        """
        Q = self._embed_query(query)  # encoding runs outside the lock
        with self._lock.read():  # the hits' rows come from the same state as the search
            return self._hits(*self.search_embeddings(Q, k=k, where=where))[0]

    def batch_search(self, queries: Any, k: int = 10, where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """:meth:`search` for several queries: a list of queries (each as for ``search``) or an array of
        shape (n, dim) of vectors. Returns one list of hits per query."""
        if isinstance(queries, np.ndarray) and queries.ndim == 2 and np.issubdtype(queries.dtype, np.number):
            Q = queries
        else:
            if isinstance(queries, (str, bytes, Path)) or not hasattr(queries, "__iter__"):
                raise InputError("batch_search takes a list of queries; use search() for one")
            qs = list(queries)
            if not qs:
                raise InputError("queries is empty; give at least one query")
            Q = np.vstack([self._embed_query(q) for q in qs]) if not all(isinstance(q, str) for q in qs) else None
            if Q is None:
                encoder = self._require_encoder("search by text")
                Q = encoder.encode_text(qs)
                check_readable(Q, qs, "queries", encoder)
        with self._lock.read():
            return self._hits(*self.search_embeddings(Q, k=k, where=where))

    def _embed_query(self, query: Any) -> np.ndarray:
        """One query as a (1, dim) array."""
        if isinstance(query, str):
            encoder = self._require_encoder("search by text")
            Q = encoder.encode_text([query])
            check_readable(Q, [query], "the query", encoder)
            return Q
        if isinstance(query, np.ndarray) and query.ndim == 1:
            return as_embeddings(query, dim=self.dim, what="query vector", allow_1d=True)
        if query is None:
            raise InputError("the query is None; give a text, an image or a 1-d vector")
        if isinstance(query, (list, tuple)):
            raise InputError(f"search takes one query; for {len(query)} of them use batch_search")
        if isinstance(query, np.ndarray) and query.ndim == 2 and query.shape[1] == self.dim:
            raise InputError(
                f"a query vector is 1-d, shape ({self.dim},), got shape {query.shape}: pass one row, or use "
                "search_embeddings for several"
            )
        encoder = self._require_encoder("search by image")
        if encoder.modality != "image":
            raise InputError(
                f"a {type(query).__name__} query needs an image index; this index embeds {encoder.modality} "
                "(give a string for text, or a 1-d vector)"
            )
        return encoder.encode([str(query) if isinstance(query, Path) else query])

    def search_embeddings(
        self, queries: Any, k: int = 10, where: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS-style search: ``D, I`` of shape (n_queries, min(k, items in the index)), scores and ids, padded
        with -inf / -1 where fewer items match."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        Q = _unit_rows(queries, self.dim, "queries", allow_1d=True)
        with self._lock.read():
            n = len(self)
            k = min(int(k), max(1, n))  # a k past the index's size would only allocate padding
            if self._vectors is None or n == 0:
                if where is not None and not isinstance(where, dict):
                    raise InputError(f"where must be a dict of field -> value(s), got {type(where).__name__}")
                return np.full((len(Q), k), -np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
            allowed = self._table.select_ids(where) if where is not None else None
            return self._vectors.search(Q, int(k), allowed)

    def _hits(self, D: np.ndarray, I: np.ndarray) -> list[list[Hit]]:
        rows = self._table.rows(sorted({int(i) for i in I.ravel() if i >= 0}))
        out = []
        for d_row, i_row in zip(D, I):
            hits = []
            for score, i in zip(d_row, i_row):
                r = rows.get(int(i))
                if i < 0 or r is None:
                    continue
                hits.append(Hit(id=int(i), score=float(score), item=r[0], label=r[1], metadata=r[2]))
            out.append(hits)
        return out

    def get(self, ids: Any) -> list[Hit | None]:
        """The stored items of ``ids`` (score 1.0), None for ids not in the index."""
        ids_list = _id_list(ids)
        rows = self._table.rows(_storable(ids_list))
        return [None if i not in rows else Hit(i, 1.0, *rows[i]) for i in ids_list]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """Write the index to a folder atomically; return the folder. Without ``path``: the folder it was
        loaded from or last saved to, else (a new index, or a new ``name`` since) ``indexes/<name>/``.

        A save over a folder this index was loaded from or saved to is refused with
        :class:`~fewshot.errors.ConcurrentWriteError` when another writer saved there, or added to its
        journal (:meth:`open`), in between; use :meth:`update` to hold the folder for a whole
        load-modify-save. A folder that holds an index this one neither came from nor saved to is
        replaced only with ``overwrite=True`` (otherwise :class:`~fewshot.errors.SaveExistsError`, checked
        under the folder's lock, so two new indexes of one name cannot silently replace each other).
        Inside :meth:`update` or on an index from :meth:`open`, saving to its own folder uses the lock it
        holds (for :meth:`open`, a :meth:`checkpoint`).
        """
        name = checked_name(self.name)
        if path is not None:
            target = resolve_index_path(path)
        elif self._saved_at is not None and self._saved_as == name:
            target = Path(self._saved_at[0])
        else:  # a new index, or one given a new name since
            target = index_dir() / name
        if self._durable is not None and self._durable[0].resolve() == target.resolve():
            self.checkpoint()
            return target
        if self._held is not None and self._held[0].resolve() == target.resolve():
            return self._save(target, self._held[1])
        return self._save(target, None, overwrite)

    def _save(self, target: Path, lock: FolderLock | None, overwrite: bool = False) -> Path:
        raw = self._vectors.raw if self._vectors is not None else None
        if raw is None:
            with self._lock.read():
                meta, files = self._save_parts()
            manifest = write_bundle(
                target,
                "index",
                meta,
                files,
                expect_save_id=self._expected(target),
                lock=lock,
                owned=OWNED,
                still_current=self._still_current(target, lock, overwrite),
            )
            self._remember(target, manifest["save_id"], 0)
            return target
        # IVF-PQ with its vectors on disk: the segment files go into the folder (linked, or written) before
        # the manifest that lists them, all under the folder's lock and with writers to this index held off
        own = lock is None or not lock.held
        if own:
            check_target(target, "index", FILES + OWNED)
            lock = FolderLock(target).acquire()
        try:
            with self._lock.write():
                expect = self._expected(target)
                check = self._still_current(target, None if own else lock, overwrite)
                old = read_manifest(target)
                mine = expect is None or old is None or old.get("save_id") == expect  # else write_bundle refuses
                problem = check(old) if check is not None and old is not None and mine else None
                if problem:
                    raise ConcurrentWriteError(f"{target}: {problem}")
                if old is None:  # a first save: the folder becomes an (empty) index marked unfinished first,
                    empty = EmbeddingIndex(None, dim=self.dim, kind=self.kind, name=self.name)  # so that a
                    meta, files = empty._save_parts()  # killed save leaves a folder the next one takes over
                    meta["encoder"] = None if self.encoder is None else self._identity()
                    meta[UNFINISHED] = True  # (load refuses it rather than reading an empty index)
                    expect = write_bundle(target, "index", meta, files, lock=lock, owned=OWNED)["save_id"]
                elif old.get(UNFINISHED):  # a killed first save's placeholder, this save's to finish
                    expect = old.get("save_id")
                segments = raw.save_into(target)
                meta, files = self._save_parts()
                meta["raw"] = segments
            manifest = write_bundle(target, "index", meta, files, expect_save_id=expect, lock=lock, owned=OWNED)
            self._remember(target, manifest["save_id"], 0)
            for p in stale_segments(target, {d["name"] for d in segments}):  # killed saves, compactions
                p.unlink(missing_ok=True)
        finally:
            if own:
                lock.release()
        return target

    def _expected(self, target: Path) -> str | None:
        seen = self._seen.get(str(target.resolve()))
        return None if seen is None else seen[0]

    def _remember(self, folder: Path, save_id: str, journal_bytes: int) -> None:
        self._saved_at, self._saved_as = (str(folder.resolve()), save_id), self.name
        self._seen[self._saved_at[0]] = (save_id, journal_bytes)

    def _still_current(self, target: Path, lock: FolderLock | None, overwrite: bool) -> Any:
        """A function of the folder's manifest, called under the folder's lock when the folder holds a save,
        that names what the save would lose (or None to check nothing): for a folder this index never saw,
        the index there (:class:`~fewshot.errors.SaveExistsError` unless ``overwrite``); for one it saw,
        writes journalled there since (acknowledged by an :meth:`open` index, and about to be dropped with
        the old save's journal). A caller that holds the lock (:meth:`update`, a checkpoint) has seen every
        journalled write."""
        seen = self._seen.get(str(target.resolve()))
        if seen is None:
            if overwrite:
                return None

            def refuse(old: dict[str, Any]) -> str | None:
                if old.get(UNFINISHED):  # a first save killed before its vectors were written: nothing to lose
                    return None
                raise SaveExistsError(
                    f"{target} already holds an index ({old.get('name')!r}, {old.get('count', '?')} items) that "
                    "this one was not loaded from; load it (or use EmbeddingIndex.update / open) to change it, or "
                    "save with overwrite=True to replace it"
                )

            return refuse
        if lock is not None and lock.held:
            return None

        def check(old: dict[str, Any]) -> str | None:
            path = journal.journal_path(target, old["save_id"])
            size = path.stat().st_size if path.exists() else 0
            if size != seen[1]:
                return (
                    "another writer added to this index (through EmbeddingIndex.open) after it was loaded; load it "
                    "again and redo the change (or hold the folder with EmbeddingIndex.update)"
                )
            return None

        return check

    def _identity(self) -> dict[str, Any]:
        return self._saved_identity or self.encoder.identity

    def _save_parts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The manifest fields and file writers of a save (the caller holds this index's lock)."""
        if self._vectors is None:
            self._vectors = self._new_store()
        removed = set(self._vectors.removed)
        if self._vectors.ntotal != len(self) + len(removed):  # what load() would refuse is never written
            raise FewShotError(
                f"index {self.name!r}: {len(self)} items and {len(removed)} removed ones, but {self._vectors.ntotal} "
                "vectors; nothing was saved, and the last save is left as it was"
            )
        vectors = self._vectors.to_bytes()
        table = self._table.to_bytes(removed)
        meta = {
            "name": self.name,
            "encoder": None if self.encoder is None else self._identity(),
            "dim": self.dim,
            "metric": "inner_product",
            "kind": self.kind,
            "structure": self.structure,
            "count": len(self),
            "vectors": self._vectors.ntotal,
            "next_id": self._next_id,
            "hnsw": {
                "m": self.hnsw.m,
                "ef_construction": self.hnsw.ef_construction,
                "ef_search": self.hnsw.ef_search,
            },
            "auto_threshold": self.auto_threshold,
            "ivfpq": self.ivfpq.to_dict(),
            "ivfpq_threshold": self.ivfpq_threshold,
            "raw": None,
        }
        files = {"index.faiss": lambda p: p.write_bytes(vectors), "meta.sqlite": lambda p: p.write_bytes(table)}
        raw = self._vectors.raw
        if raw is not None:
            positions = raw.pos_ids.copy()
            files["positions.npy"] = lambda p: np.save(p, positions, allow_pickle=False)
        return meta, files

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> EmbeddingIndex:
        """Open a saved index.

        Parameters
        ----------
        path : the folder, or a bare name for ``indexes/<name>/``.
        encoder : the encoder to use for new items and queries. It must be the one the index was built
            with (checked: :class:`~fewshot.errors.EncoderMismatchError` otherwise). None recreates the
            recorded encoder; its weights are checked against the recorded hash when first used.
        """
        folder = resolve_index_path(path)
        for _ in range(20):
            manifest, files, frames, journal_bytes = _read_with_journal(folder)
            if manifest.get(UNFINISHED):
                raise SaveNotFoundError(
                    f"no saved index at {folder}: its first save was stopped before its vectors were written, "
                    "so nothing of it can be read; save the index there again (the next save takes the folder over)"
                )
            try:
                return cls._from_save(folder, encoder, manifest, files, frames, journal_bytes)
            except CorruptFileError:
                # IVF-PQ's vector files are read after the rest: a checkpoint that compacted them away in
                # between is a newer save to read again, not damage
                now = read_manifest(folder)
                if manifest.get("raw") is None or now is None or now.get("save_id") == manifest["save_id"]:
                    raise
        raise CorruptFileError(f"{folder} kept changing while it was read; try again")

    @classmethod
    def _from_save(
        cls,
        folder: Path,
        encoder: Encoder | None,
        manifest: dict[str, Any],
        files: dict[str, bytes],
        frames: list,
        journal_bytes: int,
    ) -> EmbeddingIndex:
        saved_identity = manifest.get("encoder")
        deferred = None
        if saved_identity is not None:
            if encoder is not None:
                check_same_encoder(saved_identity, encoder, f"the index at {folder}")
            else:
                encoder, deferred = encoder_from_identity(saved_identity), saved_identity
        elif encoder is not None:
            raise InputError(f"the index at {folder} holds raw vectors with no encoder; load it without one")
        try:
            hnsw = manifest["hnsw"]
            self = cls(
                encoder,
                dim=int(manifest["dim"]),
                kind=manifest["kind"],
                name=_saved_name(manifest.get("name"), folder),
                hnsw_m=hnsw["m"],
                ef_construction=hnsw["ef_construction"],
                ef_search=hnsw["ef_search"],
                auto_threshold=manifest.get("auto_threshold", 50_000),
                ivfpq=manifest.get("ivfpq"),
                ivfpq_threshold=manifest.get("ivfpq_threshold", IVFPQ_THRESHOLD),
            )
            expected = (int(manifest["count"]), int(manifest["vectors"]), int(manifest["next_id"]))
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise CorruptFileError(f"{folder}: the manifest lacks or garbles a field ({exc})") from exc
        self._saved_identity = deferred
        self._table, removed = MetadataTable.from_bytes(files["meta.sqlite"], str(folder))
        raw = None
        if manifest.get("raw") is not None:
            if "positions.npy" not in files:
                raise CorruptFileError(f"{folder}: the manifest lists vector files but no positions.npy")
            try:
                positions = np.load(io.BytesIO(files["positions.npy"]), allow_pickle=False)
                raw = RawVectors.load(folder, manifest["raw"], positions, self.dim)
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptFileError(f"{folder}: the vector files cannot be read ({exc})") from exc
        self._vectors = VectorStore.from_bytes(
            files["index.faiss"], self.dim, self.hnsw, removed, str(folder), self.ivfpq, raw
        )
        count = len(self)
        ntotal = self._vectors.ntotal
        if count != expected[0] or ntotal != expected[1] or ntotal != count + len(removed):
            raise CorruptFileError(
                f"{folder}: the manifest says {expected[0]} items, but the table holds {count} and the "
                f"FAISS index {ntotal} vectors; the save is inconsistent"
            )
        self._next_id = expected[2]
        self._remember(folder, manifest["save_id"], journal_bytes)
        with self._lock.write():
            self._replay(frames, str(folder))
        return self

    def _replay(self, frames: list[tuple[dict[str, Any], bytes]], where: str) -> None:
        """Apply a journal's acknowledged writes to the save it started from."""
        for header, body in frames:
            try:
                ids = np.asarray(header["ids"], dtype=np.int64)
                if header["op"] == "add":
                    E = np.frombuffer(body, dtype=np.float32).reshape(len(ids), int(header["dim"]))
                    records = [
                        (int(i), item, None if lab is None else json.dumps(lab), meta)
                        for i, item, lab, meta in zip(ids, header["items"], header["labels"], header["metadata"])
                    ]
                    metadata = [json.loads(r[3]) for r in records]
                    if self._vectors.removed & set(ids.tolist()):
                        # an id added again after a compaction its writer made (a journal written before
                        # compactions were followed by a save): compact here too, as that writer had
                        self._vectors.rebuild(self._vectors.structure)
                    self._apply_add(E, ids, records, metadata, header["labels"])
                elif header["op"] == "remove":
                    present = sorted(self._table.existing(ids.tolist()))
                    self._table.delete(present)
                    self._vectors.remove(present)
                else:
                    raise ValueError(f"unknown operation {header['op']!r}")
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptFileError(f"{where}: a journal record cannot be applied ({exc})") from exc

    @classmethod
    @contextmanager
    def update(
        cls,
        path: str | Path,
        encoder: Encoder | None = None,
        *,
        create: bool = False,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> Iterator[EmbeddingIndex]:
        """Hold a saved index's folder for a load-modify-save: another writer waits (up to ``timeout``
        seconds) instead of losing its change or ours. The index is saved when the block ends without an
        error, and left as it was otherwise.

        ``create=True`` makes a new index (with ``kwargs`` for the constructor) when the folder holds none;
        a setting in ``kwargs`` that the saved index contradicts, or that is no setting, is refused.

        Examples
        --------
        >>> with EmbeddingIndex.update("news") as index:  # doctest: +SKIP
        ...     index.add(["a new article"])
        """
        _check_names(kwargs)
        folder = resolve_index_path(path)
        check_target(folder, "index", FILES + OWNED)
        with FolderLock(folder, timeout) as lock:
            if holds_index(folder):
                index = cls.load(folder, encoder)
                _check_settings(index, kwargs, folder)
            elif create:
                index = cls(encoder, name=kwargs.pop("name", folder.name), **kwargs)
            else:
                raise SaveNotFoundError(f"no saved index at {folder}")
            index._held = (folder, lock)
            try:
                yield index
                index._save(folder, lock)
            finally:
                index._held = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        encoder: Encoder | None = None,
        *,
        create: bool = False,
        timeout: float = 60.0,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        **kwargs: Any,
    ) -> EmbeddingIndex:
        """A durable index: every ``add``, ``add_embeddings`` and ``remove`` is in the folder's journal on disk
        (``fsync``) before it returns, so an acknowledged write survives ``kill -9`` at any moment.

        The index holds the folder's writer lock until :meth:`close` (another writer, in this process or
        another, waits up to ``timeout`` seconds and then gets :class:`~fewshot.errors.LockTimeoutError`);
        readers load the last save plus the journal. When the journal grows past ``checkpoint_bytes`` a new
        save is written and the journal starts again. ``create=True`` makes a new index (``kwargs`` for the
        constructor) when the folder holds none; a setting in ``kwargs`` that the saved index contradicts, or
        that is no setting, is refused. Use it as a context manager, or call :meth:`close`.
        """
        _check_names(kwargs)
        folder = resolve_index_path(path)
        check_target(folder, "index", FILES + OWNED)
        lock = FolderLock(folder, timeout).acquire()
        try:
            if holds_index(folder):
                index = cls.load(folder, encoder)
                _check_settings(index, kwargs, folder)
            elif create:
                index = cls(encoder, name=kwargs.pop("name", folder.name), **kwargs)
                index._save(folder, lock)
            else:
                raise SaveNotFoundError(f"no saved index at {folder}")
            index._checkpoint_bytes = checkpoint_bytes
            index._durable = (folder, lock, journal.JournalWriter(journal.journal_path(folder, index._saved_at[1])))
        except BaseException:
            lock.release()
            raise
        return index

    def checkpoint(self) -> None:
        """Write a new save of a durable index and start its journal again (also done automatically)."""
        if self._durable is None:
            raise InputError("checkpoint() is for an index opened with EmbeddingIndex.open(); use save()")
        with self._lock.write():
            folder, lock, writer = self._durable
            self._save(folder, lock)
            writer.close()
            self._durable = (folder, lock, journal.JournalWriter(journal.journal_path(folder, self._saved_at[1])))

    def _maybe_checkpoint(self) -> None:
        """The automatic checkpoint after a write. The write is in the journal already, so a checkpoint that
        fails (a full disk) is a warning, not the write's error: raised, it would read as a write that did not
        happen, and be made again (twice in the index). The next write tries again."""
        if self._durable is not None and self._durable[2].size > getattr(self, "_checkpoint_bytes", CHECKPOINT_BYTES):
            try:
                self.checkpoint()
            except OSError as exc:
                warn_user(
                    f"the write is in the journal of {self._durable[0]}, but the new save after it failed ({exc}); "
                    "the journal keeps growing until a checkpoint succeeds"
                )

    def close(self, checkpoint: bool = True) -> None:
        """Release a durable index's folder (after a last checkpoint, unless ``checkpoint=False``); it then
        works on as an ordinary in-memory index. Without ``open`` there is nothing to close."""
        if self._durable is None:
            return
        if checkpoint:
            self.checkpoint()
        folder, lock, writer = self._durable
        writer.close()
        lock.release()
        self._durable = None

    def __enter__(self) -> EmbeddingIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(checkpoint=exc[0] is None)

    def info(self) -> dict[str, Any]:
        """A summary for people: name, kind, structure, count, dim, labels, metadata fields, encoder."""
        enc = None
        if self.encoder is not None:
            enc = self._saved_identity or self.encoder.identity
        removed = self._vectors.removed if self._vectors is not None else set()
        out = {
            "name": self.name,
            "kind": self.kind,
            "structure": self.structure,
            "count": len(self),
            "dim": self.dim,
            "labels": self._table.distinct_labels(),
            "fields": {k: sorted(v) for k, v in sorted(self._table.field_kinds.items())},
            "removed_pending_compaction": len(removed),
            "encoder": enc,
        }
        if self.kind in ("ivfpq", "auto"):
            v = self._vectors
            ivf = v._index if v is not None and v.is_ivf else None
            out["ivfpq"] = {
                **self.ivfpq.to_dict(),
                "trained": ivf is not None,
                "nlist": int(ivf.nlist) if ivf is not None else self.ivfpq.nlist,
                "nprobe_used": self.ivfpq.probes(int(ivf.nlist)) if ivf is not None else None,
                "m": int(ivf.pq.M) if ivf is not None else self.ivfpq.m,
                "vectors_on_disk": 0 if v is None or v.raw is None else v.raw.rows,
            }
        return out

    def field_kinds(self) -> dict[str, set[str]]:
        """Metadata field -> the JSON kinds it holds (string, number, boolean, null, array, object);
        ``"label"`` gives the kinds of the labels."""
        return {**{k: set(v) for k, v in self._table.field_kinds.items()}, "label": set(self._table.label_kinds)}

    def filter_kinds(self) -> dict[str, set[str]]:
        """Field -> the JSON kinds a ``where`` value can match on it: :meth:`field_kinds`, with a field's lists
        standing for the kinds of the values they hold (``{"tags": ["sale"]}`` is matched by a string)."""
        out = self.field_kinds()
        for key, members in list(self._table.member_kinds.items()):
            if key in out:
                out[key] = (out[key] - {"array"}) | members
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _require_encoder(self, action: str) -> Encoder:
        if self.encoder is None:
            use = "add_embeddings(vectors)" if action.startswith("add") else "a 1-d vector, or search_embeddings"
            raise InputError(f"cannot {action}: this index has no encoder (it stores raw vectors); use {use}")
        if self._saved_identity is not None:  # recreated at load: check its weights before first use
            check_same_encoder(self._saved_identity, self.encoder, "this index")
            self._saved_identity = None
        return self.encoder

    # -- pickling: the FAISS structure travels as bytes, the lock is made anew ----------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_durable"] = state["_held"] = None  # a pickled copy is an ordinary index: the folder stays put
        if self._vectors is not None:
            raw = self._vectors.raw
            state["_vectors"] = (
                self._vectors.to_bytes(),
                set(self._vectors.removed),
                None if raw is None else raw.to_state(),
            )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vectors = state.get("_vectors")
        self.__dict__.update({"_seen": {}, "_held": None, "_saved_as": state.get("name"), **state})
        self._lock = RWLock()
        if isinstance(vectors, tuple):
            raw = RawVectors.from_state(vectors[2]) if len(vectors) > 2 and vectors[2] is not None else None
            self._vectors = VectorStore.from_bytes(
                vectors[0], self._dim, self.hnsw, vectors[1], "a pickled index", self.ivfpq, raw
            )


# what open() and update() take besides the encoder: the constructor's settings, read from its signature
SETTINGS = tuple(inspect.signature(EmbeddingIndex.__init__).parameters)[2:]


def _check_names(settings: dict[str, Any]) -> None:
    """Refuse keyword names that are no setting, whether or not the folder holds an index yet."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InputError(f"unknown index setting(s) {', '.join(unknown)}; the settings are {', '.join(SETTINGS)}")


def _check_settings(index: EmbeddingIndex, settings: dict[str, Any], folder: Path) -> None:
    """Refuse constructor settings that are not valid, or that the index already in ``folder`` contradicts:
    they make a new index only where the folder holds none, and would otherwise be dropped in silence."""
    given = {k: v for k, v in settings.items() if v is not None}
    EmbeddingIndex(None, **{"dim": index.dim, **given})  # an invalid value is refused as the constructor does
    hnsw = {"hnsw_m": index.hnsw.m, "ef_construction": index.hnsw.ef_construction, "ef_search": index.hnsw.ef_search}
    have = {k: hnsw[k] if k in hnsw else getattr(index, k) for k in SETTINGS}
    if isinstance(given.get("ivfpq"), dict):
        given["ivfpq"] = IVFPQSettings.from_dict(given["ivfpq"])
    clash = [k for k, v in given.items() if v != have[k]]
    if clash:
        held = ", ".join(f"{k}={have[k]!r}" for k in clash)
        wanted = ", ".join(f"{k}={given[k]!r}" for k in clash)
        raise InputError(
            f"{folder} holds an index with {held}; {wanted} would make a new one, which create=True does only in a "
            "folder that holds none"
        )


def holds_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds a save to load: a manifest, and not the placeholder of a killed first save."""
    manifest = read_manifest(Path(folder))
    return manifest is not None and not manifest.get(UNFINISHED)


def _read_with_journal(folder: Path) -> tuple[dict[str, Any], dict[str, bytes], list, int]:
    """A save, the frames of its journal and the journal's size in bytes, read so that both belong to the
    same save (a checkpoint may replace them while they are read)."""
    for _ in range(20):
        manifest, files = read_bundle(folder, "index")
        path = journal.journal_path(folder, manifest["save_id"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        now = read_manifest(folder)
        if now is not None and now.get("save_id") == manifest["save_id"]:
            return manifest, files, journal.read_frames(data, str(path))[0], len(data)
    raise CorruptFileError(f"{folder} kept changing while it was read; try again")


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


_KIND_NAMES = {"string": "text", "number": "a number", "boolean": "a boolean"}


def _saved_name(name: Any, folder: Path) -> str:
    """The name a save recorded, or its folder's name where the recorded one is not a plain folder name."""
    try:
        return checked_name(name)
    except InputError:
        return folder.resolve().name or "default"


def _item_text(x: Any) -> str | None:
    """What the table keeps of an added item: its text, or an image's path; in-memory images keep nothing."""
    return x if isinstance(x, str) else None


def _id_list(ids: Any) -> list[int]:
    """Ids given to look up or remove, as Python ints (integers only: a float, string or bool is refused)."""
    arr = np.atleast_1d(np.asarray(ids, dtype=object if isinstance(ids, (list, tuple)) else None))
    out = []
    for v in arr.tolist():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"ids must be integers, got {type(v).__name__} {v!r}")
        out.append(int(v))
    return out


def _storable(ids: list[int]) -> list[int]:
    """The ids an item can have (64-bit integers); beyond them no item is there to find."""
    return [i for i in ids if int64(i)]
