"""What the few-shot and zero-shot classifiers share: scores, calibrated probabilities, abstention and
scoring on raw inputs, behind one readers-writer lock so that a fitted classifier serves many threads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from fewshot import calibration as cal
from fewshot._concurrency import RWLock
from fewshot._validate import as_labels, json_label
from fewshot.encoders import Encoder, TextEncoder
from fewshot.errors import CorruptFileError, InputError, NotFittedError, warn_user, warns_once
from fewshot.heads import BaseHead
from fewshot.heads.base import check_sample_weight
from fewshot.labels import encode_labels
from fewshot.maths import softmax

MIN_CALIBRATION_ROWS = 20  # in-scope validation rows under which fit_calibration warns
FIT_FAILED = "fit failed"  # a parameters key no parameters have: the state a failed fit leaves


def default_encoder(encoder: Encoder | None) -> Encoder:
    """``encoder``, or the bundled text model when None (loaded once per process, shared)."""
    if encoder is None:
        return TextEncoder()
    if not isinstance(encoder, Encoder):
        raise InputError(f"encoder must be a fewshot Encoder (e.g. TextEncoder()), got {type(encoder).__name__}")
    return encoder


class CalibratedClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated probabilities and abstention on top of an encoder and a fitted head.

    Subclasses provide ``_fitted_head()`` (the head, or NotFittedError), ``_head_inputs(X, show_progress)``
    (the embeddings the head scores and any extra inputs, such as the zero-shot prior) and ``encoder_``,
    and the ``calibrate``, ``abstain`` and ``abstain_label`` parameters; fitting sets ``temperature_``,
    ``threshold_`` and ``calibration_``.

    Predictions take a shared (read) lock and fitting or adding examples an exclusive (write) one, so a
    thread pool may predict while another thread adds examples, and no prediction sees half an update.
    """

    # -- locking ------------------------------------------------------------------------------------
    @property
    def _rw(self) -> RWLock:
        lock = self.__dict__.get("_rwlock")
        if lock is None:
            lock = self.__dict__.setdefault("_rwlock", RWLock())
        return lock

    # -- the parameters a fit used ------------------------------------------------------------------
    # A fit records a key of the parameters it used, and scoring with other parameters (set_params after
    # fit) is refused rather than answered from the old fit. The key holds the encoder's id, which a copy
    # (pickle, deepcopy, another process) does not keep: a copy carries whether the key matched the
    # parameters and takes its own key when it is made.
    def _params_key(self) -> str:
        params = self.get_params(deep=False)
        params["encoder"] = id(params["encoder"])  # cheap, and checked on every prediction
        return json.dumps({k: _as_key(v) for k, v in params.items()}, default=repr, sort_keys=True)

    def _mark_fitted(self, lazy: bool = False) -> None:
        """Record that the fitted state follows the current parameters (``lazy``: fitted implicitly)."""
        self._fitted_with = (self._params_key(), lazy)

    def _params_changed(self) -> bool:
        fitted = self.__dict__.get("_fitted_with")
        return fitted is not None and fitted[0] != self._params_key()

    def _params_changed_error(self) -> InputError:
        if self.__dict__.get("_fitted_with", ("",))[0] == FIT_FAILED:
            return InputError(f"the last fit of this {type(self).__name__} failed; call fit again")
        return InputError(f"the parameters of this {type(self).__name__} changed after fit; call fit again to use them")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object.__getstate__ hands out the live __dict__
        state.pop("_rwlock", None)
        fitted = state.get("_fitted_with")
        if fitted is not None:
            state["_fitted_with"] = (fitted[0] == self._params_key(), fitted[1])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fitted = state.pop("_fitted_with", None)
        super().__setstate__(state)
        if fitted is not None:
            current, lazy = fitted
            self._fitted_with = (self._params_key() if current else "", lazy)

    # -- fitted state -------------------------------------------------------------------------------
    def _fitted_head(self) -> BaseHead:
        raise NotImplementedError

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "head_")

    @property
    def classes_(self) -> np.ndarray:
        """The labels, sorted (as scikit-learn's classifiers keep them, and as its scorers and metrics assume),
        array of shape (n_classes,); the columns of scores and probabilities follow this order."""
        head = self._fitted_head()
        order = self._column_order(head)
        return head.classes_ if order is None else head.classes_[order]

    def _column_order(self, head: BaseHead) -> np.ndarray | None:
        """Where each of ``classes_`` sits among the head's columns (None: the same order). A head keeps its
        classes in the order it learned them: the labels as a zero-shot classifier was given them, classes
        added after a fit at the end."""
        classes = head.classes_
        cached = self.__dict__.get("_sorted_columns")  # (the head's classes it was made for, the order)
        if cached is not None and cached[0] is classes:
            return cached[1]
        try:
            order = np.argsort(classes, kind="stable")
        except TypeError:  # labels of mixed types, which sort no way (a model refuses them; a head may not)
            order = np.arange(len(classes))
        found = None if np.array_equal(order, np.arange(len(classes))) else order
        self.__dict__["_sorted_columns"] = (classes, found)
        return found

    def _in_class_order(self, S: np.ndarray) -> np.ndarray:
        """The head's columns ``S`` (n, n_classes) put in ``classes_`` order."""
        order = self._column_order(self._fitted_head())
        return S if order is None else S[:, order]

    # -- scores and predictions ---------------------------------------------------------------------
    def class_scores(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """The head's score for every class, array of shape (n_samples, n_classes), columns in ``classes_``
        order: cosine similarities for the prototype and zero-shot heads (a few-shot classifier that uses its
        lexical channel gives the pooled log-probabilities instead). Abstention thresholds apply to the best
        of these."""
        self._fitted_head()  # outside the read lock: a lazy zero-shot fit takes the write lock
        with self._rw.read():
            return self._scores(X, show_progress)

    def decision_function(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Scikit-learn's decision function: :meth:`class_scores`, or for two classes a vector of shape
        (n_samples,) that is positive where ``classes_[1]`` scores higher."""
        S = self.class_scores(X, show_progress)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict_proba(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Calibrated class probabilities, array of shape (n_samples, n_classes), columns in ``classes_``
        order. An abstaining classifier still gives every class a probability here."""
        self._fitted_head()
        with self._rw.read():
            return self._proba(self._scores(X, show_progress))

    def predict(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Predicted labels, shape (n_samples,), of the dtype of ``classes_`` (as scikit-learn's classifiers
        give them, so its metrics take them). With abstention on, ``abstain_label`` marks the inputs whose best
        score falls below ``threshold_``, and those on which every class scores the same; the array is then of
        the classes' dtype when ``abstain_label`` is of their kind, else of dtype object (``None``, the default,
        or a label of another type). The dtype depends on the settings, never on whether an input abstained."""
        return self._labels(self.class_scores(X, show_progress))

    def predict_with_scores(self, X: Any, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict``, the best class score each decision used (shape (n_samples,)), and ``predict_proba``,
        from one encoding pass."""
        self._fitted_head()
        with self._rw.read():
            S = self._scores(X, show_progress)
            return self._labels(S), S.max(axis=1), self._proba(S)

    def _scores(self, X: Any, show_progress: bool) -> np.ndarray:
        """Class scores of ``X``, columns in ``classes_`` order (the caller holds the read lock)."""
        return self._in_class_order(self._head_scores(X, show_progress))

    def _head_scores(self, X: Any, show_progress: bool) -> np.ndarray:
        """Class scores of ``X`` in the head's column order."""
        E, kw = self._head_inputs(X, show_progress)
        return self._fitted_head().class_scores(E, **kw)

    def _log_proba(self, S: np.ndarray) -> np.ndarray:
        """Log-probabilities, before the calibration temperature, from class scores ``S``."""
        return self._fitted_head().log_proba(S)

    def _proba(self, S: np.ndarray) -> np.ndarray:
        return softmax(self._log_proba(S), getattr(self, "temperature_", 1.0))

    def _labels(self, S: np.ndarray) -> np.ndarray:
        labels = self.classes_[np.argmax(S, axis=1)]
        threshold = getattr(self, "threshold_", None)
        if threshold is None:
            return labels
        marker = self.abstain_label
        kind = None if marker is None else np.asarray([marker]).dtype
        if kind is not None and kind.kind == labels.dtype.kind and kind.kind in "iubU":
            labels = labels.astype(np.result_type(labels.dtype, kind))  # room for the marker ("oos", -1)
        else:
            labels = labels.astype(object)
        # every class scored alike (the zero vector of a text a static model cannot read) is no decision
        labels[(S.max(axis=1) < threshold) | (np.ptp(S, axis=1) == 0)] = marker
        return labels

    # -- calibration --------------------------------------------------------------------------------
    def _fit_temperature(self, S: np.ndarray, codes: np.ndarray, method: str) -> None:
        T, report = cal.calibrate_temperature(self._log_proba(S), codes)
        self.temperature_ = T
        self.calibration_ = {"method": method, **report}

    @warns_once
    def fit_calibration(self, X: Any, y: Any, show_progress: bool = False) -> CalibratedClassifier:
        """Refit the temperature and the abstention threshold on a labelled validation split.

        Rows labelled ``abstain_label`` are out-of-scope examples: with some present, the threshold is the
        one with the best validation accuracy (an abstention is right exactly on them), and it replaces any
        threshold set before; giving such rows asks for abstention, so it is on afterwards even where
        ``abstain`` is None (``threshold_`` says what the classifier uses). Without them, and with
        ``abstain`` set, it is the low quantile of the true class's scores, as from the support set. Fewer
        than :data:`MIN_CALIBRATION_ROWS` in-scope rows are used with a warning: a threshold or a
        temperature set from so few moves with every row.
        """
        with self._rw.write():
            self._fitted_head()
            items = self.encoder_.validate(X)
            y, oos = self._labels_with_abstentions(y, len(items))
            if oos.all():
                raise InputError("every validation row is out of scope; the temperature needs in-scope rows")
            if (~oos).sum() < MIN_CALIBRATION_ROWS:
                warn_user(
                    f"fit_calibration on {(~oos).sum()} in-scope validation row(s): a temperature and an abstention "
                    f"threshold set from so few move with every row; give {MIN_CALIBRATION_ROWS} or more"
                )
            codes = np.full(len(y), -1, dtype=np.int64)
            codes[~oos] = encode_labels(list(y[~oos]), self.classes_)
            S = self._scores(items, show_progress)
            if self.calibrate:
                self._fit_temperature(S[~oos], codes[~oos], "validation split")
            if oos.any():
                correct = S.argmax(axis=1) == codes
                self.threshold_ = cal.best_threshold(S.max(axis=1), correct, oos)
            elif self.abstain is not None:
                self.threshold_ = cal.quantile_threshold(S[~oos], codes[~oos])
            self._mark_fitted()  # a calibrated fit is explicit: a later parameter change asks for a refit
            return self

    def _check_abstain_label(self, classes: Any) -> None:
        """Refuse an ``abstain_label`` that is also a class (an abstention would read as that class, and a
        validation row of that class as out of scope) or that a save could not write."""
        label = self.abstain_label
        if label is None:
            return
        try:
            plain = json_label(label)
        except InputError as exc:
            raise InputError(
                f"abstain_label={label!r} of type {type(label).__name__} cannot be a label: give a string, "
                "a finite number, a boolean or None"
            ) from exc
        # by value, not type: 1.0, True or np.int64(1) would be written (and saved) as the class 1
        if any(plain == json_label(c) for c in list(classes)):
            raise InputError(
                f"abstain_label={label!r} is also one of the classes, so an abstention would read as that class; "
                "give a label no class has (the default None, or e.g. 'none of these')"
            )

    def _is_abstain(self, v: Any) -> bool:
        if self.abstain_label is None:
            return v is None or (isinstance(v, float) and np.isnan(v))
        return type(v) is type(self.abstain_label) and v == self.abstain_label

    def _labels_with_abstentions(self, y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``y`` as an object array and a mask of its out-of-scope rows (labelled ``abstain_label``)."""
        if isinstance(y, (str, bytes)) or y is None:
            raise InputError("y must be one label per example")
        values = list(y.tolist() if hasattr(y, "tolist") else y)
        values = [v.item() if isinstance(v, np.generic) else v for v in values]  # a list of numpy scalars
        if len(values) != n:
            raise InputError(f"y has {len(values)} labels for {n} examples")
        oos = np.asarray([self._is_abstain(v) for v in values], dtype=bool)
        out = np.empty(n, dtype=object)
        out[:] = values
        if (~oos).any():
            out[~oos] = as_labels(list(out[~oos]), int((~oos).sum())).tolist()
        return out, oos

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on ``X`` against ``y``. Labels the model never saw are refused, not counted as misses:
        they usually mean a mismatched label column (``"Positive"`` against ``"positive"``). With abstention
        on, rows labelled ``abstain_label`` (None by default) are right when the model abstains on them."""
        self._fitted_head()
        items = self.encoder_.validate(X)
        abstaining = getattr(self, "threshold_", None) is not None
        if abstaining:
            y, oos = self._labels_with_abstentions(y, len(items))
        else:
            y, oos = as_labels(y, len(items)).astype(object), np.zeros(len(items), dtype=bool)
        encode_labels(list(y[~oos]), self.classes_)  # names labels the model never saw
        w = check_sample_weight(sample_weight, len(items))  # before the encoding
        pred = self.predict(items).tolist()  # Python values: the abstain label compares by type
        hits = [self._is_abstain(p) if o else (not self._is_abstain(p) and p == t) for p, t, o in zip(pred, y, oos)]
        return float(np.average(np.asarray(hits, dtype=float), weights=w))

    # -- saved calibration --------------------------------------------------------------------------
    def _calibration_state(self) -> dict[str, Any]:
        return {
            "temperature": getattr(self, "temperature_", 1.0),
            "threshold": getattr(self, "threshold_", None),
            **getattr(self, "calibration_", {"method": "none"}),
        }

    def _set_calibration_state(self, saved: dict[str, Any] | None, path: Any) -> None:
        try:
            saved = dict(saved or {})
            self.temperature_ = float(saved.pop("temperature", 1.0))
            threshold = saved.pop("threshold", None)
            self.threshold_ = None if threshold is None else float(threshold)
            if not (np.isfinite(self.temperature_) and self.temperature_ > 0):
                raise ValueError(f"temperature {self.temperature_}, where a positive number belongs")
            if self.threshold_ is not None and not np.isfinite(self.threshold_):
                raise ValueError(f"threshold {self.threshold_}")
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path}: the saved calibration cannot be read ({exc})") from exc
        self.calibration_ = saved or {"method": "none"}


def require_fitted(estimator: Any, attribute: str = "head_") -> Any:
    """``estimator.<attribute>``, or :class:`NotFittedError` naming what to call."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit first")
    return getattr(estimator, attribute)


def _as_key(v: Any) -> Any:
    """``v`` with every dict made a list of ``[repr(key), value]`` pairs, so that JSON takes keys of any type
    (numpy integers, labels of mixed types) and their order counts."""
    if isinstance(v, dict):
        return [[repr(k), _as_key(x)] for k, x in v.items()]
    if isinstance(v, (list, tuple)):
        return [_as_key(x) for x in v]
    return v
