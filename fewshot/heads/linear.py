"""Logistic regression on embeddings, the head SetFit puts on its tuned body (Tunstall et al. 2022)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from fewshot.heads.base import BaseHead
from fewshot.params import POSITIVE, POSITIVE_INT, SEED

C_GRID = (0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 10.0  # when C cannot be cross-validated (a class with a single example)


class LinearHead(BaseHead):
    """Multinomial logistic regression; the regularisation strength is chosen by cross-validation.

    Parameters
    ----------
    C : inverse regularisation strength. None chooses it from ``C_GRID`` by stratified k-fold accuracy
        on the support set when every class has at least 2 examples (ties go to the stronger
        regularisation), and uses ``DEFAULT_C`` otherwise.
    max_iter : iterations for the lbfgs solver.
    random_state : seed for the cross-validation folds.

    Attributes
    ----------
    classes_ : array of shape (n_classes,)
    coef_ : array of shape (n_classes, dim); intercept_ : array of shape (n_classes,)
    C_ : the regularisation strength used; cv_scores_ : {C: mean accuracy} when it was chosen by CV.

    ``partial_fit`` keeps the support embeddings (and weights) and refits on all of them (lbfgs on a few
    hundred rows takes milliseconds), which is what adding a brand-new class requires for a
    discriminative model.
    """

    name = "linear"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "C": [None, POSITIVE],
        "max_iter": [POSITIVE_INT],
        "random_state": [SEED],
    }

    def __init__(self, C: float | None = None, max_iter: int = 1000, random_state: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    temperature = 1.0  # logits are the log-probabilities' scale already

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.support_, self.codes_ = E, codes
        self.weights_ = np.ones(len(E)) if w is None else w
        self._train()

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.support_ = np.vstack([self.support_, E])
        self.codes_ = np.concatenate([self.codes_, codes])
        self.weights_ = np.concatenate([self.weights_, np.ones(len(E)) if w is None else w])
        self._train()

    def _train(self) -> None:
        E, codes, w = self.support_, self.codes_, self.weights_
        counts = np.bincount(codes, minlength=len(self.classes_))
        self.cv_scores_: dict[float, float] = {}
        if self.C is not None:
            self.C_ = float(self.C)
        elif counts.min() >= 2:
            cv = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=self.random_state)
            folds = list(cv.split(E, codes))
            for c in C_GRID:
                hits = []
                for tr, va in folds:
                    model = LogisticRegression(C=c, max_iter=self.max_iter).fit(E[tr], codes[tr], sample_weight=w[tr])
                    hits.append(float(np.average(model.predict(E[va]) == codes[va], weights=w[va])))
                self.cv_scores_[c] = float(np.mean(hits))
            self.C_ = max(C_GRID, key=lambda c: (round(self.cv_scores_[c], 9), -c))
        else:
            self.C_ = DEFAULT_C
        model = LogisticRegression(C=self.C_, max_iter=self.max_iter).fit(E, codes, sample_weight=w)
        self.n_iter_ = model.n_iter_
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row; p(class 1) = sigmoid(z) = softmax([0, z])
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        self.coef_, self.intercept_ = coef.astype(np.float64), intercept.astype(np.float64)

    def class_scores(self, E: Any) -> np.ndarray:
        """Logits, shape (n_samples, n_classes)."""
        E = self._check_input(E)
        return E.astype(np.float64) @ self.coef_.T + self.intercept_

    def _held_out_template(self) -> BaseHead:
        # the folds reuse the C chosen on all examples rather than choosing again inside each fold (5 fits
        # instead of 105; the scores are those of the head as fitted)
        return clone(self).set_params(C=self.C_)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "coef": self.coef_,
            "intercept": self.intercept_,
            "support": self.support_,
            "codes": self.codes_,
            "weights": self.weights_,
            "C": np.array([self.C_]),
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        self.support_ = np.asarray(arrays["support"], dtype=np.float32)
        self.codes_ = np.asarray(arrays["codes"], dtype=np.int64)
        self.weights_ = np.asarray(arrays.get("weights", np.ones(len(self.codes_))), dtype=np.float64)
        self.C_ = float(arrays["C"][0])
        self.cv_scores_ = {}
        self.n_iter_ = np.zeros(1, dtype=np.int32)
