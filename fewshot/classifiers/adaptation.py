"""Zero-shot label vectors adapted to an unlabelled corpus of the task: centring, and one round of
self-training.

Self-training labels the corpus with the label vectors and replaces each label vector by the mean of its
most confident items (Nigam et al. 2000's EM idea, one hard step; the confidence is a per-label z-score so
that a label whose text sits close to everything does not take the whole corpus).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.errors import InputError
from fewshot.maths import l2_normalize

SELF_TRAIN_MIN_PER_LABEL = 10  # corpus items per label before "auto" self-trains
SELF_TRAIN_SHARE = 0.25  # share of an even split of the corpus each label keeps
SELF_TRAIN_MIN_KEEP = 8
ADAPT_METHODS = ("auto", "selftrain", "center", "none")


def centre(E: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """``E`` (n, d) minus the corpus mean ``shift`` (d,), re-normalised; ``E`` itself without a shift."""
    if shift is None:
        return E
    out = l2_normalize(np.asarray(E, dtype=np.float64) - shift).astype(np.float32)
    out[~np.asarray(E).any(axis=1)] = 0  # a text the encoder cannot read stays similar to nothing, not to -shift
    return out


def adapt_label_vectors(
    V: np.ndarray, C: np.ndarray, method: str
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Adapt label vectors ``V`` (k, d) to the corpus embeddings ``C`` (n, d).

    Parameters
    ----------
    method : ``"auto"`` (self-train when the corpus has :data:`SELF_TRAIN_MIN_PER_LABEL` distinct items a label),
        ``"selftrain"``, ``"center"`` or ``"none"``.

    Returns
    -------
    (new label vectors (k, d) or None when unchanged, the corpus mean (d,) to centre inputs on or None, a
    report of what was done).
    """
    k = len(V)
    if method == "none":
        return None, None, {"method": "none"}
    # the corpus is the texts the encoder can read (one that embeds to nothing says nothing of the task), and
    # how many distinct ones it holds decides what can be done: a column of one repeated text is one text,
    # which centred on its own mean is nothing (copies still weigh the means, as repeated texts do)
    C = C[C.any(axis=1)]
    n, distinct = len(C), len(np.unique(C, axis=0))
    if distinct < 2:
        why = f"the corpus has {distinct} distinct text{'s' * (distinct != 1)} the encoder can read; adapting needs 2"
        if method == "auto":
            return None, None, {"method": "none", "why": why}
        raise InputError(f"cannot adapt={method!r}: {why}")
    selftrain = method == "selftrain" or (method == "auto" and distinct >= SELF_TRAIN_MIN_PER_LABEL * k)
    if method == "auto" and not selftrain:
        why = f"{distinct} distinct corpus items for {k} labels; self-training needs {SELF_TRAIN_MIN_PER_LABEL} a label"
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
        idx = np.flatnonzero((pred == c) & Cc.any(axis=1))  # an item at the corpus mean chooses no label
        top = idx[np.argsort(-key[idx], kind="stable")[:m]]
        protos.append(Cc[top].mean(axis=0) if len(top) else Vc[c])
        kept.append(int(len(top)))
    return l2_normalize(np.asarray(protos)), shift, {"method": "selftrain", "corpus": n, "kept_per_label": kept}
