"""Nearest class mean on normalised embeddings (prototypical networks without training).

Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017; the optional centring follows
Wang et al., "SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning", 2019, with the
mean of the support embeddings standing in for the base-class mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.heads.base import BaseHead, l2_normalize


class PrototypeHead(BaseHead):
    """Cosine similarity to the mean embedding of each class.

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

    def __init__(self, center: bool = False, temperature: float = 0.05) -> None:
        self.center = center
        self.temperature = temperature

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        d = E.shape[1]
        self.sums_ = np.zeros((len(self.classes_), d), dtype=np.float64)
        self.counts_ = np.zeros(len(self.classes_), dtype=np.float64)
        self._accumulate(E, codes, w)

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        grow = len(self.classes_) - len(self.counts_)
        if grow:
            self.sums_ = np.vstack([self.sums_, np.zeros((grow, self.sums_.shape[1]))])
            self.counts_ = np.concatenate([self.counts_, np.zeros(grow)])
        self._accumulate(E, codes, w)

    def _accumulate(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        w = np.ones(len(E)) if w is None else w
        np.add.at(self.sums_, codes, E.astype(np.float64) * w[:, None])
        np.add.at(self.counts_, codes, w)
        self._update()

    def _update(self) -> None:
        means = self.sums_ / np.maximum(self.counts_, 1e-12)[:, None]
        # the centre is the mean over examples (not over classes), so it is the support mean
        self.mean_ = self.sums_.sum(axis=0) / max(self.counts_.sum(), 1e-12) if self.center else None
        if self.center:
            means = means - self.mean_
        self.centroids_ = l2_normalize(means)

    def decision_function(self, E: Any) -> np.ndarray:
        E = self._check_input(E)
        if self.center:
            E = l2_normalize(E - self.mean_.astype(np.float32))
        return E @ self.centroids_.T

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums_, "counts": self.counts_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.sums_ = np.asarray(arrays["sums"], dtype=np.float64)
        self.counts_ = np.asarray(arrays["counts"], dtype=np.float64)
        self._update()
