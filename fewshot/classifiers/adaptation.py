"""Zero-shot label vectors adapted to an unlabelled corpus of the task: centring, and one round of
self-training.

Self-training labels the corpus with the label vectors and replaces each label vector by the mean of its
most confident items (Nigam et al. 2000's EM idea, one hard step; the confidence is a per-label z-score so
that a label whose text sits close to everything does not take the whole corpus).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.maths import l2_normalize

SELF_TRAIN_MIN_PER_LABEL = 10  # corpus items per label before "auto" self-trains
SELF_TRAIN_SHARE = 0.25  # share of an even split of the corpus each label keeps
SELF_TRAIN_MIN_KEEP = 8
ADAPT_METHODS = ("auto", "selftrain", "center", "none")


def centre(E: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """``E`` (n, d) minus the corpus mean ``shift`` (d,), re-normalised; ``E`` itself without a shift."""
    if shift is None:
        return E
    return l2_normalize(np.asarray(E, dtype=np.float64) - shift).astype(np.float32)


def adapt_label_vectors(
    V: np.ndarray, C: np.ndarray, method: str
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Adapt label vectors ``V`` (k, d) to the corpus embeddings ``C`` (n, d).

    Parameters
    ----------
    method : ``"auto"`` (self-train when the corpus has :data:`SELF_TRAIN_MIN_PER_LABEL` items a label),
        ``"selftrain"``, ``"center"`` or ``"none"``.

    Returns
    -------
    (new label vectors (k, d) or None when unchanged, the corpus mean (d,) to centre inputs on or None, a
    report of what was done).
    """
    n, k = len(C), len(V)
    if method == "none":
        return None, None, {"method": "none"}
    selftrain = method == "selftrain" or (method == "auto" and n >= SELF_TRAIN_MIN_PER_LABEL * k)
    if method == "auto" and not selftrain:
        why = f"{n} corpus items for {k} labels; self-training needs {SELF_TRAIN_MIN_PER_LABEL} a label"
        return None, None, {"method": "none", "why": why}
    shift = C.astype(np.float64).mean(axis=0)
    Cc = centre(C, shift)
    Vc = l2_normalize(V - shift)
    if not selftrain:
        return Vc, shift, {"method": "center", "corpus": n}
    S = Cc @ Vc.T
    pred = S.argmax(axis=1)
    z = (S - S.mean(axis=0)) / np.maximum(S.std(axis=0), 1e-12)
    key = z[np.arange(n), pred]
    m = max(SELF_TRAIN_MIN_KEEP, int(SELF_TRAIN_SHARE * n / k))
    protos, kept = [], []
    for c in range(k):
        idx = np.flatnonzero(pred == c)
        top = idx[np.argsort(-key[idx], kind="stable")[:m]]
        protos.append(Cc[top].mean(axis=0) if len(top) else Vc[c])
        kept.append(int(len(top)))
    return l2_normalize(np.asarray(protos)), shift, {"method": "selftrain", "corpus": n, "kept_per_label": kept}
