"""Shared maths of the heads, the classifiers and calibration: normalising, softmax with a temperature,
class means with each example left out, and fitting one temperature to held-out scores.

Every function takes and returns numpy arrays and states their shapes; nothing here knows about heads.
"""

from __future__ import annotations

import numpy as np

TEMPERATURE_RANGE = (1e-2, 1e2)  # bounds of a temperature fitted on log-probabilities or scores


def l2_normalize(E: np.ndarray) -> np.ndarray:
    """Row-normalise ``E`` (n, d) to unit L2 norm; zero rows stay zero. Returns a new C-contiguous float32 array."""
    E = np.asarray(E, dtype=np.float32)
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    return np.ascontiguousarray(E / np.maximum(norms, 1e-12), dtype=np.float32)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature``; shape (n, C) in, (n, C) float64 out, rows sum to 1."""
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def class_sums(E: np.ndarray, codes: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class (weighted) sums of the rows of ``E`` (n, d), shape (n_classes, d), float64."""
    sums = np.zeros((n_classes, E.shape[1]), dtype=np.float64)
    rows = E.astype(np.float64) if weights is None else E.astype(np.float64) * weights[:, None]
    np.add.at(sums, codes, rows)
    return sums


def _norms(M):
    """Row norms of a numpy array or a torch tensor, kept as a trailing axis of size 1."""
    if hasattr(M, "detach"):  # torch: the same formula must stay differentiable
        return M.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return np.maximum(np.linalg.norm(M, axis=-1, keepdims=True), 1e-12)


def unit_rows(M):
    """``M`` with unit-norm rows (zero rows stay zero); numpy arrays and torch tensors alike."""
    return M / _norms(M)


def loo_mean_cosines(Q, K, onehot, codes, weights=None):
    """Cosine of query ``i`` to every class mean of the keys, its own class's mean without key ``i``.

    The exact leave-one-out scores of a nearest-class-mean classifier: the support set scored without
    refitting. Works on numpy arrays and on torch tensors (the trained cache adapter differentiates it).

    Parameters
    ----------
    Q : shape (n, d), the queries; ``Q[i]`` is scored with ``K[i]`` left out (often ``Q`` is ``K``).
    K : shape (n, d), the keys whose (weighted) class sums make the class means.
    onehot : shape (n, n_classes), the one-hot class of each key, as floats.
    codes : shape (n,), the class index of each key.
    weights : shape (n,), optional weight of each key.

    Returns
    -------
    Scores of shape (n, n_classes). Only the own-class column differs from the cosines to the full
    means, so nothing of size (n, n_classes, d) is built. A class left empty scores 0.
    """
    Kw = K if weights is None else K * weights[:, None]
    sums = onehot.T @ Kw  # (n_classes, d)
    full = Q @ unit_rows(sums).T
    own = (Q * unit_rows(sums[codes] - Kw)).sum(-1)
    return full * (1 - onehot) + own[:, None] * onehot


def log_softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log of :func:`softmax`, computed stably; shape (n, C) in and out."""
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(scores: np.ndarray, codes: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(scores / temperature)`` against integer ``codes``."""
    logp = log_softmax(scores, temperature)
    return float(-logp[np.arange(len(codes)), codes].mean())


def fit_temperature(scores: np.ndarray, codes: np.ndarray, prior_sd: float | None = None) -> float:
    """The temperature T minimising the log-loss of ``softmax(scores / T)`` against ``codes``.

    Parameters
    ----------
    scores : array of shape (n, n_classes), logits of any scale (cosines, log-probabilities).
    codes : array of shape (n,), the true class index of each row.
    prior_sd : with a value, a Gaussian prior on ``log T`` centred on 0 (T = 1, the scores as they are) is
        added to the summed log-loss, ``(log T)^2 / (2 prior_sd^2)``, so that a handful of rows cannot drive T
        to an extreme; None is the plain maximum-likelihood T.

    Returns
    -------
    T within :data:`TEMPERATURE_RANGE`, found by a bounded scalar search on ``log T``.
    """
    from scipy.optimize import minimize_scalar

    S = np.asarray(scores, dtype=np.float64)
    codes = np.asarray(codes)
    rows = np.arange(len(codes))

    def loss(log_t: float) -> float:
        z = log_softmax(S, np.exp(log_t))
        total = float(-z[rows, codes].sum())
        return total if prior_sd is None else total + log_t**2 / (2 * prior_sd**2)

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))
