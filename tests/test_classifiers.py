"""FewShotClassifier and ZeroShotClassifier with the real MiniLM on real datasets from ../shared/data."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from eval.datasets import load, sample_per_class
from fewshot import FewShotClassifier, FewShotWarning, ZeroShotClassifier
from fewshot.errors import EncoderMismatchError, InputError, NotFittedError
from tests.conftest import FakeEncoder, rewrite_manifest, subsample


@pytest.fixture(scope="module")
def ag_news(data_root):
    d = load("ag_news", data_root)
    support = sample_per_class(d.train_labels, 8, seed=0)
    names = np.asarray(d.label_names)
    X = [d.train_texts[i] for i in support]
    y = names[d.train_labels[support]]
    Xt, yt = subsample(d.test_texts, names[d.test_labels], 400)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def sst2(data_root):
    d = load("sst2", data_root)
    Xt, yt = subsample(d.test_texts, np.asarray(d.label_names)[d.test_labels], 400)
    return d, Xt, yt


# Floors sit well under what a correct pipeline scores here (measured: prototype 8-shot AG News 0.69,
# zero-shot AG News 0.64, SST-2 0.71 on 600 test items) and far over chance (0.25 and 0.5).
@pytest.mark.parametrize("head, floor", [("prototype", 0.6), ("knn", 0.55), ("linear", 0.6), ("cache", 0.6)])
def test_eight_shot_ag_news_accuracy(text_encoder, ag_news, head, floor):
    X, y, Xt, yt = ag_news
    clf = FewShotClassifier(encoder=text_encoder, head=head).fit(X, y)
    assert sorted(clf.classes_) == ["Business", "Sci/Tech", "Sports", "World"]
    assert clf.score(Xt, yt) >= floor


def test_eight_shot_sst2_accuracy(text_encoder, sst2):
    d, Xt, yt = sst2
    support = sample_per_class(d.train_labels, 8, seed=0)
    clf = FewShotClassifier(encoder=text_encoder).fit(
        pd.Series([d.train_texts[i] for i in support]), np.asarray(d.label_names)[d.train_labels[support]]
    )
    assert clf.score(Xt, yt) >= 0.6


def test_zero_shot_accuracy(text_encoder, ag_news, sst2):
    _, _, Xt, yt = ag_news
    zs = ZeroShotClassifier(["World", "Sports", "Business", "Sci/Tech"], encoder=text_encoder)
    assert list(zs.classes_) == ["Business", "Sci/Tech", "Sports", "World"]  # sorted, as scikit-learn keeps them
    assert (zs.predict(Xt) == yt).mean() >= 0.5
    _, Xs, ys = sst2
    zs2 = ZeroShotClassifier(["negative", "positive"], encoder=text_encoder)
    assert (zs2.predict(Xs) == ys).mean() >= 0.6


def test_save_load_gives_identical_predictions(tmp_path, text_encoder, ag_news):
    X, y, Xt, _ = ag_news
    for head in ("prototype", "knn", "linear"):
        clf = FewShotClassifier(encoder=text_encoder, head=head).fit(X, y)
        clf.save(tmp_path / head)
        again = FewShotClassifier.load(tmp_path / head)  # encoder recreated from the manifest
        np.testing.assert_array_equal(again.predict(Xt[:50]), clf.predict(Xt[:50]))
        np.testing.assert_allclose(again.predict_proba(Xt[:50]), clf.predict_proba(Xt[:50]), atol=1e-6)
    with pytest.raises(EncoderMismatchError):
        FewShotClassifier.load(tmp_path / "prototype", encoder=FakeEncoder(dim=384))
    from fewshot import TextEncoder

    with pytest.raises(EncoderMismatchError, match="differ in normalize: True against False"):
        FewShotClassifier.load(tmp_path / "prototype", encoder=TextEncoder(text_encoder.model, normalize=False))


def test_collected_warnings_are_each_threads_own_and_still_issued():
    """The service answers each request with what the library warned of while serving it, from worker
    threads running side by side: one thread's warnings must not reach another's list."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fewshot.errors import collected_warnings, warn_user

    both = threading.Barrier(2)

    def run(message: str) -> list[str]:
        with collected_warnings() as said:
            both.wait()
            warn_user(message)
            warn_user(message)  # said once
            both.wait()  # the other thread has warned too
        warn_user("after the block")
        return said

    with pytest.warns(FewShotWarning) as record, ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, ["first", "second"])
    assert first == ["first"] and second == ["second"]
    assert {"first", "second", "after the block"} <= {str(w.message) for w in record}
    # a block inside another passes what it hears on, unless it keeps it (issue=False) to decide itself
    with pytest.warns(FewShotWarning), collected_warnings() as outer:
        with collected_warnings() as inner:
            warn_user("heard by both")
        with collected_warnings(issue=False) as kept:
            warn_user("kept inside")
    assert inner == ["heard by both"] and kept == ["kept inside"] and outer == ["heard by both"]


def test_a_fit_warns_of_each_thing_once_however_many_of_its_steps_check_it(fake_encoder):
    import warnings

    X = ["red apple", "green apple", "fast car", "red car", "blue car", "old car"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        FewShotClassifier(encoder=fake_encoder).fit(X, ["Fruit", "Fruit", "car", "car", "Car", "Car"])
    said = [str(w.message) for w in seen if w.category is FewShotWarning]
    assert len(said) == 1 and "'Car' and 'car', which differ only in case" in said[0]
    assert seen[0].filename == __file__  # attributed to the caller's line, not the library's


def test_scikit_learns_probability_scorers_read_the_columns_right(text_encoder, ag_news):
    from sklearn.metrics import get_scorer, log_loss, roc_auc_score

    X, y, Xt, yt = ag_news
    Xt, yt = Xt[:120], yt[:120]

    def manual(model, metric):  # each true label's column found by name, whatever the order
        P = model.predict_proba(Xt)
        at = {c: j for j, c in enumerate(model.classes_.tolist())}
        names = sorted(at)
        P = P[:, [at[c] for c in names]]
        if metric == "neg_log_loss":
            return -log_loss(yt, P, labels=names)
        return roc_auc_score(yt, P, multi_class="ovr", labels=names)

    zs = ZeroShotClassifier(["World", "Sports", "Business", "Sci/Tech"], encoder=text_encoder)  # not sorted
    X, late = np.asarray(X, dtype=object), y == "Business"
    clf = FewShotClassifier(encoder=text_encoder, lexical=False).fit(list(X[~late]), y[~late])
    clf.add_examples(list(X[late]), y[late])  # a class that sorts first, added after the fit
    for model in (zs, clf):
        for metric in ("neg_log_loss", "roc_auc_ovr"):
            assert get_scorer(metric)(model, Xt, yt) == pytest.approx(manual(model, metric), abs=1e-9)
    assert get_scorer("roc_auc_ovr")(zs, Xt, yt) > 0.8  # as good as its accuracy says, not scrambled


def test_a_class_added_before_the_others_in_sorted_order_saves_and_loads_with_its_label_prior(text_encoder, tmp_path):
    X = ["the match went to extra time", "a late goal won the cup", "the senate passed the bill", "votes were counted"]
    clf = FewShotClassifier(text_encoder, head="cache", lexical=False).fit(
        X, ["sport", "sport", "politics", "politics"]
    )
    assert clf.prior_ is not None  # word labels: their zero-shot scores join the cache adapter
    clf.add_examples(["shares fell on the stock market", "the company reported profits"], ["business"] * 2)
    assert clf.head_.classes_.tolist() == ["politics", "sport", "business"]  # the head appends
    queries = ["stock prices are rising", "the striker scored twice", "parliament votes today"]
    assert clf.predict(queries).tolist() == ["business", "sport", "politics"]
    back = FewShotClassifier.load(clf.save(tmp_path / "m"), encoder=text_encoder)
    assert back.classes_.tolist() == ["business", "politics", "sport"]
    np.testing.assert_allclose(back.predict_proba(queries), clf.predict_proba(queries), atol=1e-9)


def test_a_loaded_model_has_the_parameters_it_was_given_so_a_grid_search_over_it_works(text_encoder, tmp_path):
    X = ["the match went to extra time", "a late goal won the cup", "the senate passed the bill", "votes were counted"]
    y = ["sport", "sport", "politics", "politics"]
    for made in (
        FewShotClassifier(text_encoder, head="knn", head_params={"k": 1}, lexical=False),
        FewShotClassifier(head="knn", lexical=False),  # the default encoder, the head's defaults (saved last)
        ZeroShotClassifier(["sport", "politics"]),
    ):
        made.fit(*((X, y) if isinstance(made, FewShotClassifier) else ()))
        back = type(made).load(made.save(tmp_path / type(made).__name__, overwrite=True))
        given, loaded = made.get_params(), back.get_params()
        assert loaded.keys() == given.keys()
        for key, value in given.items():
            if key == "encoder":  # None stays None (the default); a given one comes back as the same model
                assert loaded[key] is None if value is None else loaded[key].identity == value.identity
            else:
                assert loaded[key] == value, key
    back = FewShotClassifier.load(tmp_path / "FewShotClassifier")
    refit = back.set_params(head="prototype").fit(X, y)  # the kNN's filled-in k would not fit a prototype head
    assert refit.predict(["the goalkeeper saved it"])[0] == "sport"
    # settings JSON holds only in part (a tuple), or a head given as an instance, are kept as the head has them
    from sklearn.base import clone

    from fewshot.heads import KNNHead

    for made, check in (
        (FewShotClassifier(head="cache", head_params={"weights": (0.5, 1.0), "beta": 2.0}), lambda h: h.beta_ == 2.0),
        (FewShotClassifier(head=KNNHead(k=1)), lambda h: h.k == 1),
    ):
        back = FewShotClassifier.load(made.set_params(lexical=False).fit(X, y).save(tmp_path / "m", overwrite=True))
        assert check(clone(back).fit(X, y).head_)


def test_a_class_with_a_single_example_says_that_the_probabilities_are_not_calibrated(fake_encoder):
    X, y = ["red apple", "green apple", "fast car", "red car", "blue whale"], ["fruit"] * 2 + ["car"] * 2 + ["animal"]
    with pytest.warns(FewShotWarning, match="not calibrated: class 'animal' has a single example"):
        clf = FewShotClassifier(fake_encoder, lexical=False).fit(X, y)
    assert clf.temperature_ == 1.0 and clf.calibration_["method"] == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two examples a class: calibrated, nothing to say
        assert FewShotClassifier(fake_encoder, lexical=False).fit(X[:4], y[:4]).calibration_["method"] != "none"


def test_add_examples_adds_a_new_class_and_encodes_only_new_examples(fake_encoder):
    y4 = ["fruit", "fruit", "vehicle", "vehicle"]
    clf = FewShotClassifier(encoder=fake_encoder).fit(["red apple", "green apple", "fast car", "red car"], y4)
    calls = fake_encoder.calls
    clf.add_examples(["blue whale", "grey whale"], ["animal", "animal"])
    assert fake_encoder.calls - calls == 2
    with pytest.warns(FewShotWarning, match="new label 'Fruit ' differs from the class 'fruit' only in case"):
        clf.add_examples(["yellow banana"], ["Fruit "])
    assert list(clf.classes_) == ["Fruit ", "animal", "fruit", "vehicle"]  # a class of its own, as fit makes it
    clf = FewShotClassifier(encoder=fake_encoder).fit(["red apple", "green apple", "fast car", "red car"], y4)
    clf.add_examples(["blue whale", "grey whale"], ["animal", "animal"])
    assert list(clf.classes_) == ["animal", "fruit", "vehicle"]  # in its sorted place: columns follow classes_
    assert clf.predict(["whale"])[0] == "animal"
    assert clf.predict_proba(["apple"]).shape == (1, 3) and clf.predict_proba(["whale"]).argmax() == 0
    assert clf.class_scores(["apple"]).argmax() == 1
    for head, params in (("knn", None), ("auto", {"candidates": ["knn"]})):
        knn = FewShotClassifier(encoder=fake_encoder, head=head, head_params=params)
        knn.fit(["red apple", "green apple", "fast car", "car"], y4)
        with pytest.warns(FewShotWarning, match="kNN vote now uses 1 neighbour.*'animal' has only 1") as record:
            knn.add_examples(["blue whale"], ["animal"])  # one example of a new class shrinks every vote
        assert record[0].filename == __file__  # attributed to the caller, however deep the head sits
    # whole floats (a pandas column after dropna) join integer classes as integers, not turning them into floats
    ints = FewShotClassifier(encoder=fake_encoder).fit(["red apple", "fast car"], [1, 0])
    ints.add_examples(["blue whale"], np.array([2.0]))
    assert ints.classes_.tolist() == [0, 1, 2] and all(type(c) is int for c in ints.classes_.tolist())


def test_zero_shot_tags_several_or_none(text_encoder):
    zs = ZeroShotClassifier(["money and payments", "delivery", "sport"], encoder=text_encoder)
    tags = zs.tag(
        ["The parcel came late and the invoice charged me for express shipping.", "I baked bread this morning."],
        threshold=0.25,
    )
    assert {label for label, _ in tags[0]} == {"money and payments", "delivery"}
    assert tags[1] == []
    assert [label for label, _ in zs.tag(["The parcel came late."], threshold=None, top_k=1)[0]] == ["delivery"]


def test_zero_shot_label_forms_and_save(tmp_path, text_encoder):
    zs = ZeroShotClassifier(
        {
            "bird": {"description": "an animal with wings", "attributes": ["has feathers", "lays eggs"]},
            "fish": "an animal that swims in water",
        },
        encoder=text_encoder,
    )
    assert list(zs.predict(["it has feathers and a beak", "it lives in the sea and has fins"])) == ["bird", "fish"]
    zs.save(tmp_path / "z")
    again = ZeroShotClassifier.load(tmp_path / "z")
    np.testing.assert_allclose(again.class_scores(["a small sparrow"]), zs.class_scores(["a small sparrow"]), atol=1e-6)
    assert again.get_params()["labels"] == zs.labels and again.get_params()["temperature"] is None  # as given
    colon = ZeroShotClassifier(["bird: has feathers, has a beak", "fish: has fins"], encoder=text_encoder)
    assert list(colon.classes_) == ["bird", "fish"]
    # two labels this (uncased) encoder reads as one would split one label's probability: refused; told apart
    # by their descriptions they are two labels; and classes with examples may share a name's vector
    for same in (["Sports", "sports", "politics"], ["sports", "sports ", "politics"], ["✈️", "☔", "💳"]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # refused, not first warned of as if they would be two classes
            with pytest.raises(InputError, match="same label vector.*such as emoji"):
                ZeroShotClassifier(same, encoder=text_encoder).fit()
    told_apart = {"US": "the United States of America", "us": "the first person plural pronoun"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # their descriptions tell them apart: nothing to warn of, adapted or not
        assert ZeroShotClassifier(told_apart, encoder=text_encoder).fit().classes_.tolist() == ["US", "us"]
        corpus = ["we travelled across the country", "they told us the news", "the president spoke", "give us time"]
        adapted = ZeroShotClassifier(told_apart, encoder=text_encoder, adapt="center").fit(corpus)
        assert adapted.adaptation_["method"] == "center"
    texts = ["great", "superb", "fine", "okay", "awful", "bad"]
    cased = FewShotClassifier(text_encoder, head="cache").fit(texts, ["Pos", "Pos", "pos", "pos", "neg", "neg"])
    assert cased.classes_.tolist() == ["Pos", "neg", "pos"]
    # fitted implicitly (by predict), saved and loaded: still follows set_params as the original does
    colon.save(tmp_path / "colon")
    loaded = ZeroShotClassifier.load(tmp_path / "colon")
    assert loaded.get_params()["labels"] == ["bird: has feathers, has a beak", "fish: has fins"]
    for model in (colon, loaded):
        model.set_params(labels=["bird: has feathers", "fish: has fins", "tree: has leaves and a trunk"])
        assert model.predict(["tall with green leaves and a wooden trunk"])[0] == "tree"


def test_user_errors_are_clear(fake_encoder):
    clf = FewShotClassifier(encoder=fake_encoder)
    with pytest.raises(NotFittedError):
        clf.predict(["text"])
    with pytest.raises(InputError, match="empty"):
        clf.fit([], [])
    with pytest.raises(InputError, match="empty string"):
        clf.fit(["a", ""], ["x", "y"])
    with pytest.raises(InputError, match="None"):
        clf.fit(None, None)
    with pytest.raises(InputError, match="only one class"):
        clf.fit(["a", "b"], ["x", "x"])
    with pytest.raises(InputError, match="head='forest' is not valid"):
        FewShotClassifier(encoder=fake_encoder, head="forest").fit(["a", "b"], ["x", "y"])
    clf.fit(["red apple", "fast car"], ["fruit", "vehicle"])
    with pytest.raises(InputError, match="never saw: boat"):
        clf.score(["a boat"], ["boat"])
    with pytest.raises(InputError, match="labels is empty"):
        ZeroShotClassifier([], encoder=fake_encoder).predict(["x"])
    with pytest.raises(InputError, match="given twice"):
        ZeroShotClassifier(["a", "a"], encoder=fake_encoder).predict(["x"])
    with pytest.warns(FewShotWarning, match="one label .'sport'. and no abstention: every input gets it"):
        assert ZeroShotClassifier(["sport"], encoder=fake_encoder).predict(["x", "y"]).tolist() == ["sport"] * 2
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder).tag(["x"], top_k=0)
    calls = fake_encoder.calls  # a head's setting, an auto candidate's included, is refused before any encoding
    for params in ({"candidates": [["knn", {"k": 0}]]}, {"candidates": [["knn", {"kk": 3}]]}):
        with pytest.raises(InputError, match="k=0 is not valid|has no parameter 'kk'"):
            FewShotClassifier(encoder=fake_encoder, head="auto", head_params=params).fit(["a", "b"], ["x", "y"])
    assert fake_encoder.calls == calls
    with pytest.raises(InputError, match="not both"):  # a fixed cosine turns the margin rule off
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder).tag(["x"], threshold=0.2, margin=0.1)
    with pytest.raises(InputError, match="not a one-pass iterator"):  # spent by the first fit, then 'empty'
        ZeroShotClassifier((n for n in ["a", "b"]), encoder=fake_encoder).fit()
    # numpy numbers are numbers: thresholds as they come out of numpy computations
    zs = ZeroShotClassifier(["a", "b"], encoder=fake_encoder, abstain=np.float32(-1)).fit()
    assert len(zs.tag(["x"], threshold=np.float32(-1))[0]) == 2 and len(zs.tag(["x"], margin=np.float32(9))) == 1
    assert zs.predict(["x"])[0] in ("a", "b")
    assert FewShotClassifier(encoder=fake_encoder, abstain=np.int64(0)).fit(["p", "q"], ["x", "y"]).threshold_ == 0
    assert len(ZeroShotClassifier(["a", "b"], encoder=fake_encoder).tag(["x"], top_k=np.int64(1), threshold=-1)[0]) == 1
    with pytest.raises(InputError, match="pass them to fit"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder, abstain="auto").fit()
    # a cosine threshold outside -1..1 would pass everything or nothing
    with pytest.raises(InputError, match="abstain=1.5 is not valid.*from -1 to 1"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder, abstain=1.5).fit()
    with pytest.raises(InputError, match="threshold must be a cosine, from -1 to 1, got -5"):
        zs.tag(["x"], threshold=-5)
    with pytest.raises(InputError, match="adapt='magic' is not valid"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder, adapt="magic").fit(["x"])
    with pytest.raises(InputError, match="abstain='sometimes' is not valid"):
        FewShotClassifier(encoder=fake_encoder, abstain="sometimes").fit(["a", "b"], ["x", "y"])
    with pytest.raises(InputError, match="at least 2 examples in every class"):
        FewShotClassifier(encoder=fake_encoder, abstain="auto").fit(["a", "b"], ["x", "y"])


def test_damaged_model_saves_are_named(tmp_path, fake_encoder):
    import json

    from fewshot.errors import CorruptFileError

    clf = FewShotClassifier(encoder=fake_encoder).fit(["red apple", "fast car"], ["fruit", "vehicle"])
    path = clf.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    arrays = path / manifest["files"]["arrays.npz"]["name"]
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="truncated"):
        FewShotClassifier.load(path, encoder=fake_encoder)
    clf.save(path)  # a fresh save over the damaged one
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["classes"] = ["vehicle", "fruit"]  # an edit by hand: the manifest's own checksum catches it
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="manifest was edited"):
        FewShotClassifier.load(path, encoder=fake_encoder)
    # edits with the checksum made again: what does not hold together is named, as the constructor names it
    from fewshot.storage.bundle import manifest_checksum

    clf = FewShotClassifier(encoder=fake_encoder, head="cache", label_prior=True).fit(
        ["red apple", "green pear", "fast car", "red bus"], ["fruit", "fruit", "vehicle", "vehicle"]
    )
    clf.save(tmp_path / "c")
    original = (tmp_path / "c" / "manifest.json").read_text()
    for edit, message in (
        (lambda m: m.update(abstain="sometimes"), "saved settings cannot be read .*abstain='sometimes' is not valid"),
        (lambda m: m["head"]["classes"].__setitem__(0, "apple"), "prior's labels are not the head's classes"),
        (lambda m: m["prior"]["head"]["classes"].append("boat"), "/c: the zero-shot prior: .*3 classes"),
    ):
        manifest = json.loads(original)
        edit(manifest)
        manifest["checksum"] = manifest_checksum(manifest)
        (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CorruptFileError, match=message):
            FewShotClassifier.load(tmp_path / "c", encoder=fake_encoder)
    clf.save(tmp_path / "m2")
    rewrite_manifest(tmp_path / "m2", lambda m: m.pop("head"))
    with pytest.raises(CorruptFileError, match="cannot be read"):
        FewShotClassifier.load(tmp_path / "m2", encoder=fake_encoder)
    with pytest.raises(CorruptFileError, match="not a classifier"):
        FewShotClassifier.load(_saved_index(tmp_path))


def _saved_index(tmp_path):
    from fewshot import EmbeddingIndex

    index = EmbeddingIndex(dim=4)
    index.add_embeddings([[1, 0, 0, 0]])
    return index.save(tmp_path / "an-index")


def test_cache_adapter_uses_label_names_and_round_trips(tmp_path, text_encoder, ag_news):
    X, y, Xt, yt = ag_news
    clf = FewShotClassifier(encoder=text_encoder, head="cache").fit(X, y)
    assert clf.prior_ is not None and clf.head_.uses_prior_
    assert list(clf.prior_.classes_) == list(clf.classes_)  # prior columns follow the head's
    picked = clf.head_.selection_["picked"]
    assert "leave-one-out accuracy" in picked["why"] and len(clf.head_.selection_["candidates"]) > 1
    again = FewShotClassifier.load(clf.save(tmp_path / "m"))
    assert again.prior_ is not None
    assert np.allclose(again.predict_proba(Xt[:50]), clf.predict_proba(Xt[:50]))
    # numbers as labels carry no meaning to score: no prior, the cache alone
    codes = np.searchsorted(np.unique(y), y).astype(str)
    assert FewShotClassifier(encoder=text_encoder, head="cache").fit(X, codes).prior_ is None
    # a new class gets its own prior column
    clf.add_examples(["The new phone has a faster chip.", "Markets rallied after the report."], ["Gadgets"] * 2)
    assert list(clf.prior_.classes_) == list(clf.classes_) and clf.predict_proba(Xt[:3]).shape == (3, 5)


def test_a_save_over_another_model_is_refused_unless_asked_for(tmp_path, fake_encoder):
    from fewshot.errors import ConcurrentWriteError, SaveExistsError

    first = FewShotClassifier(encoder=fake_encoder).fit(["red apple", "fast car"], ["fruit", "vehicle"])
    other = FewShotClassifier(encoder=fake_encoder).fit(["a", "b", "c"], ["x", "y", "z"])
    first.save(tmp_path / "m")
    with pytest.raises(SaveExistsError, match=r"already holds a saved classifier \(2 classes, .*overwrite=True"):
        other.save(tmp_path / "m")
    assert FewShotClassifier.load(tmp_path / "m", encoder=fake_encoder).classes_.tolist() == ["fruit", "vehicle"]
    first.save(tmp_path / "m")  # its own save again: allowed
    loaded = FewShotClassifier.load(tmp_path / "m", encoder=fake_encoder)
    loaded.add_examples(["green pear"], ["fruit"])
    loaded.save(tmp_path / "m")  # a load-modify-save: allowed
    other.save(tmp_path / "m", overwrite=True)
    assert FewShotClassifier.load(tmp_path / "m", encoder=fake_encoder).classes_.tolist() == ["x", "y", "z"]
    with pytest.raises(ConcurrentWriteError, match="after this classifier was loaded from or saved to it"):
        first.save(tmp_path / "m")  # overtaken since it saved there
    zs = ZeroShotClassifier(["sport", "politics"], encoder=fake_encoder).fit()
    with pytest.raises(InputError, match="cannot save a zeroshot to .*: it holds a saved classifier"):
        zs.save(tmp_path / "m")  # a model of another kind: refused whatever overwrite says
    zs.save(tmp_path / "z")
    with pytest.raises(SaveExistsError, match=r"already holds a saved zeroshot \(2 classes"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder).fit().save(tmp_path / "z")


def test_auto_head_chooses_on_the_support_and_saves_its_reasons(tmp_path, text_encoder, ag_news):
    X, y, Xt, yt = ag_news
    clf = FewShotClassifier(encoder=text_encoder, head="auto").fit(X, y)
    sel = clf.head_.selection_
    assert set(sel["scores"]) == {"prototype", "prototype(center=True)", "knn", "linear", "cache"}
    assert sel["picked"] == max(sel["scores"], key=sel["scores"].get) and clf.head_.choice_ == sel["picked"]
    assert clf.score(Xt, yt) >= 0.6
    again = FewShotClassifier.load(clf.save(tmp_path / "auto"))
    assert again.head_.selection_ == sel
    assert np.allclose(again.predict_proba(Xt[:30]), clf.predict_proba(Xt[:30]))
    # candidates as (name, params) pairs, written as JSON lists (the CLI's --head-params), survive a save: a
    # refit of the loaded model (or a clone) chooses among the same heads
    few = {"candidates": [["prototype", {"center": True}], "knn"], "folds": 2}
    picky = FewShotClassifier(encoder=text_encoder, head="auto", head_params=few).fit(X, y)
    loaded = FewShotClassifier.load(picky.save(tmp_path / "picky"))
    assert loaded.get_params()["head_params"]["folds"] == 2
    assert set(loaded.fit(X, y).head_.selection_["scores"]) == {"prototype(center=True)", "knn"}


# -- the scikit-learn contract on raw inputs -------------------------------------------------------------
def test_pickles_and_clones_carry_no_model(tmp_path, text_encoder, ag_news):

    from sklearn.base import clone

    from fewshot import TextEncoder

    X, y, Xt, _ = ag_news
    cached = TextEncoder(cache_dir=tmp_path / "cache")
    clf = FewShotClassifier(encoder=cached, head="knn").fit(X, y)
    blob = pickle.dumps(clf)
    assert len(blob) < 2_000_000  # the 90 MB model stays behind; the support vectors travel
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict(Xt[:20]), clf.predict(Xt[:20]))
    assert again.encoder_.model is cached.model  # reloaded from the process-wide store, not from the pickle
    copy = clone(clf)
    assert copy.encoder is not cached and copy.encoder.model is cached.model and not hasattr(copy, "head_")
    assert TextEncoder().model is text_encoder.model  # the default model is loaded once per process


def test_copies_of_fitted_classifiers_with_a_label_prior_predict(text_encoder, ag_news):
    """A copy (pickle, deepcopy) of a fitted cache head, auto head or zero-shot classifier predicts as the
    original, and copying leaves the original usable; a zero-shot copy whose parameters had changed still
    refuses to predict."""
    import copy

    X, y, Xt, _ = ag_news
    names = sorted(set(y))
    fitted = {
        "cache": FewShotClassifier(encoder=text_encoder, head="cache", lexical=False).fit(X, y),
        "zeroshot": ZeroShotClassifier(names, encoder=text_encoder).fit(Xt[:40]),
    }
    for name, clf in fitted.items():
        for again in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
            # both copies were made before the original predicts here
            np.testing.assert_array_equal(again.predict_proba(Xt[:15]), clf.predict_proba(Xt[:15]), err_msg=name)
    stale = fitted["zeroshot"]
    stale.set_params(templates="plain")
    with pytest.raises(InputError, match="changed after fit"):
        pickle.loads(pickle.dumps(stale)).predict(Xt[:2])


def test_grid_search_across_processes(tmp_path, text_encoder, ag_news):
    from sklearn.model_selection import GridSearchCV

    from fewshot import TextEncoder

    X, y, _, _ = ag_news
    search = GridSearchCV(
        FewShotClassifier(encoder=TextEncoder(cache_dir=tmp_path / "c")), {"head": ["prototype", "knn"]}, cv=2, n_jobs=2
    )
    search.fit(X, y)
    assert set(search.cv_results_["param_head"]) == {"prototype", "knn"}
    assert search.best_score_ > 0.4 and search.best_estimator_.predict(X[:2]).dtype == np.asarray(y).dtype


def test_a_numeric_abstain_outside_the_heads_scores_is_refused_naming_their_range(fake_encoder):
    X, y = ["red apple", "green apple", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    with pytest.raises(InputError, match=r"abstain=2.5 is outside .* prototype head \(-1 to 1\).*every input would"):
        FewShotClassifier(encoder=fake_encoder, head="prototype", abstain=2.5).fit(X, y)
    with pytest.raises(InputError, match=r"abstain=-0.5 .* knn head \(0 to 1\), so no input could abstain"):
        FewShotClassifier(encoder=fake_encoder, head="knn", abstain=-0.5).fit(X, y)
    with pytest.raises(InputError, match=r"abstain=2.5 .* prototype head \(head='auto' chose it\)"):
        FewShotClassifier(
            encoder=fake_encoder, head="auto", head_params={"candidates": ["prototype"]}, abstain=2.5
        ).fit(X, y)
    logits = FewShotClassifier(encoder=fake_encoder, head="linear", abstain=2.5).fit(X, y)  # logits: any number
    assert logits.threshold_ == 2.5


def test_predict_gives_the_classes_dtype_and_keeps_it_whether_or_not_an_input_abstains(fake_encoder):
    from sklearn.metrics import accuracy_score, f1_score

    X, y = ["red apple", "green apple", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    plain = FewShotClassifier(encoder=fake_encoder).fit(X, y)
    assert plain.predict(["apple"]).dtype == plain.classes_.dtype and plain.predict(["apple"])[0] == "fruit"
    for settings, dtype, marker in (({}, object, None), ({"abstain_label": "unknown"}, np.dtype("<U7"), "unknown")):
        clf = FewShotClassifier(encoder=fake_encoder, abstain=0.99, **settings).fit(X, y)
        abstains, answers = clf.predict(["apple"]), FewShotClassifier(encoder=fake_encoder, abstain=-1, **settings)
        answered = answers.fit(X, y).predict(["apple"])
        assert abstains.dtype == answered.dtype == dtype and abstains[0] == marker and answered[0] == "fruit"
    # integer labels: scikit-learn's metrics take the predictions (an object array of ints they call "unknown")
    codes = [0, 0, 1, 1]
    ints = FewShotClassifier(encoder=fake_encoder).fit(X, codes)
    assert accuracy_score(codes, ints.predict(X)) == 1.0 and f1_score(codes, ints.predict(X)) == 1.0
    marked = FewShotClassifier(encoder=fake_encoder, abstain=0.99, abstain_label=-1).fit(X, codes)
    out = marked.predict(X)
    assert out.dtype.kind == "i" and set(out.tolist()) == {-1}
    assert marked.score(X, [-1, -1, -1, -1]) == 1.0  # an abstention is right on a row labelled abstain_label
    with pytest.raises(InputError, match=r"sample_weight must have shape \(4,\)"):
        ints.score(X, codes, sample_weight=[1, 2])


def test_zero_shot_adaptation_reads_only_distinct_texts_the_encoder_can_read():
    class Blind(FakeEncoder):  # reads no word with a circled letter, as a static model knows no token of it
        def _encode(self, items, batch_size, show_progress):
            out = super()._encode(items, batch_size, show_progress)
            out[["ⓩ" in t for t in items]] = 0
            return out

    labels = ["sport", "politics"]
    corpus = [f"sport match goal team {i}" for i in range(15)] + [f"politics vote election law {i}" for i in range(15)]
    zs = ZeroShotClassifier(labels, encoder=Blind(), adapt="selftrain", abstain="auto").fit(corpus + ["ⓩⓩⓩ"] * 5)
    assert zs.adaptation_["corpus"] == 30  # what it cannot read says nothing of the corpus, nor of the threshold
    readable = ZeroShotClassifier(labels, encoder=Blind(), adapt="selftrain", abstain="auto").fit(corpus)
    assert zs.threshold_ == readable.threshold_ and zs.adaptation_ == readable.adaptation_
    # a text it cannot read stays similar to nothing once inputs are centred on the corpus: no decision
    assert zs.predict(["ⓩⓩⓩ ⓩ"])[0] is None
    np.testing.assert_allclose(zs.predict_proba(["ⓩⓩⓩ ⓩ"]), 0.5)
    assert zs.predict(["sport match goal team", "politics vote election law"]).tolist() == ["sport", "politics"]

    # a column of one repeated text: centred on its own mean it is nothing, which no label may become
    for method in ("selftrain", "center"):
        with pytest.raises(InputError, match="the corpus has 1 distinct text the encoder can read; adapting needs 2"):
            ZeroShotClassifier(labels, encoder=Blind(), adapt=method).fit(["same boilerplate"] * 50)
    # a refused refit leaves a fitted classifier as it was
    before = (zs.adaptation_, zs.threshold_, zs.class_scores(["sport match", "vote"]))
    with pytest.raises(InputError, match="1 distinct text"):
        zs.fit(["same boilerplate"] * 50)
    assert (zs.adaptation_, zs.threshold_) == before[:2]
    np.testing.assert_array_equal(zs.class_scores(["sport match", "vote"]), before[2])
    zs = ZeroShotClassifier(labels, encoder=Blind()).fit(["same boilerplate"] * 50)  # adapt="auto" leaves it
    assert zs.adaptation_ == {"method": "none", "why": zs.adaptation_["why"]} and "1 distinct" in zs.adaptation_["why"]
    assert zs.predict(["sport match", "politics vote"]).tolist() == ["sport", "politics"]
    # auto counts distinct texts against its 10 a label: 20 copies of each of 2 texts are 2, not 40
    zs = ZeroShotClassifier(labels, encoder=Blind()).fit(["sport match"] * 20 + ["election vote"] * 20)
    assert zs.adaptation_["method"] == "none" and zs.adaptation_["why"].startswith("2 distinct corpus items")


def test_zero_shot_labels_given_as_a_dict_with_numpy_keys(fake_encoder):
    """dict(zip(np.unique(y), descriptions)) gives numpy keys, which JSON refuses as keys."""
    zs = ZeroShotClassifier({np.int64(0): "sport match goal", np.int64(1): "politics vote"}, encoder=fake_encoder)
    assert zs.predict(["a goal in the match", "the vote"]).tolist() == [0, 1]
    zs.set_params(labels={np.int64(1): "sport match goal", np.int64(0): "politics vote"})
    assert zs.predict(["a goal in the match"]).tolist() == [1]  # a change of keys is a change of parameters


def test_zero_shot_follows_set_params_until_it_is_fitted_explicitly(fake_encoder):
    zs = ZeroShotClassifier(["apple", "car"], encoder=fake_encoder)
    assert list(zs.classes_) == ["apple", "car"]  # fitted implicitly on first use
    zs.set_params(labels=["apple", "car", "whale"])
    assert list(zs.classes_) == ["apple", "car", "whale"]  # an implicit fit follows the new labels
    zs.fit()
    zs.set_params(labels=["boat"])
    with pytest.raises(InputError, match="changed after fit"):
        zs.predict(["x"])
    assert list(zs.fit().classes_) == ["boat"]


def test_a_parameter_change_after_fit_asks_for_another_fit(tmp_path, fake_encoder):
    X, y = ["red apple", "green apple", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    clf = FewShotClassifier(encoder=fake_encoder, abstain=0.99).fit(X, y)
    assert clf.predict(["apple"])[0] is None
    clf.set_params(abstain=None)  # the threshold fitted with abstain=0.99 would still apply
    uses = (clf.predict, clf.predict_proba, lambda x: clf.fit_calibration(x, ["fruit"]), lambda x: clf.save(tmp_path))
    for use in uses:
        with pytest.raises(InputError, match="changed after fit"):
            use(["apple"])
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(InputError, match="changed after fit"):
        pickle.loads(pickle.dumps(clf)).predict(["apple"])
    assert clf.fit(X, y).predict(["apple"])[0] == "fruit" and clf.threshold_ is None
    clf.save(tmp_path)
    assert FewShotClassifier.load(tmp_path, encoder=fake_encoder).predict(["apple"])[0] == "fruit"
    clf.set_params(head="knn")
    with pytest.raises(InputError, match="changed after fit"):
        clf.predict(["apple"])
    # a refit that fails half way leaves nothing usable behind, however the parameters change next
    clf.set_params(head="prototype", abstain="auto")
    with pytest.raises(InputError, match="needs at least 2 examples in every class"):
        clf.fit(X[:2] + ["blue whale"], ["fruit", "fruit", "sea"])
    clf.set_params(abstain=None)
    with pytest.raises(InputError, match="the last fit of this FewShotClassifier failed"):
        clf.predict(["apple"])
    assert clf.fit(X, y).predict(["apple"])[0] == "fruit"
    # a zero-shot classifier fitted implicitly follows set_params, until calibration makes its fit explicit
    zs = ZeroShotClassifier(["apple", "car"], encoder=fake_encoder)
    with pytest.warns(FewShotWarning, match="fit_calibration on 2 in-scope validation row"):
        zs.fit_calibration(["red apple", "fast car", "nothing"], ["apple", "car", None])
    assert zs.threshold_ is not None
    zs.set_params(templates="plain")
    with pytest.raises(InputError, match="changed after fit"):
        zs.predict(["apple"])
    # a zero-shot refit on a corpus that cannot be encoded leaves the fitted classifier as it was
    zs = ZeroShotClassifier(["apple", "car"], encoder=fake_encoder, adapt="center").fit(["red apple", "fast car"])
    before = zs.predict_proba(["apple pie"])
    with pytest.raises(InputError, match="empty"):
        zs.fit(["a car", "   "])
    np.testing.assert_array_equal(zs.predict_proba(["apple pie"]), before)


def test_an_abstain_label_that_is_also_a_class_is_refused(fake_encoder):
    X, y = ["red apple", "green apple", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    with pytest.raises(InputError, match="abstain_label='fruit' is also one of the classes"):
        FewShotClassifier(encoder=fake_encoder, abstain=0.5, abstain_label="fruit").fit(X, y)
    clf = FewShotClassifier(encoder=fake_encoder, abstain=0.5, abstain_label="other").fit(X, y)
    with pytest.raises(InputError, match="also one of the classes"):
        clf.add_examples(["blue whale"], ["other"])
    assert list(clf.classes_) == ["fruit", "vehicle"]
    assert FewShotClassifier(encoder=fake_encoder, abstain_label=0).fit(X, y).classes_.tolist() == ["fruit", "vehicle"]
    with pytest.raises(InputError, match="abstain_label=.* cannot be a label"):
        FewShotClassifier(encoder=fake_encoder, abstain_label=["none"]).fit(X, y)
    for same in (np.int64(1), 1.0, True):  # equal to the class 1 by value: written and saved as it
        with pytest.raises(InputError, match="also one of the classes"):
            FewShotClassifier(encoder=fake_encoder, abstain_label=same).fit(X, [0, 0, 1, 1])
    with pytest.raises(InputError, match="also one of the classes"):
        ZeroShotClassifier(["apple", "car"], encoder=fake_encoder, abstain=0.1, abstain_label="car").predict(["x"])
    # out-of-scope rows are found by value in a list of numpy scalars (as list(np.array(...)) gives)
    for label, truth in [("other", np.array(["fruit", "vehicle", "other"])), (-1, np.array([0, 1, -1]))]:
        classes = ["fruit", "vehicle"] if label == "other" else [0, 1]
        y_num = [classes[0], classes[0], classes[1], classes[1]]
        model = FewShotClassifier(encoder=fake_encoder, abstain=0.5, abstain_label=label).fit(X, y_num)
        with pytest.warns(FewShotWarning, match="set from so few move with every row; give 20 or more"):
            model.fit_calibration(["red apple", "fast car", "blue whale"], list(truth))
        assert 0 <= model.score(["red apple", "fast car", "blue whale"], list(truth)) <= 1


def test_sample_weight_is_honoured_or_refused(fake_encoder):
    X = ["red apple", "apple pie", "fast car", "red car"]
    y = ["fruit", "fruit", "vehicle", "vehicle"]
    plain = FewShotClassifier(encoder=fake_encoder, calibrate=False).fit(X, y)
    heavy = FewShotClassifier(encoder=fake_encoder, calibrate=False).fit(X, y, sample_weight=[1, 1, 1, 20])
    assert not np.allclose(plain.class_scores(["red"]), heavy.class_scores(["red"]))
    with pytest.raises(InputError, match="sample_weight must have shape"):
        FewShotClassifier(encoder=fake_encoder).fit(X, y, sample_weight=[1, 2])
    with pytest.raises(InputError, match="no sample_weight"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder).fit(["x"], sample_weight=[1])


def test_a_head_instance_is_used_as_given_and_never_changed(fake_encoder):
    from fewshot import KNNHead

    head = KNNHead(k=1)
    clf = FewShotClassifier(encoder=fake_encoder, head=head).fit(["a b", "c d"], ["x", "y"])
    assert isinstance(clf.head_, KNNHead) and clf.head_.k == 1 and clf.head_ is not head
    assert not hasattr(head, "classes_")


def test_labels_that_would_be_silently_wrong_are_refused_or_warned(fake_encoder):
    clf = FewShotClassifier(encoder=fake_encoder)
    with pytest.raises(InputError, match="empty label"):
        clf.fit(["a", "b", "c"], ["x", "", "y"])
    with pytest.raises(InputError, match="mixes label types"):
        clf.fit(["a", "b"], [1, "one"])
    with pytest.warns(FewShotWarning, match="two different labels"):
        clf.fit(["same text", "same text", "other"], ["x", "y", "y"])
    clf.fit(["a b", "c d"], ["x", "y"])
    with pytest.raises(InputError, match="new labels are"):
        clf.add_examples(["e f"], [3])


def test_predictions_from_a_thread_pool_while_examples_are_added(fake_encoder):
    from concurrent.futures import ThreadPoolExecutor

    X = ["red apple", "green apple", "ripe apple", "fast car", "red car", "old car"]
    y = ["fruit"] * 3 + ["vehicle"] * 3
    clf = FewShotClassifier(encoder=fake_encoder, head="knn").fit(X, y)
    probe = ["apple", "car", "green apple", "old car"]
    expected = clf.predict(probe).tolist()

    def predict(_):
        return clf.predict(probe).tolist(), clf.predict_proba(probe).shape[0]

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(predict, i) for i in range(200)]
        for i in range(20):
            clf.add_examples([f"whale number {i}", f"grey whale {i}"], ["animal", "animal"])
        results = [f.result() for f in futures]
    assert all(pred == expected and n == 4 for pred, n in results)
    assert list(clf.classes_) == ["animal", "fruit", "vehicle"]


def test_a_lone_surrogate_in_a_text_or_label_is_an_input_error_not_a_tokenizer_traceback(fake_encoder):
    bad = "caf\udce9"  # what surrogateescape decoding leaves of a Latin-1 byte
    X, y = ["a b", "c d", "e f", "g h"], ["x", "x", "z", "z"]
    with pytest.raises(InputError, match=r"texts\[1\] holds a lone surrogate"):
        FewShotClassifier(fake_encoder).fit(["a b", bad, "e f", "g h"], y)
    with pytest.raises(InputError, match=r"y\[0\] holds a lone surrogate"):
        FewShotClassifier(fake_encoder).fit(X, [bad, "x", "z", "z"])
    clf = FewShotClassifier(fake_encoder).fit(X, y)
    with pytest.raises(InputError, match="lone surrogate"):
        clf.predict([bad])
    with pytest.raises(InputError, match="label 'caf.udce9' holds a lone surrogate"):
        ZeroShotClassifier([bad, "tea"], encoder=fake_encoder).fit()
    with pytest.raises(InputError, match="description holds a lone surrogate"):
        ZeroShotClassifier({"coffee": bad, "tea": "a hot drink"}, encoder=fake_encoder).fit()


def test_examples_that_all_embed_to_one_vector_are_refused(text_encoder):
    # MiniLM reads every one of these emoji as its unknown token: the two classes could never be told apart
    X = ["😀", "😁", "😂", "🤣", "😡", "😠", "🤬", "👿"]
    with pytest.raises(InputError, match="all 8 examples embed to one vector.*no token for their characters"):
        FewShotClassifier(text_encoder).fit(X, ["pos"] * 4 + ["neg"] * 4)
    clf = FewShotClassifier(text_encoder).fit(X[:2] + ["great, thanks", "awful"], ["pos", "pos", "pos", "neg"])
    assert clf.predict(["thanks, great"])[0] == "pos"  # one readable example a class is enough to fit
    # one text under every label is named as such, not blamed on the encoder
    with pytest.raises(InputError, match="all 4 examples are the same text \\('hello there'\\) under 2 labels"):
        FewShotClassifier(text_encoder).fit(["hello there"] * 4, ["a", "a", "b", "b"])


def test_a_class_weighed_zero_on_every_example_is_refused(fake_encoder):
    X, y = ["red apple", "green apple", "fast car", "red car"], ["fruit", "fruit", "vehicle", "vehicle"]
    with pytest.raises(InputError, match="class 'vehicle' has weight 0 on every example"):
        FewShotClassifier(encoder=fake_encoder).fit(X, y, sample_weight=[1, 2, 0, 0])
    clf = FewShotClassifier(encoder=fake_encoder).fit(X, y, sample_weight=[1, 2, 0, 1])
    assert clf.predict(["car"])[0] == "vehicle"
