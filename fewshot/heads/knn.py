"""k nearest support examples, similarity-weighted vote (Cover & Hart 1967; cosine on normalised vectors)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.heads.base import BaseHead


class KNNHead(BaseHead):
    """Vote of the ``k`` most similar support examples, each weighted by ``exp((cos - 1) / temperature)``.

    The support examples live in an exact :class:`~fewshot.EmbeddingIndex` (FAISS), so adding examples
    is an append. ``k`` adapts to the data: it never exceeds the number of examples of the smallest class,
    so a class with few examples is not outvoted merely for being small.

    Parameters
    ----------
    k : neighbours to consult (upper bound; see above).
    temperature : how sharply the vote favours the closest neighbours; small values approach 1-NN.

    Attributes
    ----------
    classes_ : array of shape (n_classes,)
    k_ : the number of neighbours actually used.
    """

    name = "knn"

    def __init__(self, k: int = 10, temperature: float = 0.05) -> None:
        self.k = k
        self.temperature = temperature

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        from fewshot.index import EmbeddingIndex

        self.index_ = EmbeddingIndex(dim=E.shape[1], kind="flat")
        self.codes_ = np.empty(0, dtype=np.int64)
        self._partial_fit(E, codes, w)

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        start = len(self.codes_)
        self.index_.add_embeddings(E, ids=np.arange(start, start + len(E)))
        self.codes_ = np.concatenate([self.codes_, codes.astype(np.int64)])
        counts = np.bincount(self.codes_, minlength=len(self.classes_))
        self.k_ = int(max(1, min(self.k, counts[counts > 0].min())))

    def _vote(self, E: Any) -> np.ndarray:
        E = self._check_input(E)
        D, I = self.index_.search_embeddings(E, k=self.k_)
        votes = np.zeros((len(E), len(self.classes_)), dtype=np.float64)
        valid = I >= 0
        weights = np.where(valid, np.exp((np.where(valid, D, 0.0) - 1.0) / self.temperature), 0.0)
        rows = np.repeat(np.arange(len(E)), I.shape[1])
        np.add.at(votes, (rows[valid.ravel()], self.codes_[I[valid]]), weights[valid])
        return votes

    def predict_proba(self, E: Any) -> np.ndarray:
        votes = self._vote(E)
        total = votes.sum(axis=1, keepdims=True)
        return votes / np.where(total > 0, total, 1.0)

    def decision_function(self, E: Any) -> np.ndarray:
        """Share of the similarity-weighted vote each class received; shape (n_samples, n_classes)."""
        return self.predict_proba(E)

    def _arrays(self) -> dict[str, np.ndarray]:
        ids, vecs = self.index_._all_vectors()
        order = np.argsort(ids)
        return {"support": vecs[order], "codes": self.codes_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._fit(np.asarray(arrays["support"], dtype=np.float32), np.asarray(arrays["codes"], dtype=np.int64), None)
