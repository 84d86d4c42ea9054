"""The estimator contract every head follows, and what the heads share.

A head is a scikit-learn classifier on embeddings: ``fit(E, y)`` returns self, fitted attributes end in
``_``, ``predict_proba`` has one column per entry of ``classes_`` (in that order) and rows that sum to 1,
``decision_function`` follows scikit-learn's convention (shape (n,) for two classes, positive for
``classes_[1]``), and labels may be any hashable scalars of one type. Heads never see raw text or pixels.

Beyond scikit-learn, every head gives:

- ``class_scores(E)``: its native score for every class, shape (n, n_classes) (a cosine for class means,
  a vote share for kNN, a logit for the linear head); abstention thresholds are set on these;
- ``held_out_scores(E, y)``: the scores of each training example from a head that did not see it (exact
  leave-one-out where the head has a closed form, stratified k-fold refits otherwise), for calibration;
- ``log_proba(S)``: log-probabilities from class scores, so calibration needs no knowledge of the head;
- ``get_state`` / ``from_state``: a JSON-able dict plus named numpy arrays, never a pickle.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import validate_data

from fewshot._validate import as_labels, json_label
from fewshot.errors import CorruptFileError, DimensionError, InputError, InputTypeError, NotFittedError
from fewshot.labels import encode_labels, merge_classes, ordered_classes
from fewshot.maths import l2_normalize, log_softmax
from fewshot.params import validate_params

__all__ = ["BaseHead", "check_sample_weight"]


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as a float64 array of shape (n,): finite, non-negative, not all zero; None stays None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64) if not np.isscalar(sample_weight) else None
    if w is None:
        w = np.full(n, float(sample_weight))
    if w.ndim != 1 or len(w) != n:
        raise InputError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputError("sample_weight must hold finite, non-negative numbers")
    if not w.any():
        raise InputError("sample_weight is zero for every example; nothing to fit")
    return w


class BaseHead(ClassifierMixin, BaseEstimator):
    """Base of the heads: label bookkeeping, input checks, probabilities, predict and persistence.

    Subclasses implement ``_fit(E, codes, w)`` (``codes`` index into ``classes_``; ``w`` the sample weights
    or None), ``_partial_fit``, ``class_scores`` and the state hooks ``_arrays`` / ``_set_arrays``, and
    list their parameters' constraints in ``_parameter_constraints``.
    """

    name: ClassVar[str] = "base"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}
    accepts_prior: ClassVar[bool] = False  # fit and scores take zero-shot prior scores (``prior=``)
    score_bounds: ClassVar[tuple[float, float] | None] = None  # where class_scores lie, when they are bounded

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> BaseHead:
        """Fit on embeddings.

        Parameters
        ----------
        E : array of shape (n_samples, dim), embeddings (normalised here if they are not).
        y : array-like of shape (n_samples,), labels of one hashable scalar type.
        sample_weight : optional array of shape (n_samples,): each example counts this many times.
        classes : optional order for ``classes_`` (sorted labels by default); it must list exactly the
            labels present in ``y``.
        """
        validate_params(self)
        E, y = self._check_fit_input(E, y)
        w = check_sample_weight(sample_weight, len(E))
        self.classes_ = ordered_classes(y, classes)
        if len(self.classes_) < 2 and not self._allows_one_class():
            only = self.classes_.tolist()[0]
            raise InputError(f"only one class ({only!r}) in the training labels; a classifier needs at least two")
        self._fit(E, encode_labels(y, self.classes_), w)
        return self

    def partial_fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> BaseHead:
        """Add examples, possibly of classes never seen before, without refitting from scratch.

        New classes are appended to ``classes_``, so existing probability columns keep their place. On the
        first call ``classes`` may fix the column order (every class listed needs an example).
        """
        if not hasattr(self, "classes_"):
            if classes is not None:
                missing = sorted(set(np.asarray(classes).tolist()) - set(np.asarray(y).tolist()), key=str)
                if missing:
                    raise InputError(f"classes {missing[:5]} have no example in y; every class needs one")
            return self.fit(E, y, sample_weight, classes=classes)
        E = self._check_input(E)
        y = as_labels(y, len(E))
        if classes is not None and set(np.asarray(classes).tolist()) != set(merge_classes(self.classes_, y).tolist()):
            raise InputError("classes differs from the classes seen so far and the labels of y")
        w = check_sample_weight(sample_weight, len(E))
        self.classes_ = merge_classes(self.classes_, y)
        self._partial_fit(E, encode_labels(y, self.classes_), w)
        return self

    def _allows_one_class(self) -> bool:
        return False

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        raise NotImplementedError

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        raise NotImplementedError

    # -- input checks -------------------------------------------------------------------------------
    def _check_fit_input(self, E: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        try:
            E = validate_data(self, E, reset=True, dtype=[np.float64, np.float32], ensure_min_samples=1)
        except TypeError as exc:
            raise InputTypeError(str(exc)) from exc
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        return l2_normalize(E), as_labels(y, len(E))

    def _check_input(self, E: Any) -> np.ndarray:
        """Check a fitted head's input: a 2-d finite numeric array with ``n_features_in_`` columns."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(E, y) first")
        try:
            E = validate_data(self, E, reset=False, dtype=[np.float64, np.float32])
        except TypeError as exc:
            raise InputTypeError(str(exc)) from exc
        except ValueError as exc:
            if "features, but" in str(exc):
                raise DimensionError(str(exc)) from exc
            raise InputError(str(exc)) from exc
        return l2_normalize(E)

    # -- prediction ---------------------------------------------------------------------------------
    def class_scores(self, E: Any) -> np.ndarray:
        """The head's score for every class, array of shape (n_samples, n_classes), columns in ``classes_``
        order (cosines for the class-mean heads, vote shares for kNN, logits for the linear head)."""
        raise NotImplementedError

    def decision_function(self, E: Any) -> np.ndarray:
        """Scikit-learn's decision function: shape (n_samples, n_classes), or (n_samples,) with two classes
        (``class_scores`` of ``classes_[1]`` minus that of ``classes_[0]``: positive means ``classes_[1]``)."""
        return _sklearn_decision(self.class_scores(E))

    def predict_proba(self, E: Any) -> np.ndarray:
        """Class probabilities, array of shape (n_samples, n_classes); rows sum to 1."""
        return np.exp(self.log_proba(self.class_scores(E)))

    def predict(self, E: Any) -> np.ndarray:
        """The best class for each row, array of shape (n_samples,) of ``classes_``'s dtype."""
        S = self.class_scores(E)  # checks the head is fitted first
        return self.classes_[np.argmax(S, axis=1)]

    def log_proba(self, S: np.ndarray) -> np.ndarray:
        """Log-probabilities from class scores ``S`` of shape (n, n_classes): a softmax at ``temperature``."""
        return log_softmax(S, self.temperature)

    # -- held-out scores (calibration) ---------------------------------------------------------------
    def held_out_scores(self, E: Any, y: Any, folds: int = 5, seed: int = 0, **fit_kw: Any) -> np.ndarray | None:
        """Class scores of every example of ``E`` from a copy of this head that did not see it.

        The head must be fitted (its ``classes_`` give the columns). The default refits clones on
        stratified folds; heads with a closed form override it. ``fit_kw`` holds per-example arrays the
        head's fit takes (the zero-shot prior), sliced with the folds. None when some class has a single
        example: nothing could be held out.
        """
        from sklearn.model_selection import StratifiedKFold

        E = self._check_input(E)
        codes = encode_labels(as_labels(y, len(E)), self.classes_)
        counts = np.bincount(codes, minlength=len(self.classes_))
        if counts.min() < 2:
            return None
        template = self._held_out_template()
        kw = fit_kw if self.accepts_prior else {}
        S = np.zeros((len(E), len(self.classes_)))
        cv = StratifiedKFold(n_splits=int(min(folds, counts.min())), shuffle=True, random_state=seed)
        for train, test in cv.split(E, codes):
            part = clone(template).fit(
                E[train], self.classes_[codes[train]], classes=self.classes_, **{k: v[train] for k, v in kw.items()}
            )
            S[test] = part.class_scores(E[test], **{k: v[test] for k, v in kw.items()})
        return S

    def _held_out_template(self) -> BaseHead:
        """The unfitted head the folds refit (settings chosen on all data may be fixed here)."""
        return clone(self)

    # -- persistence --------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A JSON-serialisable description and the named arrays that recreate this fitted head."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted; nothing to save")
        config = {
            "head": self.name,
            "params": self._saved_params(),
            "classes": [json_label(c) for c in self.classes_.tolist()],
            "n_features_in": int(self.n_features_in_),
        }
        return config, self._arrays()

    def _saved_params(self) -> dict[str, Any]:
        return self.get_params(deep=False)

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
        head = cls(**config["params"])
        try:  # a temperature of 0 or a negative k would fail later, inside a prediction, or answer NaN
            validate_params(head)
        except InputError as exc:
            raise CorruptFileError(f"the saved {head.name} head's settings are not valid: {exc}") from exc
        head.classes_ = np.asarray(config["classes"])
        head.n_features_in_ = int(config["n_features_in"])
        head._set_arrays(arrays)
        head._check_loaded()
        return head

    def _check_loaded(self) -> None:
        """Refuse a loaded state whose parts disagree (class codes past the classes, arrays of another width):
        a save altered with its checksums made again would otherwise fail later, inside a prediction."""
        n = len(self.classes_)
        codes = getattr(self, "codes_", None)
        if codes is not None and len(codes) and (int(np.min(codes)) < 0 or int(np.max(codes)) >= n):
            raise CorruptFileError(f"the saved {self.name} head has class codes outside its {n} classes")
        inner = getattr(self, "head_", self)
        kw = {"prior": np.zeros((1, n))} if getattr(inner, "uses_prior_", False) else {}
        try:
            probe = np.zeros((1, self.n_features_in_))
            probe[0, 0] = 1.0
            S = self.class_scores(probe, **kw)
        except Exception as exc:  # whatever the disagreement makes numpy, FAISS or the head raise
            raise CorruptFileError(f"the saved {self.name} head cannot score ({type(exc).__name__}: {exc})") from exc
        if np.shape(S) != (1, n):
            raise CorruptFileError(f"the saved {self.name} head gives {np.shape(S)[-1]} scores for {n} classes")
        # NaN or infinity among its numbers: inputs would score NaN for a class, or drop a neighbour unseen
        arrays = self._arrays()
        if not np.isfinite(S).all() or any(
            v.dtype.kind == "f" and not np.isfinite(v).all() for v in map(np.asarray, arrays.values())
        ):
            raise CorruptFileError(f"the saved {self.name} head holds values that are not finite numbers")

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags


def _sklearn_decision(S: np.ndarray) -> np.ndarray:
    if S.shape[1] == 2:
        return S[:, 1] - S[:, 0]
    return S


def changed_params(head: BaseHead) -> dict[str, Any]:
    """The parameters ``head`` sets away from its class's defaults."""
    defaults = type(head)().get_params(deep=False)
    return {k: v for k, v in head.get_params(deep=False).items() if defaults.get(k) != v}


def describe_head(head: BaseHead) -> str:
    """A head's name with the parameters it sets away from their defaults: ``prototype(center=True)``."""
    changed = changed_params(head)
    if not changed:
        return head.name
    return f"{head.name}({', '.join(f'{k}={v!r}' for k, v in sorted(changed.items()))})"


def as_probabilities(P: np.ndarray) -> np.ndarray:
    """Probabilities of shape (n, C) clipped away from 0 and renormalised (for logs of vote shares)."""
    P = np.clip(np.asarray(P, dtype=np.float64), 1e-12, None)
    return P / P.sum(axis=1, keepdims=True)
