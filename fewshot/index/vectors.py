"""The vector half of the store, searched by inner product on unit vectors (cosine): exact flat, approximate
HNSW, or compressed IVF-PQ for collections that do not fit in memory as float32, with removals and the
switch from one structure to the next as the collection grows.

- ``flat`` and ``hnsw`` are a FAISS ``IndexIDMap2`` over ``IndexFlatIP`` or ``IndexHNSWFlat``. HNSW graphs
  cannot drop nodes, so a removal there leaves a tombstone that searches skip until
  :meth:`VectorStore.compact` rebuilds the graph.
- ``ivfpq`` is a FAISS ``IndexIVFPQ`` (an inverted file of ``nlist`` lists, each vector's residual product-
  quantised to ``m`` bytes) keyed by the items' own ids, trained on a seeded sample of the vectors. On unit
  vectors the L2 distance ranks as the cosine does (``cos = 1 - d / 2``), so the IVF runs on L2, where FAISS
  encodes residuals exactly. The float32 vectors stay on disk (:mod:`fewshot.index.rawvectors`): a search
  takes the ``k * refine`` best candidates by their codes and re-ranks them by their exact cosine, so the
  scores it returns are exact; small filtered searches are exact over the matching vectors, as for the other
  structures. Removals are exact (no tombstones).

The store keeps no metadata and no locks: the index that owns it (:class:`fewshot.index.EmbeddingIndex`)
serialises writers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError, InputError
from fewshot.index.rawvectors import RawVectors

STRUCTURES = ("flat", "hnsw", "ivfpq")
# below this many candidates a filtered search is done exactly over the matching vectors
EXACT_FILTER_LIMIT = 20_000


def _faiss() -> Any:
    import faiss

    return faiss


@dataclass
class HNSWSettings:
    """HNSW graph degree, build beam and search beam. The defaults give recall@10 of at least 0.95 against
    exact search at 1M clustered vectors of 384 dimensions."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 256


@dataclass
class IVFPQSettings:
    """The compressed structure's settings.

    Attributes
    ----------
    nlist : inverted lists; 0 chooses ``4 * sqrt(n)`` (a power of two between 16 and 65,536) for the
        size known when it is trained.
    m : bytes of code per vector (sub-quantisers; must divide the dimension); 0 chooses ``dim / 8``.
    nbits : bits per sub-quantiser code (8: 256 centroids each).
    nprobe : lists searched per query; 0 searches ``nlist / 16`` of them (between 8 and 512): on vectors
        shaped like MiniLM's (eval/bench_scale.py) probing 1/16 of the lists found 0.96 of the exact top 10
        after re-ranking, 1/32 of them 0.91.
    refine : re-rank the best ``k * refine`` candidates by their exact vectors read from disk; 0 turns
        re-ranking off (and with it the vectors on disk), leaving code-approximated scores.
    train_size : vectors gathered before the IVF-PQ is trained (searched exactly until then), and at least
        as many as training needs (one a list and ``2**nbits``, :meth:`trainable`); training uses at most
        ``max(train_size, 40 * nlist)`` of them, sampled with ``seed``.
    seed : the seed of the training sample and of k-means.
    """

    nlist: int = 0
    m: int = 0
    nbits: int = 8
    nprobe: int = 0
    refine: int = 4
    train_size: int = 65_536
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            low = 1 if f.name in ("nbits", "train_size") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"ivfpq setting {f.name} must be an integer >= {low}, got {v!r}")
        if self.nbits > 16:
            raise InputError(f"ivfpq setting nbits must be at most 16, got {self.nbits}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> IVFPQSettings:
        if d is not None and not isinstance(d, dict):
            raise InputError(f"ivfpq settings must be a dict (or IVFPQSettings), got {type(d).__name__}")
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            names = ", ".join(f.name for f in fields(cls))
            raise InputError(f"unknown ivfpq setting(s) {', '.join(sorted(unknown))}; the settings are {names}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def code_bytes(self, dim: int) -> int:
        """Sub-quantisers for ``dim``: the setting, or the largest divisor of ``dim`` up to ``dim / 8``."""
        if self.m:
            if dim % self.m:
                raise InputError(f"ivfpq setting m={self.m} must divide the dimension {dim}")
            return self.m
        return max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)

    def lists(self, n: int) -> int:
        if self.nlist:
            return self.nlist
        return int(min(65_536, max(16, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(n, 1))))))))

    def probes(self, nlist: int) -> int:
        return min(nlist, self.nprobe or max(8, min(512, nlist // 16)))

    def training_rows(self, n: int) -> int:
        return max(self.train_size, 40 * self.lists(n))

    def training_minimum(self, n: int) -> int:
        """The fewest vectors training takes for a collection of ``n``: a centroid each for the lists and
        for the codes of a sub-quantiser."""
        return max(self.lists(n), 2**self.nbits)

    def trainable(self, n: int, expected: int | None = None) -> bool:
        """Whether ``n`` vectors (of a collection of about ``expected``) are enough to train on: at least
        ``train_size`` and at least :meth:`training_minimum`."""
        return n >= max(self.train_size, self.training_minimum(max(n, expected or 0)))


class VectorStore:
    """Unit vectors with int64 ids in FAISS.

    Parameters
    ----------
    dim : vector dimension.
    structure : ``"flat"``, ``"hnsw"`` or ``"ivfpq"`` to start with (``ivfpq`` starts flat and is trained
        by :meth:`rebuild` or :meth:`train`, which the index calls once it holds enough vectors).
    hnsw, ivfpq : the settings of those structures.
    """

    def __init__(
        self, dim: int, structure: str = "flat", hnsw: HNSWSettings | None = None, ivfpq: IVFPQSettings | None = None
    ) -> None:
        self.dim = dim
        self.hnsw = hnsw or HNSWSettings()
        self.ivfpq = ivfpq or IVFPQSettings()
        self.removed: set[int] = set()  # ids still in an HNSW graph but deleted
        self.raw: RawVectors | None = None  # the exact vectors of an IVF-PQ structure, on disk
        self._index = self._new("hnsw" if structure == "hnsw" else "flat")

    # -- structure ----------------------------------------------------------------------------------
    def _new(self, structure: str) -> Any:
        faiss = _faiss()
        if structure == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.hnsw.ef_construction
            inner.hnsw.efSearch = self.hnsw.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @property
    def is_ivf(self) -> bool:
        return isinstance(self._index, _faiss().IndexIVF)

    @property
    def structure(self) -> str:
        if self.is_ivf:
            return "ivfpq"
        inner = _faiss().downcast_index(self._index.index)
        return "hnsw" if "HNSW" in type(inner).__name__ else "flat"

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstoned ones included."""
        return int(self._index.ntotal)

    def train(self, sample: np.ndarray, expected: int) -> None:
        """Make this an empty IVF-PQ structure trained on ``sample`` (rows of unit vectors) for a collection
        of about ``expected`` vectors. The store must be empty."""
        if self.ntotal:
            raise InputError("train() needs an empty store; use rebuild('ivfpq')")
        self._become_ivfpq(self._trained(sample, expected))

    def _become_ivfpq(self, index: Any) -> None:
        self._index = index
        self.removed.clear()
        self.raw = RawVectors(self.dim) if self.ivfpq.refine else None

    def _trained(self, sample: np.ndarray, expected: int) -> Any:
        """An empty IVF-PQ structure trained on ``sample`` for a collection of about ``expected`` vectors;
        nothing in the store changes (a sample too small to train on raises first)."""
        faiss = _faiss()
        s = self.ivfpq
        nlist, m = s.lists(expected), s.code_bytes(self.dim)
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        cap = s.training_rows(expected)
        if len(sample) > cap:
            rng = np.random.default_rng(s.seed)
            sample = sample[np.sort(rng.choice(len(sample), size=cap, replace=False))]
        if len(sample) < max(nlist, 2**s.nbits):
            raise InputError(
                f"IVF-PQ training needs at least {max(nlist, 2**s.nbits)} vectors (nlist={nlist}, "
                f"2**nbits={2**s.nbits}), got {len(sample)}"
            )
        quantizer = faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, s.nbits, faiss.METRIC_L2)
        index.cp.seed = s.seed
        index.pq.cp.seed = s.seed
        index.cp.verbose = index.pq.cp.verbose = False
        _quiet_training(index)
        index.train(sample)
        return index

    def rebuild(self, structure: str, expected: int | None = None) -> None:
        """Move every live vector into a new ``structure`` (dropping tombstones). Moving to ``ivfpq`` trains
        it on a sample of them; an IVF-PQ store retrains from its vectors on disk."""
        if structure == "ivfpq":
            self._rebuild_ivfpq(expected)
            return
        ids, vecs = self.all_vectors()
        keep = ~np.isin(ids, np.fromiter(self.removed, dtype=np.int64, count=len(self.removed)))
        self._index = self._new(structure)
        self.raw = None
        if keep.any():
            self._index.add_with_ids(vecs[keep], ids[keep])
        self.removed.clear()

    def _rebuild_ivfpq(self, expected: int | None) -> None:
        """Train (again) and move every live vector in; the structure is trained before anything in the store
        changes, so a failed training leaves it as it was."""
        if self.is_ivf:
            if self.raw is None:
                raise InputError("this IVF-PQ index keeps no vectors (refine=0), so it cannot be retrained")
            old = self.raw
            n = old.live
            rng = np.random.default_rng(self.ivfpq.seed)
            take = np.sort(rng.choice(old.rows, size=min(old.rows, self.ivfpq.training_rows(n)), replace=False))
            take = take[old.pos_ids[take] >= 0]
            self._become_ivfpq(self._trained(old.read(take), max(n, expected or 0)))
            for ids, vecs in old.iter_live():
                self.add(vecs, ids)
            return
        ids, vecs = self.all_vectors()
        keep = ~np.isin(ids, np.fromiter(self.removed, dtype=np.int64, count=len(self.removed)))
        ids, vecs = ids[keep], vecs[keep]
        self._become_ivfpq(self._trained(vecs, max(len(ids), expected or 0)))
        for start in range(0, len(ids), 65_536):
            self.add(vecs[start : start + 65_536], ids[start : start + 65_536])

    # -- writing ------------------------------------------------------------------------------------
    def add(self, E: np.ndarray, ids: np.ndarray) -> None:
        E = np.ascontiguousarray(E, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        self._index.add_with_ids(E, ids)
        if self.raw is not None:
            self.raw.add(E, ids)

    def remove(self, ids: list[int]) -> None:
        if self.structure == "hnsw":
            self.removed.update(ids)
            return
        arr = np.asarray(ids, dtype=np.int64)
        if self.is_ivf:
            self._index.remove_ids(_faiss().IDSelectorBatch(arr))
            if self.raw is not None:
                self.raw.remove(arr)
        else:
            self._index.remove_ids(arr)

    # -- reading ------------------------------------------------------------------------------------
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored id and vector, tombstones included: shapes (n,) and (n, dim)."""
        if self.is_ivf:
            if self.raw is None:
                raise InputError("this IVF-PQ index keeps no vectors (refine=0); they cannot be read back")
            parts = list(self.raw.iter_live())
            if not parts:
                return np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32)
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        faiss = _faiss()
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if not len(ids):
            return ids, np.empty((0, self.dim), dtype=np.float32)
        vecs = self._index.index.reconstruct_n(0, self._index.ntotal)
        return ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of ``ids`` (all present), shape (len(ids), dim)."""
        if self.is_ivf:
            return self.raw.vectors_of(np.asarray(ids, dtype=np.int64))
        return np.vstack([self._index.reconstruct(int(i)) for i in ids])

    def search(self, Q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product: ``D, I`` of shape (n_queries, k), padded with -inf / -1.

        ``allowed`` (sorted ids) restricts the search; small sets are searched exactly over their vectors.
        """
        nq = len(Q)
        D = np.full((nq, k), -np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        if self._index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return D, I
        exact_ok = not self.is_ivf or self.raw is not None
        if allowed is None and self.removed and not self.is_ivf and len(self.removed) > self._index.ntotal // 2:
            # mostly tombstones: a graph search finds few live items among them, so search the live ones
            ids = _faiss().vector_to_array(self._index.id_map).astype(np.int64)
            allowed = np.sort(ids[~np.isin(ids, np.fromiter(self.removed, dtype=np.int64, count=len(self.removed)))])
            if len(allowed) == 0:
                return D, I
        if allowed is not None and len(allowed) <= EXACT_FILTER_LIMIT and exact_ok:
            S = Q @ self.vectors_of(allowed).T
            kk = min(k, len(allowed))
            top = np.argsort(-S, axis=1, kind="stable")[:, :kk]
            D[:, :kk] = np.take_along_axis(S, top, axis=1)
            I[:, :kk] = allowed[top]
            return D, I
        if self.is_ivf:
            return self._search_ivf(Q, k, allowed, D, I)
        faiss = _faiss()
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
        elif self.removed:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.removed, dtype=np.int64)))
        kk = min(k, self._index.ntotal)
        if self.structure == "hnsw":
            # a filter or tombstones hide part of the graph: widen the search in proportion, as IVF widens
            # its probe, so that k hits are still found among the items it keeps
            kept = len(allowed) if allowed is not None else self._index.ntotal - len(self.removed)
            widen = self._index.ntotal / max(1, kept)
            ef = min(self._index.ntotal, math.ceil(max(self.hnsw.ef_search, kk) * widen))
            params = faiss.SearchParametersHNSW(efSearch=max(ef, kk))
            if sel is not None:
                params.sel = sel
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        d, i = self._index.search(Q, kk, params=params)
        D[:, :kk], I[:, :kk] = d, i
        D[I < 0] = -np.inf
        return D, I

    def _search_ivf(
        self, Q: np.ndarray, k: int, allowed: np.ndarray | None, D: np.ndarray, I: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates, re-ranked by their exact vectors. A filter widens the probe in proportion to
        how few items it keeps (all lists when no exact vectors are kept and it is small)."""
        faiss = _faiss()
        s = self.ivfpq
        index = self._index
        nprobe = s.probes(index.nlist)
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
            share = len(allowed) / max(1, index.ntotal)
            nprobe = index.nlist if len(allowed) <= EXACT_FILTER_LIMIT else min(index.nlist, math.ceil(nprobe / share))
        rerank = self.raw is not None and s.refine > 0
        kk = min(k * (s.refine if rerank else 1), index.ntotal)
        params = faiss.SearchParametersIVF(nprobe=int(nprobe), sel=sel) if sel is not None else None
        if params is None:
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        d, cand = index.search(np.ascontiguousarray(Q, dtype=np.float32), kk, params=params)
        if not rerank:
            n = min(k, kk)
            D[:, :n] = 1.0 - d[:, :n] / 2.0
            I[:, :n] = cand[:, :n]
            D[I < 0] = -np.inf
            return D, I
        for start in range(0, len(Q), 256):  # bounded memory however many queries
            part = slice(start, start + 256)
            D[part], I[part] = self._rerank(Q[part], cand[part], k)
        return D, I

    def _rerank(self, Q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of each query's candidate ids by exact cosine with their stored vectors."""
        pos = np.full(cand.shape, -1, dtype=np.int64)
        valid = cand >= 0
        pos[valid] = self.raw.positions(cand[valid])
        valid &= pos >= 0
        uniq, inverse = np.unique(pos[valid], return_inverse=True)
        V = self.raw.read(uniq)
        S = np.full(cand.shape, -np.inf, dtype=np.float32)
        rows = np.nonzero(valid)[0]
        S[valid] = np.einsum("ij,ij->i", V[inverse], Q[rows])
        D = np.full((len(Q), k), -np.inf, dtype=np.float32)
        I = np.full((len(Q), k), -1, dtype=np.int64)
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]
        n = order.shape[1]
        D[:, :n] = np.take_along_axis(S, order, axis=1)
        I[:, :n] = np.take_along_axis(cand, order, axis=1)
        I[~np.isfinite(D)] = -1
        D[I < 0] = -np.inf
        return D, I

    # -- bytes --------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return _faiss().serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        dim: int,
        hnsw: HNSWSettings,
        removed: set[int],
        where: str,
        ivfpq: IVFPQSettings | None = None,
        raw: RawVectors | None = None,
    ) -> VectorStore:
        faiss = _faiss()
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise CorruptFileError(f"{where}: the FAISS file cannot be read ({exc})") from exc
        if index.d != dim:
            raise CorruptFileError(f"{where}: the FAISS index has dimension {index.d}, the manifest says {dim}")
        store = cls.__new__(cls)
        store.dim, store.hnsw, store.removed, store._index = dim, hnsw, set(removed), index
        store.ivfpq = ivfpq or IVFPQSettings()
        store.raw = raw
        if store.is_ivf:
            if raw is not None and raw.live != store.ntotal:
                raise CorruptFileError(
                    f"{where}: the IVF-PQ index holds {store.ntotal} vectors but its vector files {raw.live}"
                )
        return store


def _quiet_training(index: Any) -> None:
    """k-means warns on stderr (whatever ``verbose`` says) when it has under ``min_points_per_centroid``
    points a centroid; the sizes are checked above, and that setting serves that warning alone."""
    try:
        index.cp.verbose = False
        index.pq.verbose = False
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
    except AttributeError:  # pragma: no cover - older FAISS
        pass
