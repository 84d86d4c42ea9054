"""k nearest support examples, similarity-weighted vote (Cover & Hart 1967; cosine on normalised vectors)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fewshot.heads.base import BaseHead
from fewshot.params import POSITIVE, POSITIVE_INT


class KNNHead(BaseHead):
    """Vote of the ``k`` most similar support examples, each weighted by ``exp((cos - 1) / temperature)``
    (times its sample weight).

    The support vectors live in an exact FAISS inner-product index, so adding examples is an append. ``k``
    adapts to the data: it never exceeds the number of examples of the smallest class, so a class with few
    examples is not outvoted merely for being small.

    Parameters
    ----------
    k : neighbours to consult (upper bound; see above).
    temperature : how sharply the vote favours the closest neighbours; small values approach 1-NN.

    Attributes
    ----------
    classes_ : array of shape (n_classes,)
    support_ : array of shape (n_support, dim), the unit-norm support vectors; ``codes_`` their classes.
    k_ : the number of neighbours actually used.
    """

    name = "knn"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"k": [POSITIVE_INT], "temperature": [POSITIVE]}
    score_bounds: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def __init__(self, k: int = 10, temperature: float = 0.05) -> None:
        self.k = k
        self.temperature = temperature

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.support_ = np.empty((0, E.shape[1]), dtype=np.float32)
        self.codes_ = np.empty(0, dtype=np.int64)
        self.weights_ = np.empty(0, dtype=np.float64)
        self._index = _flat_index(E.shape[1])
        self._partial_fit(E, codes, w)

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        E = np.ascontiguousarray(E, dtype=np.float32)
        self.support_ = np.vstack([self.support_, E])
        self.codes_ = np.concatenate([self.codes_, codes.astype(np.int64)])
        self.weights_ = np.concatenate([self.weights_, np.ones(len(E)) if w is None else w])
        self._index.add(E)
        counts = np.bincount(self.codes_, minlength=len(self.classes_))
        self.k_ = int(max(1, min(self.k, counts[counts > 0].min())))

    def class_scores(self, E: Any) -> np.ndarray:
        """Share of the similarity-weighted vote each class received; shape (n_samples, n_classes)."""
        E = self._check_input(E)
        D, I = self._index.search(E, min(self.k_, len(self.codes_)))
        valid = I >= 0
        idx = np.where(valid, I, 0)
        weights = np.where(valid, np.exp((np.where(valid, D, 0.0) - 1.0) / self.temperature), 0.0)
        weights = weights * self.weights_[idx]
        votes = np.zeros((len(E), len(self.classes_)), dtype=np.float64)
        rows = np.repeat(np.arange(len(E)), I.shape[1]).reshape(I.shape)
        np.add.at(votes, (rows[valid], self.codes_[idx[valid]]), weights[valid])
        # a zero vector (a text a static model has no token for) ties with every example: FAISS would hand
        # back the first k, and their class would win the whole vote; it is similar to nothing, so no class
        votes[~E.any(axis=1)] = 1.0
        total = votes.sum(axis=1, keepdims=True)
        return votes / np.where(total > 0, total, 1.0)

    def predict_proba(self, E: Any) -> np.ndarray:
        """The vote shares themselves."""
        return self.class_scores(E)

    def log_proba(self, S: np.ndarray) -> np.ndarray:
        """Vote shares are already probabilities; their log, floored so an unvoted class stays finite."""
        return np.log(np.clip(S, 1e-6, None))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"support": self.support_, "codes": self.codes_, "weights": self.weights_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        support = np.asarray(arrays["support"], dtype=np.float32)
        w = arrays.get("weights")
        self._fit(support, np.asarray(arrays["codes"], dtype=np.int64), None if w is None else np.asarray(w))

    # the FAISS index is rebuilt from support_ on the other side of a pickle
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_index", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "support_" in state:
            self._index = _flat_index(self.support_.shape[1])
            self._index.add(self.support_)


def _flat_index(dim: int) -> Any:
    import faiss

    return faiss.IndexFlatIP(dim)
