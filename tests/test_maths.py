"""The shared maths, the label codes and the parameter tables, on exact cases."""

from __future__ import annotations

import numbers

import numpy as np
import pytest

from fewshot._validate import as_labels
from fewshot.errors import FewShotWarning, InputError
from fewshot.labels import check_label_type, encode_labels, merge_classes
from fewshot.maths import fit_temperature, l2_normalize, log_softmax, loo_mean_cosines, nll, softmax
from fewshot.params import Check, Interval, Options, validate_params
from tests.conftest import clusters


def test_leave_one_out_cosines_equal_refitting_without_each_example_in_numpy_and_torch():
    import torch

    E, y = clusters(n_classes=3, per_class=4, seed=1)
    E = l2_normalize(E).astype(np.float64)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(E))
    onehot = np.eye(3)[y]
    S = loo_mean_cosines(E, E, onehot, y, w)
    for i in range(len(E)):
        keep = np.arange(len(E)) != i
        means = np.stack([(E[keep] * w[keep, None])[y[keep] == c].sum(0) for c in range(3)])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        np.testing.assert_allclose(S[i], means @ E[i], atol=1e-12)
    T = loo_mean_cosines(*(torch.as_tensor(a) for a in (E, E, onehot, y, w)))
    np.testing.assert_allclose(T.numpy(), S, atol=1e-12)


def test_softmax_log_softmax_and_nll_agree():
    S = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(np.exp(log_softmax(S, 0.5)), softmax(S, 0.5), atol=1e-12)
    assert nll(S, np.array([0, 2]), 1.0) == pytest.approx(-np.mean(np.log(softmax(S)[[0, 1], [0, 2]])))


def test_fit_temperature_finds_the_minimum_of_the_log_loss():
    rng = np.random.default_rng(3)
    S = rng.standard_normal((300, 4)) * 2
    codes = S.argmax(axis=1)
    codes[:60] = rng.integers(0, 4, 60)  # some noise, so the optimum is finite
    T = fit_temperature(S, codes)
    for other in (T * 0.8, T * 1.25):
        assert nll(S, codes, T) < nll(S, codes, other)


def test_label_codes_and_types():
    classes = np.array(["b", "a"])
    assert encode_labels(["a", "b", "a"], classes).tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="never saw: c"):
        encode_labels(["c"], classes)
    assert merge_classes(classes, np.array(["c", "a"])).tolist() == ["b", "a", "c"]
    with pytest.raises(InputError, match="new labels are numbers but the model's classes are texts"):
        check_label_type(np.array([1]), classes)
    check_label_type(np.array([2.0]), np.array([1, 3]))  # 2.0 and 1: one numeric type
    with pytest.raises(InputError, match=r"never saw: 0, 1; it knows 0, 1 \(labels of type str; the model's are int\)"):
        encode_labels(["0", "1"], np.array([0, 1]))
    assert as_labels([1, 2.0], 2).tolist() == [1.0, 2.0]  # one numeric type
    for bad, message in [
        ([1, "one"], "mixes label types"),
        (["a", ""], "empty label"),
        (["a", None], "missing"),
        ([float("inf"), 1.0], r"y\[0\] is infinite"),
        ([0.5, 1.5], "continuous"),
        ([["a"], ["b"]], "Unknown label type"),
    ]:
        with pytest.raises(InputError, match=message):
            as_labels(bad, 2)
    with pytest.warns(FewShotWarning, match="'card' and 'card ', which differ only in case or spaces"):
        assert as_labels(["card", "card ", "cash"], 3).tolist() == ["card", "card ", "cash"]
    import pandas as pd

    with pytest.raises(InputError, match=r"y\[1\] is missing"):
        as_labels(pd.Series(["a", pd.NA], dtype="string"), 2)


class Toy:
    _parameter_constraints = {
        "k": [Interval(numbers.Integral, 1, None)],
        "mode": [Options(("fast", "slow"))],
        "flag": [bool],
        "weights": [None, Check(lambda v: len(v) == 2, "a pair")],
    }

    def __init__(self, k=1, mode="fast", flag=False, weights=None):
        self.k, self.mode, self.flag, self.weights = k, mode, flag, weights

    def get_params(self, deep=False):
        return {"k": self.k, "mode": self.mode, "flag": self.flag, "weights": self.weights}


def test_parameter_tables_accept_and_refuse_with_what_they_take():
    validate_params(Toy(k=np.int64(3), weights=(1, 2)))
    for kwargs, message in [
        ({"k": 0}, r"k=0 is not valid; it takes an integer in \[1, inf\]"),
        ({"k": True}, "k=True is not valid"),
        ({"mode": "medium"}, "one of 'fast', 'slow'"),
        ({"flag": 1}, "a boolean"),
        ({"weights": (1,)}, "None; or a pair"),
    ]:
        with pytest.raises(InputError, match=message):
            validate_params(Toy(**kwargs))
    # a number's range is of finite numbers: infinity is no setting a save could store
    from fewshot.heads import KNNHead

    for bad in (float("inf"), float("nan")):
        with pytest.raises(InputError, match=r"temperature=.* is not valid; it takes a finite number in \(0, inf\)"):
            validate_params(KNNHead(temperature=bad))
