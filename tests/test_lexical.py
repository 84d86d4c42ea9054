"""The lexical channel: TF-IDF features and a regression on the words, pooled with a head where the support
set's held-out scores say the words help."""

from __future__ import annotations

import numpy as np
import pytest

import fewshot.lexical as lexical
from fewshot import FewShotClassifier
from fewshot.errors import CorruptFileError, InputError
from fewshot.lexical import LexicalChannel, LexicalModel, choose, held_out_log_proba, terms

WORDY = {
    "refund": ["I want my money back", "please refund the order", "refund me now", "money back please"],
    "delivery": ["where is my parcel", "the parcel never came", "parcel tracking says lost", "late parcel again"],
    "login": ["cannot log in", "password reset fails", "log in page broken", "forgot my password"],
}


def wordy() -> tuple[list[str], np.ndarray]:
    texts = [t for ts in WORDY.values() for t in ts]
    codes = np.repeat(np.arange(len(WORDY)), [len(ts) for ts in WORDY.values()])
    return texts, codes


# -- the model ------------------------------------------------------------------------------------------
def test_terms_are_lower_cased_words_and_adjacent_pairs():
    assert terms("I wish it HAD, really!") == [
        "i",
        "wish",
        "it",
        "had",
        "really",
        "i wish",
        "wish it",
        "it had",
        "had really",
    ]
    assert terms("") == []


def test_the_words_decide_and_probabilities_are_normalised():
    texts, codes = wordy()
    model = LexicalModel().fit(texts, codes, 3)
    logp = model.log_proba(["my parcel is late", "reset my password", "refund please", "nothing in common"])
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-9)
    assert logp[:3].argmax(axis=1).tolist() == [1, 2, 0]
    assert np.ptp(logp[3]) < np.ptp(logp[0])  # no known word: a flatter answer


def test_two_classes_and_a_class_without_examples():
    texts, codes = wordy()
    keep = codes < 2
    model = LexicalModel().fit([t for t, k in zip(texts, keep) if k], codes[keep], 3)
    logp = model.log_proba(["where is my parcel", "money back"])
    assert logp.argmax(axis=1).tolist() == [1, 0]
    np.testing.assert_allclose(model.coef_[0], -model.coef_[1])  # one fit, the two scores either side of 0
    assert np.exp(logp[:, 2]).max() < 1e-100  # never predicted


def test_texts_without_words_score_every_class_alike():
    model = LexicalModel().fit(["!!", "?!", "...", "\u2026"], np.array([0, 0, 1, 1]), 3)
    assert model.vocabulary_ == []
    logp = model.log_proba(["any words at all", "!!"])
    np.testing.assert_allclose(np.exp(logp[:, :2]), 0.5)  # the two classes seen, alike; the third never
    assert np.exp(logp[:, 2]).max() < 1e-100


def test_needs_two_classes():
    with pytest.raises(InputError, match="at least two classes"):
        LexicalModel().fit(["a b", "c d"], np.array([0, 0]), 2)


def test_state_round_trip_and_corrupt_states():
    texts, codes = wordy()
    channel = LexicalChannel(LexicalModel().fit(texts, codes, 3), 0.3, 0.5, 2.0, texts, codes)
    config, arrays = channel.get_state()
    import json

    config = json.loads(json.dumps(config))  # what a manifest holds
    back = LexicalChannel.from_state(config, arrays)
    head = np.log(np.full((2, 3), 1 / 3))
    np.testing.assert_array_equal(
        back.pool(head, ["lost parcel", "refund"]), channel.pool(head, ["lost parcel", "refund"])
    )
    assert (back.weight, back.head_temperature, back.lexical_temperature) == (0.3, 0.5, 2.0)
    with pytest.raises(CorruptFileError, match="inconsistent"):
        LexicalChannel.from_state(config, {**arrays, "idf": arrays["idf"][:-1]})
    with pytest.raises(CorruptFileError, match="cannot be read"):
        LexicalChannel.from_state({k: v for k, v in config.items() if k != "weight"}, arrays)
    with pytest.raises(CorruptFileError, match="texts, 11 labels"):
        LexicalChannel.from_state(config, {**arrays, "codes": arrays["codes"][:-1]})
    assert "sample_weight" not in arrays and back.sample_weight is None


def test_sample_weights_weigh_the_regression_and_survive_add_and_save():
    texts, codes = wordy()
    ambiguous = ["parcel refund"]  # a word of each class
    heavy = np.where(codes == 1, 10.0, 1.0)  # the delivery examples count ten times
    plain = LexicalModel().fit(texts, codes, 3).log_proba(ambiguous)
    weighted = LexicalModel().fit(texts, codes, 3, sample_weight=heavy).log_proba(ambiguous)
    assert weighted[0, 1] - weighted[0, 0] > plain[0, 1] - plain[0, 0]
    channel = LexicalChannel(LexicalModel().fit(texts, codes, 3, heavy), 0.3, 1.0, 1.0, texts, codes, heavy)
    grown = channel.add(["my screen is dark"], np.array([3]), 4)
    np.testing.assert_array_equal(grown.sample_weight, np.append(heavy, 1.0))
    config, arrays = grown.get_state()
    back = LexicalChannel.from_state(config, arrays)
    np.testing.assert_array_equal(back.sample_weight, grown.sample_weight)
    with pytest.raises(CorruptFileError, match="13 weights"):
        LexicalChannel.from_state(config, {**arrays, "codes": arrays["codes"][:-1]})


def test_held_out_scores_never_see_their_own_example():
    texts, codes = wordy()
    folds = [(np.flatnonzero(np.arange(12) % 4 != f), np.flatnonzero(np.arange(12) % 4 == f)) for f in range(4)]
    out = held_out_log_proba(texts, codes, 3, folds)
    for train, test in folds:
        model = LexicalModel().fit([texts[i] for i in train], codes[train], 3)
        np.testing.assert_allclose(out[test], model.log_proba([texts[i] for i in test]))


def test_choose_follows_the_held_out_accuracy():
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(3), 20)
    right = np.log(np.where(np.eye(3)[codes] > 0, 0.8, 0.1))  # always right
    noise = np.log(rng.dirichlet(np.ones(3), size=len(codes)))  # right a third of the time
    weight, _, _, record = choose(right, noise, codes)
    assert weight == 0.0 and record["picked"] == 0.0  # the words add nothing: the head alone
    assert record["why"] == "no weight gets more held-out examples right than the head alone"
    weight, t_head, t_lexical, record = choose(noise, right, codes)
    assert weight > 0 and record["weights"][str(weight)] == 1.0 > record["weights"]["0.0"]
    assert t_lexical < t_head  # the reliable channel is sharpened, the noisy one flattened


def test_choose_keeps_the_head_alone_unless_the_words_win_by_two_held_out_examples():
    codes = np.repeat(np.arange(2), 10)
    confident = np.log(np.where(np.eye(2)[codes] > 0, 0.9, 0.1))
    for wrong, expect_channel in ((1, False), (2, True)):
        head = confident.copy()
        head[:wrong] = head[:wrong, ::-1]  # the head gets `wrong` examples wrong, confidently
        lexical = np.log(np.where(np.eye(2)[codes] > 0, 0.6, 0.4))  # always right, unsure
        weight, _, _, record = choose(head, lexical, codes)
        won = round((max(record["weights"].values()) - record["weights"]["0.0"]) * len(codes))
        assert won == wrong  # some weight fixes every mistake of the head
        assert (weight > 0) == expect_channel and record["picked"] == weight
        assert ("why" in record) != expect_channel and (expect_channel or "under 2" in record["why"])


# -- in the classifier ------------------------------------------------------------------------------------
def head_scores(clf: FewShotClassifier, X: list[str]) -> np.ndarray:
    """The class scores of the classifier's head alone."""
    E, kw = clf._head_inputs(X, show_progress=False)
    return clf.head_.class_scores(E, **kw)


@pytest.fixture(scope="module")
def newsgroups(data_root):
    """8 posts of each of 20 newsgroups (seed 0) and 200 test posts: topics told apart by their jargon."""
    from eval.datasets import load, sample_per_class
    from eval.sampling import capped_subsample

    ds = load("20newsgroups", data_root)
    support = sample_per_class(ds.train_labels, 8, 0)
    test = capped_subsample(ds.test_labels, 200)
    return (
        [ds.train_texts[i] for i in support],
        [ds.label_names[c] for c in ds.train_labels[support]],
        [ds.test_texts[i] for i in test],
        np.asarray([ds.label_names[c] for c in ds.test_labels[test]], dtype=object),
    )


def test_the_channel_is_chosen_where_words_help_and_pools_consistently(newsgroups, text_encoder, tmp_path):
    X, y, X_test, y_test = newsgroups
    plain = FewShotClassifier(text_encoder, head="cache", lexical=False).fit(X, y)
    clf = FewShotClassifier(text_encoder, head="cache").fit(X, y)  # lexical="auto" is the default
    assert plain.lexical_ is None and plain.lexical_channel_ is None
    assert clf.lexical_["picked"] > 0 and clf.lexical_channel_ is not None
    assert clf.lexical_["weights"][str(clf.lexical_["picked"])] > clf.lexical_["weights"]["0.0"]
    assert "pooled with the lexical channel" in clf.calibration_["method"]
    # the head is the same; the channel only adds the words
    np.testing.assert_array_equal(head_scores(plain, X_test[:5]), head_scores(clf, X_test[:5]))
    S = clf.class_scores(X_test)
    np.testing.assert_allclose(np.exp(S).sum(axis=1), 1.0, atol=1e-9)  # pooled log-probabilities
    pred, best, proba = clf.predict_with_scores(X_test)
    assert (pred == clf.classes_[S.argmax(axis=1)]).all() and np.allclose(best, S.max(axis=1))
    np.testing.assert_allclose(proba, clf.predict_proba(X_test))
    assert np.mean(pred == y_test) > 0.5  # 20 topics, 8 posts each
    # saved and loaded: the same answers, nothing unpickled
    clf.save(tmp_path / "m")
    back = FewShotClassifier.load(tmp_path / "m", encoder=text_encoder)
    assert back.lexical == "auto" and back.lexical_ == clf.lexical_
    np.testing.assert_allclose(back.predict_proba(X_test), clf.predict_proba(X_test), atol=1e-9)


def test_a_classifier_without_the_channel_is_unchanged_and_add_examples_refits_it(
    newsgroups, text_encoder, monkeypatch
):
    X, y, X_test, _ = newsgroups
    monkeypatch.setattr(lexical, "WEIGHTS", (0.5,))  # the channel on whatever the held-out scores say
    clf = FewShotClassifier(text_encoder, head="prototype", lexical="auto").fit(X[:40], y[:40])
    assert clf.lexical_channel_.weight == 0.5 and clf.lexical_channel_.model.coef_.shape[0] == len(clf.classes_)
    new = ["my kettle boils the water for tea", "the teapot and the kettle are on the stove"]
    clf.add_examples(new, ["kitchen", "kitchen"])
    assert clf.head_.classes_[-1] == "kitchen" and clf.lexical_channel_.model.coef_.shape[0] == len(clf.classes_)
    assert clf.classes_.tolist() == sorted(clf.head_.classes_.tolist())  # the head appends; classes_ stay sorted
    assert len(clf.lexical_channel_.texts) == 42
    assert clf.predict(["the kettle is on the stove"])[0] == "kitchen"
    np.testing.assert_allclose(np.exp(clf.class_scores(X_test[:3])).sum(axis=1), 1.0, atol=1e-9)


def test_the_channel_reads_text_only(fake_encoder):
    from conftest import FakeEncoder

    class FakeImages(FakeEncoder):
        modality = "image"

    clf = FewShotClassifier(FakeImages()).fit(["a.png", "b.png", "c.png", "d.png"], [0, 0, 1, 1])
    assert clf.lexical == "auto" and clf.lexical_ is None and clf.lexical_channel_ is None  # no words to read

    class Vectors(FakeEncoder):  # a user's encoder that leaves modality at "text" but takes other inputs
        def validate(self, inputs):
            return list(inputs)

        def _encode(self, items, batch_size, show_progress):
            return np.asarray(items, dtype=np.float32)

    X = [(1.0, 0.0), (0.9, 0.1), (0.0, 1.0), (0.1, 0.9)]
    clf = FewShotClassifier(Vectors(dim=2)).fit(X, ["a", "a", "b", "b"])
    assert clf.lexical_ is None and list(clf.predict([(1.0, 0.2)])) == ["a"]
    with pytest.raises(ValueError, match="lexical"):
        FewShotClassifier(fake_encoder, lexical="yes").fit(["a", "b"], ["x", "y"])


def test_a_model_saved_before_the_channel_existed_loads_without_it(fake_encoder, tmp_path):
    import json

    from fewshot.storage.bundle import manifest_checksum

    X, y = ["red apple", "apple pie", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    FewShotClassifier(fake_encoder, lexical=False).fit(X, y).save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    for key in ("lexical", "lexical_selection"):
        manifest.pop(key)
    manifest["checksum"] = manifest_checksum(manifest)  # as that version wrote it
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    back = FewShotClassifier.load(tmp_path / "m", encoder=fake_encoder)
    assert back.lexical is False and back.lexical_channel_ is None
    assert list(back.predict(["apple"])) == ["fruit"]


def test_abstention_keeps_the_head_alone(newsgroups, text_encoder):
    X, y, X_test, _ = newsgroups
    clf = FewShotClassifier(text_encoder, abstain=0.3).fit(X, y)
    assert clf.lexical_channel_ is None and "abstention" in clf.lexical_["why"]
    S = clf.class_scores(X_test[:20])
    np.testing.assert_allclose(S, head_scores(clf, X_test[:20]))  # cosines, the threshold's units
    assert ((clf.predict(X_test[:20]) == None) == (S.max(axis=1) < 0.3)).all()  # noqa: E711
    auto = FewShotClassifier(text_encoder, abstain="auto").fit(X, y)
    assert auto.lexical_channel_ is None and auto.threshold_ is not None
    np.testing.assert_allclose(auto.class_scores(X_test[:5]), head_scores(auto, X_test[:5]))
    assert FewShotClassifier(text_encoder).fit(X, y).lexical_channel_ is not None  # without abstention: pooled


def test_sample_weight_reaches_the_channel(newsgroups, text_encoder, monkeypatch):
    X, y, X_test, _ = newsgroups
    monkeypatch.setattr(lexical, "WEIGHTS", (0.5,))  # the channel on whatever the held-out scores say
    w = np.where(np.asarray(y) == y[0], 5.0, 1.0)
    clf = FewShotClassifier(text_encoder, head="prototype").fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(clf.lexical_channel_.sample_weight, w)
    codes = np.array([list(clf.classes_).index(label) for label in y])
    weighted = LexicalModel().fit(X, codes, len(clf.classes_), sample_weight=w)
    np.testing.assert_allclose(clf.lexical_channel_.model.coef_, weighted.coef_)
    unweighted = LexicalModel().fit(X, codes, len(clf.classes_))
    assert not np.allclose(weighted.coef_, unweighted.coef_)
    # added examples carry their own weights into the head and the channel
    new = ["my kettle boils the water for tea", "the teapot and the kettle are on the stove"]
    light = FewShotClassifier(text_encoder, head="prototype").fit(X, y).add_examples(new, ["kitchen"] * 2)
    clf.add_examples(new, ["kitchen"] * 2, sample_weight=[3.0, 1.0])
    np.testing.assert_array_equal(clf.lexical_channel_.sample_weight, np.append(w, [3.0, 1.0]))
    kitchen = list(clf.head_.classes_).index("kitchen")  # a row of the head's own arrays
    assert not np.allclose(clf.head_.centroids_[kitchen], light.head_.centroids_[kitchen])
    with pytest.raises(InputError, match="sample_weight must have shape"):
        clf.add_examples(new, ["kitchen"] * 2, sample_weight=[1.0])


def test_a_single_example_class_leaves_the_channel_off(text_encoder):
    clf = FewShotClassifier(text_encoder, lexical="auto").fit(
        ["good film", "great film", "awful"], ["pos", "pos", "neg"]
    )
    assert clf.lexical_channel_ is None and "single example" in clf.lexical_["why"]


def test_examples_without_words_leave_the_channel_off(text_encoder):
    X = ["\U0001f600", "\U0001f600\U0001f600", "\U0001f621", "\U0001f621\U0001f621", "!!", "?!"]
    y = ["pos", "pos", "neg", "neg", "pos", "neg"]
    clf = FewShotClassifier(text_encoder, lexical="auto").fit(X, y)
    assert clf.lexical_channel_ is None and clf.lexical_ == {"picked": 0.0, "why": "the examples have no words"}
    assert clf.predict(["\U0001f600"])[0] in {"pos", "neg"}
    # a few examples with words among many without: each fold's model still fits, the weight is chosen
    clf = FewShotClassifier(text_encoder, lexical="auto").fit(X + ["happy day", "sad day"], y + ["pos", "neg"])
    assert "weights" in clf.lexical_


def test_on_a_tuned_body_the_channel_uses_the_cross_fitted_folds(newsgroups, text_encoder):
    X, y, X_test, _ = newsgroups
    keep = [i for i, label in enumerate(y) if label in sorted(set(y))[:4]]
    clf = FewShotClassifier(text_encoder, head="cache", tune={"steps": 2}, lexical="auto")
    clf.fit([X[i] for i in keep], [y[i] for i in keep])
    assert clf.lexical_["n"] == 32  # every example scored once, by the cross-fit halves
    assert "held-out folds" in clf.calibration_["method"]
    assert clf.predict(X_test[:4]).shape == (4,)


def test_a_tuned_body_cross_fits_for_the_channel_even_without_calibration(newsgroups, text_encoder, monkeypatch):
    X, y, _, _ = newsgroups
    keep = [i for i, label in enumerate(y) if label in sorted(set(y))[:4]]
    calls = []
    cross_fitted = FewShotClassifier._cross_fitted

    def spy(self, *args, **kwargs):
        calls.append(1)
        return cross_fitted(self, *args, **kwargs)

    monkeypatch.setattr(FewShotClassifier, "_cross_fitted", spy)
    clf = FewShotClassifier(text_encoder, head="prototype", calibrate=False, tune={"steps": 2})
    clf.fit([X[i] for i in keep], [y[i] for i in keep])
    # a body tuned on every example scores them all near perfectly: the weight comes from the halves
    assert calls == [1] and clf.lexical_["n"] == 32
    calls.clear()
    FewShotClassifier(text_encoder, head="prototype", calibrate=False, tune={"steps": 2}, lexical=False).fit(
        [X[i] for i in keep], [y[i] for i in keep]
    )
    assert calls == []  # nothing asks for held-out scores: no extra tunes
