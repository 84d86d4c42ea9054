"""Zero-shot tags with the defaults: the best label, or none of these, judged against ordinary text."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot import InputError, ZeroShotClassifier
from fewshot.classifiers.background import background_sentences, nearest_background
from tests.conftest import FakeEncoder

LABELS = ["money and payments", "delivery", "sport", "software bug"]
TEXTS = [
    "The parcel came late and the invoice charged me for express shipping.",
    "Our team lost the final after a penalty shoot-out.",
    "The app crashes every time I open the settings page.",
    "I baked bread this morning.",
]


def test_default_tags_are_the_best_label_or_none(text_encoder):
    zs = ZeroShotClassifier(LABELS, encoder=text_encoder)
    tags = zs.tag(TEXTS)
    assert [[label for label, _ in t] for t in tags] == [["delivery"], ["sport"], ["software bug"], []]
    # more tags when asked: a margin, or a fixed score
    wide = zs.tag(TEXTS[:1], margin=0.35)[0]
    assert [label for label, _ in wide] == ["delivery", "money and payments"]
    fixed = zs.tag(TEXTS, threshold=0.25)
    assert {label for label, _ in fixed[0]} == {"delivery", "money and payments"} and fixed[3] == []
    scores = zs.class_scores(TEXTS)
    sport = zs.classes_.tolist().index("sport")
    assert tags[1][0][1] == pytest.approx(scores[1, sport], abs=1e-6)  # the cosine is reported
    with pytest.raises(InputError, match="margin"):
        zs.tag(TEXTS, margin=-1)


def test_none_of_these_follows_the_background_rule(text_encoder):
    """An input is left untagged exactly when its best label is no closer than its nearest ordinary
    sentences and not unusual for that label on ordinary text."""
    from fewshot.classifiers import zero_shot as zmod
    from fewshot.classifiers.background import background_embeddings

    zs = ZeroShotClassifier(LABELS, encoder=text_encoder).fit()
    texts = TEXTS + ["The weather is nice today.", "Refund the double charge on my card, please."]
    E = zs.embed(texts)  # each text beside its frame, as tag() reads it
    S = zs.label_scores(E)
    best = S.argmax(1)
    top = S.max(1)
    z = (top - zs.background_["mean"][best]) / zs.background_["std"][best]
    near = nearest_background(E, background_embeddings(text_encoder, zs.frame_), zmod.TAG_NONE_NEIGHBOURS)
    expected_none = (z < zmod.TAG_NONE_Z) & (top <= near + zmod.TAG_NONE_DELTA)
    got_none = np.array([t == [] for t in zs.tag(texts)])
    np.testing.assert_array_equal(got_none, expected_none)
    assert got_none[3] and not got_none[0] and not got_none[5]


def test_text_inputs_are_read_beside_a_frame_and_the_setting_is_saved(tmp_path, text_encoder):
    from fewshot.classifiers.zero_shot import INPUT_FRAME
    from fewshot.maths import l2_normalize

    zs = ZeroShotClassifier(LABELS, encoder=text_encoder).fit()
    assert zs.frame_ == INPUT_FRAME == "Sentence: {}" and zs.head_.pool is not None
    own = text_encoder.encode(TEXTS)
    framed = text_encoder.encode([INPUT_FRAME.replace("{}", t) for t in TEXTS])
    np.testing.assert_allclose(zs.embed(TEXTS), l2_normalize(l2_normalize(own) + l2_normalize(framed)), atol=1e-6)
    given = [LABELS.index(c) for c in zs.classes_]  # label_scores keeps the labels' order, class_scores sorts
    np.testing.assert_allclose(zs.class_scores(TEXTS), zs.label_scores(zs.embed(TEXTS))[:, given], atol=1e-9)
    plain = ZeroShotClassifier(LABELS, encoder=text_encoder, frame="none", pool="mean").fit()
    assert plain.frame_ is None and plain.head_.pool is None
    np.testing.assert_allclose(plain.embed(TEXTS), own, atol=1e-6)
    assert not np.allclose(plain.class_scores(TEXTS), zs.class_scores(TEXTS), atol=1e-3)
    # a bag of word vectors is not framed by default (it would only gain the frame's words); a frame given is used
    assert ZeroShotClassifier(LABELS, encoder=FakeEncoder()).fit().frame_ is None
    assert ZeroShotClassifier(LABELS, encoder=FakeEncoder(), frame="Text: {}").fit().frame_ == "Text: {}"
    for frame in ("Sentence:", "{} and {}"):  # the input goes in once
        with pytest.raises(InputError, match="frame.*template with one \\{\\}"):
            ZeroShotClassifier(LABELS, encoder=text_encoder, frame=frame).fit()
    # saved and loaded: the same frame, the same pooled prompts, the same scores
    for model in (zs, plain):
        again = ZeroShotClassifier.load(model.save(tmp_path / str(model.frame_ is None)), encoder=text_encoder)
        assert (again.frame, again.pool, again.frame_) == (model.frame, model.pool, model.frame_)
        np.testing.assert_array_equal(again.class_scores(TEXTS), model.class_scores(TEXTS))
        assert again.tag(TEXTS) == model.tag(TEXTS)


def test_background_is_embedded_once_per_encoder_and_saved_with_the_model(tmp_path):
    enc = FakeEncoder(dim=16)
    ZeroShotClassifier(["a", "b"], encoder=enc).fit()
    calls = enc.calls
    ZeroShotClassifier(["c", "d", "e"], encoder=enc).fit()
    assert enc.calls - calls < len(background_sentences())  # label prompts only: the background is cached
    zs = ZeroShotClassifier(["red fruit", "fast car"], encoder=enc).fit()
    again = ZeroShotClassifier.load(zs.save(tmp_path / "z"), encoder=enc)
    np.testing.assert_allclose(again.background_["mean"], zs.background_["mean"])
    probe = ["red apple", "fast red car", "quiet evening"]
    assert again.tag(probe) == zs.tag(probe)


def test_a_corpus_adapted_model_keeps_its_background_when_saved(tmp_path, text_encoder):
    """Adapting the label vectors to a corpus adds arrays to the save; the background statistics stay."""
    corpus = TEXTS + ["Shipping took two weeks.", "The striker scored twice.", "Login fails after the update."]
    zs = ZeroShotClassifier(LABELS, encoder=text_encoder, adapt="center").fit(corpus)
    assert zs.adaptation_["method"] != "none" and zs.background_ is not None
    again = ZeroShotClassifier.load(zs.save(tmp_path / "z"), encoder=text_encoder)
    assert again.background_ is not None
    np.testing.assert_allclose(again.background_["std"], zs.background_["std"])
    probe = TEXTS + ["What's the weather like tomorrow?"]
    assert again.tag(probe) == zs.tag(probe)
