"""Metrics and summaries of the evaluation harness (written out, then checked against scikit-learn)."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts C[i, j] of true class i predicted as j; shape (n_classes, n_classes)."""
    C = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(C, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return C


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN); a class with no support and no
    prediction scores 0, as scikit-learn's ``zero_division=0``."""
    C = confusion(y_true, y_pred, n_classes)
    tp = np.diag(C).astype(float)
    denom = 2 * tp + (C.sum(0) - tp) + (C.sum(1) - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def mcc(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Matthews correlation coefficient (Gorodkin's multi-class form; the usual one for two classes)."""
    C = confusion(y_true, y_pred, n_classes).astype(float)
    t, p, c, s = C.sum(1), C.sum(0), np.trace(C), C.sum()
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0, as the SetFit paper's tables)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std())


def ci95(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean over episodes: 1.96 * std / sqrt(n)."""
    v = np.asarray(values, dtype=float)
    return float(1.96 * v.std() / np.sqrt(len(v)))
