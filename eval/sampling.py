"""Seeded sampling: n-shot support sets, N-way K-shot episodes, fixed test subsamples."""

from __future__ import annotations

import numpy as np

from eval.datasets import sample_per_class

__all__ = ["sample_per_class", "episodes", "capped_subsample"]

TEST_SEED = 2024


def capped_subsample(labels: np.ndarray, cap: int, seed: int = TEST_SEED) -> np.ndarray:
    """Indices of a fixed stratified subsample of at most ``cap`` test rows (all rows when fewer)."""
    n = len(labels)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(len(idx) * cap / n))
        picked.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def episodes(labels: np.ndarray, n_way: int, k_shot: int, n_query: int, n_episodes: int, seed: int):
    """Yield (support_idx, query_idx) for N-way K-shot episodes drawn from ``labels``.

    Each episode draws ``n_way`` classes among those with at least ``k_shot + n_query`` examples, then
    ``k_shot`` support and ``n_query`` query examples of each, all without replacement.
    """
    rng = np.random.default_rng(seed)
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= k_shot + n_query]
    if len(classes) < n_way:
        raise ValueError(f"only {len(classes)} classes have {k_shot + n_query} examples; {n_way} needed")
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    for _ in range(n_episodes):
        chosen = rng.choice(len(classes), size=n_way, replace=False)
        support, query = [], []
        for ci in chosen:
            idx = rng.choice(by_class[classes[ci]], size=k_shot + n_query, replace=False)
            support.append(idx[:k_shot])
            query.append(idx[k_shot:])
        yield np.concatenate(support), np.concatenate(query)
