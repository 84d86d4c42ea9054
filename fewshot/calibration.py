"""Probabilities that mean what they say, and "none of these": fitted without test data.

- Held-out scores of the support set come from the heads themselves (``BaseHead.held_out_scores``:
  closed-form leave-one-out for class means, stratified k-fold refits for other heads), and so do their
  log-probabilities (``BaseHead.log_proba``); nothing here knows which head it calibrates.
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

from fewshot._validate import finite_number
from fewshot.errors import InputError
from fewshot.maths import fit_temperature, softmax

__all__ = [
    "ABSTAIN_QUANTILE",
    "LOG_T_PRIOR_SD",
    "as_threshold",
    "best_threshold",
    "calibrate_temperature",
    "expected_calibration_error",
    "quantile_threshold",
]

# share of in-scope support examples that the support-set threshold may reject. Chosen on CLINC150's
# validation split (prototype head, 5 examples per intent, seed 0: 83% in-scope accuracy, 79% of the
# out-of-scope queries caught); on the test split, 3 seeds: 84.6% and 65.2% at 5 examples, 87.1% and 75.1%
# at 10
ABSTAIN_QUANTILE = 0.05

# a Gaussian prior on log T (sd 1, centred on 1 = the head as it is), so that a handful of held-out scores
# cannot drive T to an extreme: with 16 held-out sst2 examples near chance, the bare log-loss optimum was
# T=73 (flat probabilities) and doubled the test calibration error; hundreds of rows outweigh the prior
LOG_T_PRIOR_SD = 1.0


def calibrate_temperature(logp: np.ndarray, codes: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The temperature for held-out log-probabilities ``logp`` (n, n_classes) with true classes ``codes``,
    and a report: the expected calibration error before and after."""
    T = fit_temperature(logp, codes, prior_sd=LOG_T_PRIOR_SD)
    report = {
        "n": int(len(codes)),
        "ece_before": expected_calibration_error(softmax(logp), codes),
        "ece_after": expected_calibration_error(softmax(logp, T), codes),
    }
    return T, report


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
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if not finite_number(value):
        raise InputError(f"{name} must be None, 'auto' or a number (a score threshold), got {value!r}")
    return float(value)
