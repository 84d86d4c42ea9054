"""Nearest class mean on normalised embeddings (prototypical networks without training).

Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017; the optional centring follows
Wang et al., "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning", 2019, with the
mean of the support embeddings standing in for the base-class mean.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fewshot._validate import as_labels
from fewshot.heads.base import BaseHead
from fewshot.labels import encode_labels
from fewshot.maths import class_sums, l2_normalize, loo_mean_cosines
from fewshot.params import POSITIVE


class PrototypeHead(BaseHead):
    """Cosine similarity to the (weighted) mean embedding of each class.

    Parameters
    ----------
    center : subtract the mean of all support embeddings before comparing (SimpleShot's centring). It
        removes the direction every embedding shares, which sharpens small differences between classes.
    temperature : softmax temperature on the cosine scores for ``predict_proba``.

    Attributes
    ----------
    classes_ : array of shape (n_classes,)
    centroids_ : array of shape (n_classes, dim), unit-norm class directions (after centring, if on).
    counts_ : array of shape (n_classes,), the (weighted) number of examples behind each centroid.
    """

    name = "prototype"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"center": [bool], "temperature": [POSITIVE]}
    score_bounds: ClassVar[tuple[float, float] | None] = (-1.0, 1.0)

    def __init__(self, center: bool = False, temperature: float = 0.05) -> None:
        self.center = center
        self.temperature = temperature

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.sums_ = np.zeros((len(self.classes_), E.shape[1]), dtype=np.float64)
        self.counts_ = np.zeros(len(self.classes_), dtype=np.float64)
        self._accumulate(E, codes, w)

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        grow = len(self.classes_) - len(self.counts_)
        if grow:
            self.sums_ = np.vstack([self.sums_, np.zeros((grow, self.sums_.shape[1]))])
            self.counts_ = np.concatenate([self.counts_, np.zeros(grow)])
        self._accumulate(E, codes, w)

    def _accumulate(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.sums_ += class_sums(E, codes, len(self.classes_), w)
        self.counts_ += np.bincount(codes, weights=w, minlength=len(self.classes_))
        self._update()

    def _update(self) -> None:
        means = self.sums_ / np.maximum(self.counts_, 1e-12)[:, None]
        # the centre is the mean over examples (not over classes), so it is the support mean
        self.mean_ = self.sums_.sum(axis=0) / max(self.counts_.sum(), 1e-12) if self.center else None
        if self.center:
            means = means - self.mean_
        self.centroids_ = l2_normalize(means)

    def class_scores(self, E: Any) -> np.ndarray:
        """Cosine to each class mean, shape (n_samples, n_classes)."""
        E = self._check_input(E).astype(np.float64)  # float64: a row's scores never depend on its batch
        if self.center:
            E = E - self.mean_
            E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        return E @ self.centroids_.astype(np.float64).T

    def held_out_scores(self, E: Any, y: Any, folds: int = 5, seed: int = 0, **fit_kw: Any) -> np.ndarray | None:
        """Exact leave-one-out cosines in closed form for plain class means; k-fold refits with centring
        (the centre moves with every held-out example)."""
        if self.center:
            return super().held_out_scores(E, y, folds, seed)
        E = self._check_input(E)
        codes = encode_labels(as_labels(y, len(E)), self.classes_)
        if np.bincount(codes, minlength=len(self.classes_)).min() < 2:
            return None
        onehot = np.eye(len(self.classes_))[codes]
        E64 = E.astype(np.float64)
        return loo_mean_cosines(E64, E64, onehot, codes)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums_, "counts": self.counts_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.sums_ = np.asarray(arrays["sums"], dtype=np.float64)
        self.counts_ = np.asarray(arrays["counts"], dtype=np.float64)
        self._update()
