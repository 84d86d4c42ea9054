"""scikit-learn's own estimator checks are the peer test suite for every head.

Each head passes all of them but one for four heads: fitting with ``sample_weight=2`` is not the same as
giving the example twice, for reasons that belong to the method and are stated below. Those four checks
are declared expected failures (scikit-learn then asserts that they do fail), and the rest stay in the suite.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from fewshot.heads import AutoHead, CacheAdapterHead, KNNHead, LinearHead, PrototypeHead, ZeroShotHead

WEIGHT_IS_NOT_REPETITION = "check_sample_weight_equivalence_on_dense_data"
WHY = {
    KNNHead: "a repeated example fills two of the k neighbour slots, a weighted one fills one and votes twice",
    LinearHead: "C is chosen by k-fold cross-validation, where an example given twice can land in two folds; "
    "with a fixed C the two fits agree to the solver's tolerance (about 1e-7), not to the check's 1e-9",
    CacheAdapterHead: "leave-one-out leaves a repeated example's twin in the cache, a weighted one has none",
    AutoHead: "the head is chosen by k-fold cross-validation, where an example given twice can land in two folds",
}

HEADS = [
    PrototypeHead(),
    PrototypeHead(center=True),
    KNNHead(),
    LinearHead(),
    CacheAdapterHead(),
    AutoHead(),
    ZeroShotHead(),
]


def expected_failures(head):
    reason = WHY.get(type(head))
    return {WEIGHT_IS_NOT_REPETITION: reason} if reason else {}


@parametrize_with_checks(HEADS, expected_failed_checks=expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_sample_weight_is_honoured_where_it_is_not_repetition():
    """The declared failures are about repetition only: a weight still moves each head's decision."""
    rng = np.random.default_rng(0)
    E = rng.standard_normal((40, 8)).astype(np.float32)
    y = np.repeat([0, 1], 20)
    w = np.where(np.arange(40) % 20 < 3, 50.0, 1.0)  # three examples of each class count fifty times
    for head in (KNNHead(k=5), LinearHead(C=1.0), CacheAdapterHead(beta=5.0), AutoHead()):
        plain = head.fit(E, y).predict_proba(E)
        weighted = type(head)(**head.get_params()).fit(E, y, sample_weight=w).predict_proba(E)
        assert not np.allclose(plain, weighted), type(head).__name__
