"""One contract battery for every head, then each head's maths on small exact cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from fewshot.errors import CorruptFileError, DimensionError, InputError, NotFittedError
from fewshot.heads import (
    HEADS,
    AutoHead,
    CacheAdapterHead,
    KNNHead,
    LinearHead,
    PrototypeHead,
    ZeroShotHead,
    head_from_state,
    make_head,
)
from fewshot.maths import softmax
from tests.conftest import clusters

HEAD_FACTORIES = {
    "prototype": lambda: PrototypeHead(),
    "prototype-centred": lambda: PrototypeHead(center=True),
    "knn": lambda: KNNHead(k=5),
    "linear": lambda: LinearHead(),
    "cache": lambda: CacheAdapterHead(),
    "auto": lambda: AutoHead(candidates=["prototype", "linear", "cache"], folds=3),
    "zeroshot": lambda: ZeroShotHead(),
}


@pytest.fixture(params=sorted(HEAD_FACTORIES))
def head(request):
    return HEAD_FACTORIES[request.param]()


def test_registry_covers_every_head():
    assert set(HEADS) == {"prototype", "knn", "linear", "cache", "auto", "zeroshot"}


def test_fit_returns_self_and_learns_separable_clusters(head):
    E, y = clusters(seed=1)
    Et, yt = clusters(seed=1, per_class=30)  # same centres (same seed), more points, plus fresh noise
    rng = np.random.default_rng(5)
    Et = Et + 0.05 * rng.standard_normal(Et.shape).astype(np.float32)
    assert head.fit(E, y) is head
    assert (head.predict(Et) == yt).mean() >= 0.95


def test_proba_shape_rows_and_column_order(head):
    E, y = clusters(seed=2)
    names = np.array(["cat", "dog", "eel"])[y]
    head.fit(E, names)
    assert list(head.classes_) == ["cat", "dog", "eel"]
    P = head.predict_proba(E)
    assert P.shape == (len(E), 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9)
    assert (P >= 0).all()
    # column j is the probability of classes_[j]: argmax agrees with predict and with the class scores
    assert (head.classes_[P.argmax(axis=1)] == head.predict(E)).all()
    assert (head.class_scores(E).argmax(axis=1) == P.argmax(axis=1)).all()
    assert head.decision_function(E).shape == (len(E), 3)


def test_binary_decision_function_follows_scikit_learn(head):
    E, y = clusters(n_classes=2, seed=2)
    names = np.array(["no", "yes"])[y]
    head.fit(E, names)
    d = head.decision_function(E)
    assert d.shape == (len(E),)  # one column for two classes: positive means classes_[1]
    np.testing.assert_array_equal(np.where(d > 0, "yes", "no"), head.predict(E))


def test_integer_string_and_bool_labels(head):
    E, y = clusters(n_classes=2, seed=3)
    for labels in (y + 10, np.array(["no", "yes"])[y], y.astype(bool)):
        fitted = clone(head).fit(E, labels)
        assert set(fitted.classes_.tolist()) == set(np.unique(labels).tolist())
        assert (fitted.predict(E) == labels).mean() > 0.9


def test_state_round_trip_gives_identical_outputs(head):
    E, y = clusters(seed=4)
    head.fit(E, np.array(["a", "b", "c"])[y])
    config, arrays = head.get_state()
    import json

    config = json.loads(json.dumps(config))  # the state must survive JSON
    again = head_from_state(config, arrays)
    np.testing.assert_array_equal(again.predict(E), head.predict(E))
    np.testing.assert_allclose(again.predict_proba(E), head.predict_proba(E), rtol=1e-6, atol=1e-9)


def test_a_state_whose_parts_disagree_is_refused_as_corrupt(head):
    from fewshot.errors import CorruptFileError

    E, y = clusters(seed=4)
    head.fit(E, np.array(["a", "b", "c"])[y])
    config, arrays = head.get_state()
    fewer = {**config, "classes": config["classes"][:2]}  # one class dropped, its codes and columns kept
    narrower = {k: (v[..., :8].copy() if v.ndim == 2 and v.shape[-1] == E.shape[1] else v) for k, v in arrays.items()}
    for bad_config, bad_arrays in ((fewer, arrays), (config, narrower)):
        if bad_arrays is narrower and all(v is arrays[k] for k, v in narrower.items()):
            continue  # a head without arrays of the embedding's width
        with pytest.raises(CorruptFileError, match="the saved .* head"):  # auto: its own, or its chosen one
            head_from_state(bad_config, bad_arrays)
    # one NaN among its learnt numbers, or a setting its constructor would refuse (a temperature of 0)
    for name, v in arrays.items():
        if v.dtype.kind == "f" and v.ndim == 2 and v.size:
            poisoned = v.copy()
            poisoned.flat[poisoned.size // 2] = np.nan
            with pytest.raises(CorruptFileError, match="the saved .* head holds values that are not finite"):
                head_from_state(config, {**arrays, name: poisoned})
    for name in ("temperature", "k"):
        if name in config["params"]:
            zero = {**config, "params": {**config["params"], name: 0}}
            with pytest.raises(CorruptFileError, match=f"the saved .* head's settings are not valid.*{name}=0"):
                head_from_state(zero, arrays)


def test_partial_fit_adds_a_new_class_without_moving_old_columns(head):
    E, y = clusters(n_classes=4, seed=6)
    old, new = y < 3, y == 3
    head.fit(E[old], y[old])
    before = head.predict_proba(E[old]).argmax(axis=1)
    head.partial_fit(E[new], y[new])
    assert list(head.classes_) == [0, 1, 2, 3]
    assert (head.predict(E[new]) == 3).mean() >= 0.9
    # old examples keep their class (same column index as before)
    assert (head.predict_proba(E[old]).argmax(axis=1) == before).mean() >= 0.9


def test_errors(head):
    E, y = clusters(seed=7)
    with pytest.raises(NotFittedError, match="not fitted"):
        head.predict(E)
    with pytest.raises(InputError, match="0 sample"):
        head.fit(np.zeros((0, 16)), [])
    with pytest.raises(InputError, match="3 labels for"):
        head.fit(E, y[:3])
    with pytest.raises(InputError, match="missing"):
        head.fit(E[:2], ["a", None])
    head.fit(E, y)
    with pytest.raises(DimensionError, match="has 8 features"):
        head.predict(np.ones((2, 8)))
    with pytest.raises(InputError, match="Reshape"):
        head.predict(np.ones(16))  # one row must be given as shape (1, 16)
    with pytest.raises(InputError, match="NaN"):
        head.predict(np.full((1, 16), np.nan))


@pytest.mark.parametrize("name", ["prototype", "knn", "linear", "cache", "auto"])
def test_one_class_is_refused(name):
    E, _ = clusters(seed=8)
    with pytest.raises(InputError, match="only one class"):
        make_head(name).fit(E, ["same"] * len(E))


def test_make_head_rejects_unknown_names():
    with pytest.raises(InputError, match="unknown head 'svm'"):
        make_head("svm")


# -- maths on exact cases -----------------------------------------------------------------------------
def test_softmax_temperature():
    s = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(softmax(s, 1.0), [[np.e / (np.e + 1), 1 / (np.e + 1)]])
    np.testing.assert_allclose(softmax(s, 0.5)[0, 0], np.exp(2) / (np.exp(2) + 1))
    np.testing.assert_allclose(softmax(np.array([[1000.0, 0.0]]), 1.0), [[1.0, 0.0]])  # no overflow


def test_prototype_centroids_are_normalised_class_means():
    E = np.array([[1, 0], [0, 1], [-1, 0], [-1, 0.2]], dtype=np.float32)
    head = PrototypeHead().fit(E, [0, 0, 1, 1])
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    expect = np.vstack([En[:2].mean(0), En[2:].mean(0)])
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(head.centroids_, expect, atol=1e-6)
    np.testing.assert_allclose(head.class_scores([[1, 0]]), [[expect[0, 0], expect[1, 0]]], atol=1e-6)


def test_prototype_partial_fit_equals_fit_on_everything():
    E, y = clusters(seed=9)
    whole = PrototypeHead(center=True).fit(E, y)
    inc = PrototypeHead(center=True).fit(E[:20], y[:20]).partial_fit(E[20:], y[20:])
    np.testing.assert_allclose(inc.centroids_, whole.centroids_, atol=1e-6)


def test_centring_subtracts_the_support_mean():
    E = np.array([[1, 1], [1, 0.8], [0.8, 1]], dtype=np.float32)
    head = PrototypeHead(center=True).fit(E, [0, 1, 1])
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    np.testing.assert_allclose(head.mean_, En.mean(0), atol=1e-6)


def test_zeroshot_pools_prompts_by_weight():
    E = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32)
    # one prompt of weight 1 against two prompts of weight 0.25 each: the class vector leans to [1, 0]
    head = ZeroShotHead().fit(E, ["a", "a", "a"], sample_weight=[1.0, 0.25, 0.25])
    v = np.array([1.0, 0.5]) / np.linalg.norm([1.0, 0.5])
    np.testing.assert_allclose(head.centroids_[0], v, atol=1e-6)


def test_zeroshot_soft_pool_is_a_weighted_log_mean_exp_of_each_class_prompts():
    rng = np.random.default_rng(0)
    P, y = rng.normal(size=(7, 5)), ["b", "a", "b", "c", "a", "b", "c"]
    w = np.array([1.0, 0.5, 0.25, 1.0, 2.0, 1.0, 0.5])
    E = rng.normal(size=(4, 5))
    head = ZeroShotHead(pool=0.05).fit(P, y, sample_weight=w)
    Pn, En = P / np.linalg.norm(P, axis=1, keepdims=True), E / np.linalg.norm(E, axis=1, keepdims=True)
    S = head.class_scores(E)
    for j, c in enumerate(head.classes_):
        mine = [i for i, label in enumerate(y) if label == c]
        cos = En @ Pn[mine].T
        expected = 0.05 * np.log((np.exp(cos / 0.05) * w[mine]).sum(axis=1) / w[mine].sum())
        np.testing.assert_allclose(S[:, j], expected, atol=1e-6)  # inputs and prompts pass through float32
        assert np.all(S[:, j] <= cos.max(axis=1) + 1e-6) and np.all(S[:, j] >= cos @ w[mine] / w[mine].sum() - 1e-6)
    # the class means are those of the mean head; a tiny pool is the best prompt's cosine, never -inf
    np.testing.assert_allclose(head.centroids_, ZeroShotHead().fit(P, y, sample_weight=w).centroids_)
    sharp = ZeroShotHead(pool=1e-4).fit(P, y).class_scores(E)
    assert np.isfinite(sharp).all()
    # saved and loaded, the scores are the same to the last bit
    config, arrays = head.get_state()
    np.testing.assert_array_equal(ZeroShotHead.from_state(config, arrays).class_scores(E), S)
    with pytest.raises(CorruptFileError, match="prompts"):
        ZeroShotHead.from_state(config, {**arrays, "codes": arrays["codes"] + 1})  # a class left without prompts
    for bad in ({"prompt_weights": np.zeros(7)}, {"prompts": np.full((7, 5), np.nan)}, {"prompts": np.ones((7, 4))}):
        with pytest.raises(CorruptFileError, match="prompts"):
            ZeroShotHead.from_state(config, {**arrays, **bad})
    with pytest.raises(CorruptFileError, match="pool"):
        ZeroShotHead.from_state({**config, "params": {**config["params"], "pool": 0}}, arrays)


def test_knn_k_adapts_to_smallest_class_and_votes_by_similarity():
    E = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0, 1]], dtype=np.float32)
    head = KNNHead(k=10).fit(E, ["a", "a", "a", "a", "b"])
    assert head.k_ == 1  # class b has a single example
    assert head.predict([[0.05, 1]])[0] == "b"
    head = KNNHead(k=3, temperature=1.0).fit(E[:4].tolist() + [[0, 1], [0.1, 1], [0.2, 1]], list("aaaabbb"))
    P = head.predict_proba([[1, 0]])
    assert P[0, 0] == 1.0  # all three nearest are "a"


def test_linear_chooses_C_by_cross_validation_and_records_scores():
    E, y = clusters(seed=10, per_class=10)
    head = LinearHead().fit(E, y)
    assert set(head.cv_scores_) == {0.1, 1.0, 10.0, 100.0}
    assert head.C_ in head.cv_scores_
    assert head.cv_scores_[head.C_] == max(head.cv_scores_.values())
    one_each = LinearHead().fit(E[::10], y[::10])  # one example a class: no CV possible
    assert one_each.C_ == 10.0 and one_each.cv_scores_ == {}


def test_linear_binary_probabilities_match_sklearn():
    from sklearn.linear_model import LogisticRegression

    E, y = clusters(n_classes=2, seed=11)
    head = LinearHead(C=1.0).fit(E, y)
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(En, y)
    np.testing.assert_allclose(head.predict_proba(E), ref.predict_proba(En), atol=1e-6)


def test_classes_argument_sets_the_column_order():
    E, y = clusters(seed=12)
    names = np.array(["zebra", "ant", "moth"])[y]
    head = PrototypeHead().fit(E, names, classes=["zebra", "ant", "moth"])
    assert list(head.classes_) == ["zebra", "ant", "moth"]
    assert (head.predict(E) == names).mean() > 0.9
    with pytest.raises(InputError, match="exactly once"):
        PrototypeHead().fit(E, names, classes=["zebra", "ant"])


# -- the cache adapter (Tip-Adapter) --------------------------------------------------------------------
def test_cache_scores_match_the_formula_on_a_small_case():
    K = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    prior = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    head = CacheAdapterHead(beta=2.0, weights=(1.0, 0.5)).fit(K, ["a", "a", "b"], prior=prior)
    q = np.array([[0.8, 0.6]], dtype=np.float32)
    q_prior = np.array([[0.4, 0.6]])
    A = np.exp(-2.0 * (1.0 - q @ K.T))[0]
    cache = np.array([A[0] + A[1], A[2]])
    # the scales are the spreads of the two terms on the support (leave-one-out for the cache)
    loo = np.exp(-2.0 * (1.0 - K @ K.T))
    np.fill_diagonal(loo, 0.0)
    s_cache = np.stack([loo[:2, :2].sum(1), loo[:2, 2]], axis=1).std()  # rows of the examples held out
    expected = q_prior[0] / prior.std() + 0.5 * cache / s_cache
    assert np.allclose(head.class_scores(q, prior=q_prior)[0], expected)
    assert head.selection_["scored_examples"] == 2  # "b" has one example: it cannot be held out


def test_cache_leave_one_out_is_computed_on_the_support_alone():
    E, y = clusters(n_classes=3, per_class=6, seed=3)
    head = CacheAdapterHead(beta=0.0).fit(E, y)  # cache only, prototype mode
    # recompute the leave-one-out accuracy by hand: each example against the class means without it
    hits = 0
    for i in range(len(E)):
        keep = np.arange(len(E)) != i
        means = np.stack([E[keep & (y == c)].mean(0) for c in head.classes_])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        hits += head.classes_[np.argmax(means @ (E[i] / np.linalg.norm(E[i])))] == y[i]
    assert head.selection_["candidates"][0]["loo_accuracy"] == round(hits / len(E), 4)
    # predicting on other data never changes what was chosen: the choice is made at fit, from the support
    chosen = (head.beta_, head.weights_, head.temperature_)
    head.predict(clusters(n_classes=3, per_class=20, seed=99)[0])
    assert (head.beta_, head.weights_, head.temperature_) == chosen


def test_cache_weighs_a_good_prior_up_and_a_useless_one_down():
    E, y = clusters(n_classes=3, per_class=8, seed=4, spread=1.5)  # heavily overlapping clusters
    codes = np.searchsorted(np.unique(y), y)
    good = np.eye(3)[codes] * 0.5 + 0.1
    noise = np.random.default_rng(0).random((len(E), 3))
    wp, wc = CacheAdapterHead().fit(E, y, prior=good).weights_
    assert wp > 0 and wc <= wp
    clean, yc = clusters(n_classes=3, per_class=8, seed=5, spread=0.2)
    wp, wc = CacheAdapterHead().fit(clean, yc, prior=noise).weights_
    assert wc >= 4 * wp


def test_cache_held_out_scores_come_from_the_head_as_fitted_so_they_share_its_scale():
    E, y = clusters(n_classes=3, per_class=10, seed=4, spread=1.5)
    codes = np.searchsorted(np.unique(y), y)
    prior = np.eye(3)[codes] * 0.5 + 0.1
    head = CacheAdapterHead().fit(E, y, prior=prior)
    template = head._held_out_template()
    assert (template.beta, tuple(template.weights)) == (head.beta_, tuple(head.weights_))  # not chosen again
    S = head.held_out_scores(E, y, prior=prior)
    own = S[np.arange(len(E)), codes]
    full = head.class_scores(E, prior=prior)[np.arange(len(E)), codes]
    assert abs(np.median(own) / np.median(full) - 1) < 0.25, (np.median(own), np.median(full))
    assert CacheAdapterHead().fit(E, y)._held_out_template().weights is None  # no prior: the cache alone


def test_cache_prior_must_be_given_consistently():
    E, y = clusters(seed=6)
    with_prior = CacheAdapterHead().fit(E, y, prior=np.zeros((len(E), 3)))
    with pytest.raises(InputError, match="pass prior="):
        with_prior.predict(E)
    with pytest.raises(InputError, match="without prior"):
        CacheAdapterHead().fit(E, y).predict(E, prior=np.zeros((len(E), 3)))
    with pytest.raises(DimensionError):
        CacheAdapterHead().fit(E, y, prior=np.zeros((len(E), 2)))


def test_cache_one_shot_trusts_the_prior_only_if_it_beats_chance():
    E = np.eye(8, dtype=np.float32)
    y = list("abcdefgh")
    right = np.eye(8)
    wrong = np.roll(np.eye(8), 1, axis=1)
    wrong[0] = right[0]  # one hit in eight is what chance gives
    assert CacheAdapterHead().fit(E, y, prior=right).weights_ == (1.0, 1.0)
    assert CacheAdapterHead().fit(E, y, prior=wrong).weights_ == (0.0, 1.0)


# -- automatic choice -----------------------------------------------------------------------------------
def test_auto_picks_by_cross_validation_on_the_support_and_records_why():
    # two classes that are one tight cluster and one ring around it: class means coincide, so the
    # prototype head fails while kNN separates them; auto must find that from the support alone
    rng = np.random.default_rng(0)
    inner = np.array([1.0, 0.0, 0.0]) + 0.02 * rng.standard_normal((12, 3))
    angles = rng.uniform(0, 2 * np.pi, 12)
    ring = np.stack([np.full(12, 0.6), np.cos(angles), np.sin(angles)], axis=1)
    E = np.vstack([inner, ring]).astype(np.float32)
    y = np.array(["in"] * 12 + ["ring"] * 12)
    head = AutoHead(candidates=["prototype", "knn"], folds=4).fit(E, y)
    assert head.selection_["scores"]["knn"] > head.selection_["scores"]["prototype"]
    assert head.choice_ == "knn" and "cross-validated" in head.selection_["why"]
    config, arrays = head.get_state()
    again = head_from_state(config, arrays)
    assert again.choice_ == "knn" and np.allclose(again.predict_proba(E), head.predict_proba(E))
    one_each = AutoHead().fit(E[[0, 12]], ["in", "ring"])
    assert one_each.choice_ == "prototype" and "single example" in one_each.selection_["why"]


def test_auto_keeps_a_preferred_candidate_unless_beaten_by_more_than_one_standard_error():
    E, y = clusters(n_classes=2, per_class=8, seed=3)
    names = ["prototype", "linear", "cache"]
    how = "measured elsewhere"
    # 16 examples at about 0.7: one standard error of the difference is sqrt(2 * 0.7 * 0.3 / 16) = 0.16
    close = {"prototype": 0.8125, "linear": 0.75, "cache": 0.625}  # +0.1875 over cache at p = 0.72: 0.159
    near = {"prototype": 0.75, "linear": 0.6875, "cache": 0.625}  # +0.125: within one standard error
    kept = AutoHead(candidates=names).fit(E, y, held_out=(near, how), prefer="cache")
    assert kept.choice_ == "cache" and "one standard error" in kept.selection_["why"]
    beaten = AutoHead(candidates=names).fit(E, y, held_out=(close, how), prefer="cache")
    assert beaten.choice_ == "prototype" and "standard error" not in beaten.selection_["why"]
    assert beaten.selection_["prefer"] == "cache" and beaten.selection_["margin"] == pytest.approx(0.159, abs=1e-3)
    assert AutoHead(candidates=names).fit(E, y, held_out=(near, how)).choice_ == "prototype"  # no preference
    with pytest.raises(InputError, match="knn"):
        AutoHead(candidates=names).fit(E, y, held_out=(near, how), prefer="knn")


def test_cache_trained_mode_lowers_the_leave_one_out_loss_and_round_trips():
    E, y = clusters(n_classes=3, per_class=10, seed=11, spread=1.2)
    prior = np.random.default_rng(1).random((len(E), 3))
    free = CacheAdapterHead(beta=5.0, weights=(1.0, 1.0)).fit(E, y, prior=prior)
    trained = CacheAdapterHead(beta=5.0, weights=(1.0, 1.0), train_epochs=30, lr=0.01).fit(E, y, prior=prior)
    start = free.selection_["candidates"][0]["loo_log_loss"]  # the same scores before any training step
    assert trained.selection_["trained"]["final_loss"] < start
    assert not np.allclose(trained.keys_, free.keys_)
    assert np.allclose(np.linalg.norm(trained.keys_, axis=1), 1.0, atol=1e-5)
    config, arrays = trained.get_state()
    again = head_from_state(config, arrays)
    Q, _ = clusters(n_classes=3, per_class=4, seed=12, spread=1.2)
    q_prior = np.random.default_rng(2).random((len(Q), 3))
    assert np.allclose(again.predict_proba(Q, prior=q_prior), trained.predict_proba(Q, prior=q_prior))
