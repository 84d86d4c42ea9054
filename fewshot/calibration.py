"""Probabilities that mean what they say, and "none of these": fitted without test data.

- Held-out scores of the support set: every example scored by a head that never saw it (closed-form
  leave-one-out for class means, stratified k-fold refits for other heads).
- Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one scalar T
  on the head's log-probabilities, fitted by minimising the log-loss of those held-out scores.
- Expected calibration error (the same paper, 15 equal-width confidence bins).
- Abstention thresholds on the best class's score: a low quantile of the held-out scores of the true class
  (from the support set alone), or the threshold with the best accuracy on a validation split whose
  out-of-scope rows carry the abstain label (Larson et al., "An Evaluation Dataset for Intent Classification
  and Out-of-Scope Prediction", EMNLP 2019).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from fewshot.heads.base import BaseHead, l2_normalize, softmax
from fewshot.heads.knn import KNNHead
from fewshot.heads.linear import LinearHead
from fewshot.heads.prototype import PrototypeHead

# share of in-scope support examples that the support-set threshold may reject. Chosen on CLINC150's
# validation split (prototype head, 5 examples per intent, seed 0: 83% in-scope accuracy, 79% of the
# out-of-scope queries caught); on the test split, 3 seeds: 84.6% and 65.2% at 5 examples, 87.1% and 75.1%
# at 10 (eval/results/text_zeroshot_oos.json)
ABSTAIN_QUANTILE = 0.05

TEMPERATURE_RANGE = (1e-2, 1e2)  # bounds of the scalar T fitted on log-probabilities
# a Gaussian prior on log T (sd 1, centred on 1 = the head as it is), so that a handful of held-out scores
# cannot drive T to an extreme: with 16 held-out sst2 examples near chance, the bare log-loss optimum was
# T=73 (flat probabilities) and doubled the test calibration error; hundreds of rows outweigh the prior
LOG_T_PRIOR_SD = 1.0


def held_out_scores(
    head: BaseHead, E: np.ndarray, codes: np.ndarray, folds: int = 5, seed: int = 0, fit_kw: dict | None = None
) -> np.ndarray | None:
    """Decision scores of every support example from a head that did not see it, shape (n, n_classes).

    ``head`` is fitted on ``E`` (its ``classes_`` give the column order) and ``codes`` index into
    ``classes_``. A plain prototype head (no centring) gets the exact leave-one-out in closed form; any
    other head is cloned and refitted on stratified folds (``head.head_`` for ``"auto"``, the chosen one).
    ``fit_kw`` holds per-example arrays the head's fit takes (the zero-shot prior), sliced with the folds.
    None when some class has a single example: nothing could be held out.
    """
    counts = np.bincount(codes, minlength=len(head.classes_))
    if counts.min() < 2:
        return None
    inner = getattr(head, "head_", head)
    E = l2_normalize(np.asarray(E, dtype=np.float32))
    if not getattr(inner, "accepts_prior", False):
        fit_kw = None
    if type(inner) is PrototypeHead and not inner.center:
        sums = np.zeros((len(counts), E.shape[1]))
        np.add.at(sums, codes, E.astype(np.float64))
        S = E @ l2_normalize(sums).T
        own = sums[codes] - E  # each example's class mean without it (direction only: the count cancels)
        S[np.arange(len(E)), codes] = np.sum(E * l2_normalize(own), axis=1)
        return S
    S = np.zeros((len(E), len(counts)))
    cv = StratifiedKFold(n_splits=int(min(folds, counts.min())), shuffle=True, random_state=seed)
    classes = head.classes_
    template = clone(inner)
    if isinstance(inner, LinearHead) and inner.C is None:
        # the linear head chose C by its own cross-validation: the folds reuse that C rather than choosing
        # again inside each fold (5 fits instead of 105; the scores are those of the head as fitted)
        template.set_params(C=inner.C_)
    for train, test in cv.split(E, codes):
        kw = {k: v[train] for k, v in (fit_kw or {}).items()}
        part = clone(template).fit(E[train], classes[codes[train]], classes=classes, **kw)
        S[test] = part.decision_function(E[test], **{k: v[test] for k, v in (fit_kw or {}).items()})
    return S


def log_proba(head: BaseHead, S: np.ndarray) -> np.ndarray:
    """The head's log-probabilities from its decision scores (softmax heads: scores / temperature)."""
    head = getattr(head, "head_", head)
    T = getattr(head, "temperature", None)
    if isinstance(head, KNNHead):
        return np.log(np.clip(S, 1e-6, None))  # vote shares are the probabilities
    P = softmax(S, 1.0 if T is None else float(T))
    return np.log(np.clip(P, 1e-12, None))


def fit_temperature(logp: np.ndarray, codes: np.ndarray, prior_sd: float | None = LOG_T_PRIOR_SD) -> float:
    """The T minimising the summed log-loss of ``softmax(logp / T)`` against ``codes``, plus the prior
    ``(log T)^2 / (2 prior_sd^2)`` (None: no prior, the plain maximum-likelihood T)."""
    logp = np.asarray(logp, dtype=np.float64)
    rows = np.arange(len(codes))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        loss = float(-(z[rows, codes] - np.log(np.exp(z).sum(axis=1))).sum())
        return loss if prior_sd is None else loss + log_t**2 / (2 * prior_sd**2)

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def expected_calibration_error(proba: np.ndarray, codes: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the confidence-weighted gap |accuracy - confidence| over equal-width bins of the top probability."""
    proba = np.asarray(proba, dtype=np.float64)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == np.asarray(codes)).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def quantile_threshold(S: np.ndarray, codes: np.ndarray, quantile: float = ABSTAIN_QUANTILE) -> float:
    """The ``quantile`` of the true class's held-out score: below it, an input looks like no class seen."""
    return float(np.quantile(S[np.arange(len(codes)), codes], quantile))


def best_threshold(best: np.ndarray, correct: np.ndarray, out_of_scope: np.ndarray) -> float:
    """The threshold on the best class's score with the highest validation accuracy, where an abstention
    is right exactly for the out-of-scope rows; ties go to the lower threshold (fewer abstentions)."""
    order = np.argsort(best, kind="stable")
    b, ok, oos = best[order], correct[order], out_of_scope[order]
    # threshold just above b[i-1]: rows before i abstain. accuracy = oos among them + in-scope correct after
    abstain_right = np.concatenate([[0], np.cumsum(oos)])
    keep_right = np.concatenate([np.cumsum((ok & ~oos)[::-1])[::-1], [0]])
    total = abstain_right + keep_right
    i = int(np.argmax(total))
    if i == 0:
        return float(b[0] - 1.0)  # abstain on nothing seen here
    return float((b[i - 1] + b[i]) / 2.0) if i < len(b) else float(b[-1] + 1e-6)


def as_threshold(value: Any, name: str = "abstain") -> float | str | None:
    """Validate an ``abstain`` setting: None, "auto" or a number."""
    from fewshot.errors import InputError

    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{name} must be None, 'auto' or a number (a score threshold), got {value!r}")
    return float(value)
