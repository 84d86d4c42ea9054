"""Shared maths and the estimator contract every head follows.

A head is a scikit-learn classifier on embeddings: ``fit(E, y)`` returns self, fitted attributes end in
``_``, ``predict_proba`` has one column per entry of ``classes_`` (in that order) and rows that sum to 1,
and labels may be any hashable scalars. Heads never see raw text or pixels. They save and load through
``get_state`` / ``from_state``: a JSON-able dict plus named numpy arrays, never a pickle.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from fewshot._validate import as_embeddings, as_labels, json_label, l2_normalize
from fewshot.errors import InputError, NotFittedError

__all__ = ["BaseHead", "softmax", "l2_normalize", "merge_classes"]


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature``; shape (n, C) in, (n, C) out, rows sum to 1."""
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def merge_classes(classes: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """``classes`` followed by the labels of ``y`` not yet in it (sorted); the first fit sorts them all."""
    if classes is None:
        return np.unique(y)
    known = set(classes.tolist())
    new = [c for c in np.unique(y).tolist() if c not in known]
    if not new:
        return classes
    return np.asarray(classes.tolist() + new)


class BaseHead(ClassifierMixin, BaseEstimator):
    """Base of the heads: label bookkeeping, input checks, probabilities, predict and persistence.

    Subclasses implement ``_fit(E, codes)`` (``codes`` index into ``classes_``), ``_partial_fit``,
    ``decision_function`` and the state hooks ``_arrays`` / ``_set_arrays``.
    """

    name: ClassVar[str] = "base"

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> BaseHead:
        """Fit on embeddings.

        Parameters
        ----------
        E : array of shape (n_samples, dim), embeddings (normalised here if they are not).
        y : array-like of shape (n_samples,), labels of any hashable scalar type.
        sample_weight : optional array of shape (n_samples,); heads that cannot use it ignore it.
        classes : optional order for ``classes_`` (sorted labels by default); it must list exactly the
            labels present in ``y``.
        """
        E = l2_normalize(as_embeddings(E))
        y = as_labels(y, len(E))
        if classes is None:
            self.classes_ = np.unique(y)
        else:
            self.classes_ = np.asarray(list(classes))
            if len(set(self.classes_.tolist())) != len(self.classes_) or set(self.classes_.tolist()) != set(y.tolist()):
                raise InputError("classes must list each label of y exactly once")
        if len(self.classes_) < 2 and not self._allows_one_class():
            raise InputError(
                f"only one class ({self.classes_[0]!r}) in the training labels; a classifier needs at least two"
            )
        self.n_features_in_ = E.shape[1]
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        codes = np.asarray([index[c] for c in y.tolist()], dtype=np.int64)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self._fit(E, codes, w)
        return self

    def partial_fit(self, E: Any, y: Any, sample_weight: Any = None) -> BaseHead:
        """Add examples, possibly of classes never seen before, without refitting from scratch.

        New classes are appended to ``classes_``, so existing probability columns keep their place.
        """
        if not hasattr(self, "classes_"):
            return self.fit(E, y, sample_weight)
        E = l2_normalize(as_embeddings(E, dim=self.n_features_in_))
        y = as_labels(y, len(E))
        self.classes_ = merge_classes(self.classes_, y)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        codes = np.asarray([index[c] for c in y.tolist()], dtype=np.int64)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self._partial_fit(E, codes, w)
        return self

    def _allows_one_class(self) -> bool:
        return False

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        raise NotImplementedError

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        raise NotImplementedError

    # -- prediction ---------------------------------------------------------------------------------
    def _check_input(self, E: Any) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(E, y) first")
        return l2_normalize(as_embeddings(E, dim=self.n_features_in_))

    def decision_function(self, E: Any) -> np.ndarray:
        """Class scores, array of shape (n_samples, n_classes), columns in ``classes_`` order."""
        raise NotImplementedError

    def predict_proba(self, E: Any) -> np.ndarray:
        """Class probabilities, array of shape (n_samples, n_classes); rows sum to 1."""
        return softmax(self.decision_function(E), self.temperature)

    def predict(self, E: Any) -> np.ndarray:
        """The most probable class for each row, array of shape (n_samples,)."""
        scores = self.decision_function(E)
        return self.classes_[np.argmax(scores, axis=1)]

    # -- persistence --------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A JSON-serialisable description and the named arrays that recreate this fitted head."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted; nothing to save")
        config = {
            "head": self.name,
            "params": self.get_params(deep=False),
            "classes": [json_label(c) for c in self.classes_.tolist()],
            "n_features_in": int(self.n_features_in_),
        }
        return config, self._arrays()

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
        head = cls(**config["params"])
        head.classes_ = np.asarray(config["classes"])
        head.n_features_in_ = int(config["n_features_in"])
        head._set_arrays(arrays)
        return head

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError
