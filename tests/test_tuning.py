"""Contrastive tuning: the loss on an exact case, a real tune that helps on held-out data, save/load, identity."""

from __future__ import annotations

import numpy as np
import pytest

from eval.datasets import load, sample_per_class
from eval.sampling import capped_subsample
from fewshot import EmbeddingIndex, EncoderMismatchError, FewShotClassifier, InputError
from fewshot.tuning import contrastive_tune, supcon_loss
from tests.conftest import FakeEncoder


def test_supcon_loss_matches_the_formula():
    import torch

    Z = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    codes = np.array([0, 0, 1])
    t = 0.5
    S = Z @ Z.T / t
    # anchors 0 and 1 have one positive each; anchor 2 has none and is skipped
    losses = []
    for i, p in [(0, 1), (1, 0)]:
        others = [j for j in range(3) if j != i]
        losses.append(-(S[i, p] - np.log(np.exp(S[i, others]).sum())))
    got = supcon_loss(torch.tensor(Z), torch.tensor(codes), t).item()
    assert got == pytest.approx(np.mean(losses), rel=1e-9)
    with pytest.raises(InputError, match="two examples"):
        supcon_loss(torch.tensor(Z), torch.tensor([0, 1, 2]), t)


@pytest.fixture(scope="module")
def emotion(data_root):
    d = load("emotion", data_root)
    support = sample_per_class(d.train_labels, 8, seed=0)
    names = np.asarray(d.label_names)
    test = capped_subsample(d.test_labels, 300)
    return (
        [d.train_texts[i] for i in support],
        names[d.train_labels[support]],
        [d.test_texts[i] for i in test],
        names[d.test_labels[test]],
    )


def test_tuning_beats_the_frozen_body_on_held_out_data(text_encoder, emotion, tmp_path):
    X, y, Xt, yt = emotion
    before = text_encoder.identity["weights_sha256"]
    frozen = FewShotClassifier(text_encoder).fit(X, y)
    tuned = FewShotClassifier(text_encoder, tune={"steps": 10, "seed": 0}).fit(X, y)
    assert text_encoder.identity["weights_sha256"] == before  # the encoder passed in is not touched
    # measured: frozen 0.36, tuned 0.46 on these 300 test texts (6 classes, chance 0.17)
    assert tuned.score(Xt, yt) > frozen.score(Xt, yt) + 0.02
    ident = tuned.encoder_.identity
    assert ident["tuned_from"] == before and ident["weights_sha256"] != before and ident["tuning"]["steps"] == 10

    # the tuned body is saved with the model and gives identical predictions after loading
    again = FewShotClassifier.load(tuned.save(tmp_path / "tuned"))
    assert again.encoder_.identity == ident
    assert np.allclose(again.predict_proba(Xt[:40]), tuned.predict_proba(Xt[:40]), atol=1e-6)
    # its encoder parameter is the body it started from, as in memory: a refit tunes that again, not the
    # tuned body on top of itself
    assert "tuned_from" not in again.encoder.identity
    assert again.fit(X, y).encoder_.identity == ident

    # an index built with the untuned encoder refuses the tuned one
    index = EmbeddingIndex(text_encoder)
    index.add(Xt[:5])
    saved = index.save(tmp_path / "index")
    with pytest.raises(EncoderMismatchError):
        EmbeddingIndex.load(saved, encoder=tuned.encoder_)


def test_an_empty_tune_dict_tunes_and_loads_as_auto_does(text_encoder, tmp_path):
    """tune={} is every setting from the schedule: after loading, the encoder parameter is the untuned body."""
    X, y = ["a lovely film", "great fun", "a dull mess", "truly awful"], ["pos", "pos", "neg", "neg"]
    tuned = FewShotClassifier(text_encoder, head="prototype", lexical=False, tune={}).fit(X, y)
    assert "tuned_from" in tuned.encoder_.identity
    again = FewShotClassifier.load(tuned.save(tmp_path / "empty-tune"))
    assert "tuned_from" not in again.encoder.identity and again.encoder_.identity == tuned.encoder_.identity


def test_tuning_refuses_what_it_cannot_tune(text_encoder):
    with pytest.raises(InputError, match="TextEncoder"):
        FewShotClassifier(FakeEncoder(), tune=True).fit(["a", "b", "c", "d"], [0, 0, 1, 1])
    with pytest.raises(InputError, match="two examples"):
        contrastive_tune(text_encoder, ["a cat", "a dog"], ["cat", "dog"], steps=1)
    with pytest.raises(InputError, match="steps"):
        contrastive_tune(text_encoder, ["a", "b", "c"], [0, 0, 1], steps=0)
    X, y = ["good", "great", "fine", "bad", "awful", "poor"], ["pos"] * 3 + ["neg"] * 3
    bad = {
        "temperature": 0,  # the loss would divide by it
        "batch_size": 0,
        "lr": float("nan"),
        "seed": "a",
        "steps": True,
        "layers": 0,
    }
    for key, value in bad.items():
        # named before any tune (the cross-fitted ones included) starts
        with pytest.raises(InputError, match=f"tune setting {key} must be"):
            FewShotClassifier(text_encoder, head="auto", tune={key: value}).fit(X, y)
        with pytest.raises(InputError, match=f"^{key} must be"):
            contrastive_tune(text_encoder, X, y, **{key: value})
    numpy = {"steps": np.int64(1), "batch_size": np.int64(4), "seed": np.int64(2), "layers": np.int64(1)}
    assert contrastive_tune(text_encoder, X, y, **numpy).tuning["layers"] == 1


def test_batches_give_every_example_a_positive_however_many_classes():
    from fewshot.tuning import _batches

    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(77), 8)  # banking77 at N=8: 616 examples, 77 classes
    for batch in _batches(codes, 64, 20, rng):
        counts = np.bincount(codes[batch])
        assert len(batch) == 64 and len(set(batch.tolist())) == 64
        assert counts[counts > 0].min() >= 2  # no anchor without a positive
    codes = np.repeat([0, 1], 64)  # binary at N=64: 32 of each class a batch
    for batch in _batches(codes, 64, 5, rng):
        assert np.bincount(codes[batch]).tolist() == [32, 32]
    codes = np.array([0, 0, 0, 1, 1, 2])  # a class with one example is left out of larger sets' batches
    assert all(len(b) == 6 for b in _batches(codes, 64, 2, rng))  # the whole set fits: taken as it is


def test_auto_schedule_follows_the_support_set():
    from fewshot.tuning import (
        AUTO_EPOCHS,
        AUTO_LR,
        AUTO_MAX_STEPS,
        AUTO_MIN_STEPS,
        AUTO_MULTICLASS_EPOCHS,
        FULL_LR,
        auto_schedule,
    )

    small, large = auto_schedule(16, 2), auto_schedule(384, 6)
    assert small["layers"] is None and small["lr"] == FULL_LR  # a body whose layers are not known: all of them
    assert auto_schedule(16, 2, depth=6)["layers"] == 2 and auto_schedule(16, 2, depth=12)["layers"] == 4
    assert auto_schedule(16, 2, depth=6)["lr"] == AUTO_LR
    assert auto_schedule(32, 2, depth=6)["layers"] is None  # 16 a class: every layer
    assert auto_schedule(32, 2, depth=6)["lr"] == FULL_LR
    few_classes = auto_schedule(8 * 4, 4, depth=6)  # three classes or more train every layer from the first
    assert few_classes["layers"] is None and few_classes["lr"] == FULL_LR
    assert small["steps"] == AUTO_MIN_STEPS and small["batch_size"] == 16  # the whole support set a step
    assert large["batch_size"] == 64 and AUTO_MIN_STEPS < large["steps"] <= AUTO_MAX_STEPS
    assert auto_schedule(200 * 77, 77)["steps"] == AUTO_MAX_STEPS  # a ceiling keeps the tune light
    assert auto_schedule(768, 6)["steps"] > large["steps"]  # more examples, more steps
    # passes: more over three classes or more from 16 examples a class, not over two or fewer a class
    assert AUTO_MULTICLASS_EPOCHS > AUTO_EPOCHS
    assert auto_schedule(64 * 4, 4, depth=6)["steps"] == AUTO_MULTICLASS_EPOCHS * 4
    assert auto_schedule(16 * 4, 4, depth=6)["steps"] == AUTO_MULTICLASS_EPOCHS  # one batch a pass
    assert auto_schedule(64 * 2, 2, depth=6)["steps"] == AUTO_EPOCHS * 2
    assert auto_schedule(15 * 4, 4, depth=6)["steps"] == max(AUTO_EPOCHS, AUTO_MIN_STEPS)
    with pytest.raises(InputError, match="two classes"):
        auto_schedule(8, 1)


def test_tune_auto_records_its_choice_and_keeps_given_settings(text_encoder, emotion, tmp_path):
    X, y, _, _ = emotion
    two = np.isin(y, np.unique(y)[:2])
    X, y = [x for x, keep in zip(X, two) if keep], y[two]  # two classes of emotion's support, 8 each
    clf = FewShotClassifier(text_encoder, tune={"steps": 2, "seed": 3}).fit(X, y)
    assert clf.tuning_["steps"] == 2 and clf.tuning_["seed"] == 3 and clf.tuning_["examples"] == 16
    assert set(clf.tuning_["auto"]) == {"batch_size", "layers", "lr", "temperature"}  # what the schedule filled in
    assert clf.tuning_["layers"] == 2  # the top third of MiniLM's six layers
    assert clf.encoder_.identity["tuning"]["lr"] == clf.tuning_["lr"]
    again = FewShotClassifier.load(clf.save(tmp_path / "m"))
    assert again.tuning_ == clf.tuning_
    assert FewShotClassifier(text_encoder).fit(X, y).tuning_ is None
    with pytest.raises(InputError, match="unknown settings"):
        FewShotClassifier(text_encoder, tune={"epochs": 3}).fit(X, y)
    with pytest.raises(InputError, match="tune"):
        FewShotClassifier(text_encoder, tune="always").fit(X, y)


def test_too_few_examples_to_hold_out_of_the_tune_keep_the_tuned_rule_and_say_so(text_encoder, emotion):
    """Three examples a class cannot be split into halves for cross-fitted tunes: auto's folds would see
    examples the body was tuned on (every head perfect), so the tuned body's rule keeps the cache adapter, and
    the lexical channel, with no held-out scores to be weighed on, says why it is off."""
    X, y, _, _ = emotion
    keep = np.concatenate([np.flatnonzero(y == c)[:3] for c in np.unique(y)[:4]])
    X, y = [X[i] for i in keep], y[keep]
    clf = FewShotClassifier(text_encoder, head="auto", tune={"steps": 4, "seed": 0}).fit(X, y)
    assert clf.head_.selection_["picked"] == "cache" and clf.head_.selection_["prefer"] == "cache"
    assert clf.lexical_ == {"picked": 0.0, "why": "too few examples a class to hold some out of the tune"}


def test_a_tuned_body_is_judged_on_examples_it_was_not_tuned_on(text_encoder, emotion):
    """head="auto" and the temperature after a tune come from folds scored by bodies tuned without them:
    on the tuned body's own examples every head is perfect and the probabilities far too sure."""
    X, y, Xt, yt = emotion
    keep = np.isin(y, ["sadness", "joy", "anger"])
    X, y = [x for x, k in zip(X, keep) if k], y[keep]
    test = np.isin(yt, ["sadness", "joy", "anger"])
    Xt, yt = [x for x, k in zip(Xt, test) if k], yt[test]
    from fewshot.classifiers import background

    cached = len(background._CACHE)
    clf = FewShotClassifier(text_encoder, head="auto", tune={"steps": 8, "seed": 0}).fit(X, y)
    # the label prior of each of its three bodies only scores labels: none of them embeds (and keeps for the
    # life of the process) the background sentences that tagging uses
    assert len(background._CACHE) == cached and clf.prior_.background_ is None
    selection = clf.head_.selection_
    assert "tuned without it" in selection["why"] and "tuned without it" in clf.calibration_["method"]
    assert max(selection["scores"].values()) < 1.0  # held out for real: 24 emotion texts are not all easy
    P = clf.predict_proba(Xt)
    accuracy = float(np.mean(clf.classes_[P.argmax(axis=1)] == yt))
    # the same head on the same tuned body, scored on the examples it was tuned on
    naive = FewShotClassifier(clf.encoder_, head="auto").fit(X, y)
    assert min(naive.head_.selection_["scores"].values()) > max(selection["scores"].values())
    # measured: test accuracy 0.56, mean top probability 0.77 cross-fitted against 0.86 on the tuned examples
    gap, naive_gap = P.max(axis=1).mean() - accuracy, naive.predict_proba(Xt).max(axis=1).mean() - accuracy
    assert abs(gap) < naive_gap - 0.03


def test_too_few_examples_to_cross_fit_a_tune_calibrate_on_the_untuned_body(text_encoder, emotion):
    """Two examples a class leave no pair to tune a held-out half on. The tuned body maps its own examples
    onto their class, so a threshold from them (near 1) abstained on most new inputs of their classes."""
    X, y, Xt, yt = emotion
    two = np.concatenate([np.flatnonzero(y == c)[:2] for c in np.unique(y)])
    X, y = [X[i] for i in two], y[two]
    tuned = FewShotClassifier(text_encoder, tune={"steps": 6, "seed": 0}, abstain="auto").fit(X, y)
    frozen = FewShotClassifier(text_encoder, abstain="auto").fit(X, y)
    assert "untuned body" in tuned.calibration_["method"]
    assert tuned.threshold_ == pytest.approx(frozen.threshold_)
    abstained = np.mean([p is None for p in tuned.predict(Xt)])
    assert abstained < 0.25  # measured: 0.0 here; a threshold from the tuned examples abstained on 97%


def _without_dropout(encoder):
    """A copy of ``encoder`` whose model has no dropout, so that two ways of running a step can be compared."""
    import copy

    import torch

    from fewshot import TextEncoder

    model = copy.deepcopy(encoder.model)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return TextEncoder(model)


def test_a_step_on_the_top_layers_from_stored_outputs_equals_a_full_pass_with_the_rest_frozen(text_encoder):
    import copy

    import torch

    from fewshot.tuning import _FrozenBottom, train_step

    encoder = _without_dropout(text_encoder)
    # lengths differ, so the stored outputs are padded to each batch as the tokenizer pads the batch
    texts = ["I lost my card yesterday", "card gone", "how do I change my PIN code at the cash machine", "new PIN"]
    codes = np.array([0, 0, 1, 1])

    def one_step(stored: bool) -> dict:
        model = copy.deepcopy(encoder.model)
        model.train()
        bottom = _FrozenBottom(model, texts, trained=2) if stored else None
        if not stored:  # the reference: every layer runs, only the top two learn
            for name, p in model.named_parameters():
                p.requires_grad_(".layer.4." in name or ".layer.5." in name)
        optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        losses = [train_step(model, optimiser, texts[i : i + 4], codes, 0.1, bottom) for i in (0, 0)]
        return {"losses": losses, "params": {n: p.detach().clone() for n, p in model.named_parameters()}}

    full, cached = one_step(False), one_step(True)
    assert np.allclose(full["losses"], cached["losses"], atol=1e-5)
    moved = [n for n, p in cached["params"].items() if not torch.equal(p, encoder.model.state_dict()[n])]
    assert moved and all(".layer.4." in n or ".layer.5." in n for n in moved)
    for name, p in full["params"].items():
        assert torch.allclose(p, cached["params"][name], atol=1e-5), name


def test_length_runs_cover_the_batch_once_and_never_pad_more_than_one_batch():
    import math

    from fewshot.tuning import length_chunks

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 64, 200):
        lengths = np.concatenate([rng.integers(5, 40, n - n // 8), rng.integers(150, 256, n // 8)])
        runs = length_chunks(lengths, overhead=32)
        assert sorted(np.concatenate(runs).tolist()) == list(range(n))
        for run in runs:  # a run is a stretch of the lengths in decreasing order
            assert (np.diff(lengths[run]) <= 0).all()
        cost = sum(len(r) * lengths[r].max() + 32 for r in runs)
        assert cost <= n * lengths.max() + 32
        if n >= 64:  # a few long texts among short ones: the long ones go apart
            assert len(runs) >= 2 and cost < 0.7 * n * lengths.max()
    assert len(length_chunks(np.full(50, 30), overhead=32)) == 1  # equal lengths: nothing to gain
    assert len(length_chunks(lengths, overhead=math.inf)) == 1
    assert length_chunks(np.array([], dtype=int)) == []


def test_a_step_in_length_runs_equals_one_padded_batch(text_encoder):
    import copy
    import math

    import torch

    from fewshot.tuning import _FrozenBottom, batch_embeddings, train_step

    encoder = _without_dropout(text_encoder)
    short = ["card gone", "new PIN", "lost card", "PIN?"]
    long = [
        "I lost my card yesterday on the way home from work and I cannot find it anywhere in the flat, what now",
        "how do I change the PIN code of my debit card at the cash machine, and does it cost anything to do so",
    ]
    texts = [short[0], long[0], short[1], short[2], long[1], short[3]]
    codes = np.array([0, 0, 0, 1, 1, 1])
    model = copy.deepcopy(encoder.model).train()
    runs, order = batch_embeddings(model, texts, overhead=0)
    whole, whole_order = batch_embeddings(model, texts, overhead=math.inf)
    assert sorted(order.tolist()) == list(range(6)) and whole_order.tolist() == list(range(6))
    assert order.tolist() != list(range(6))  # it did split (or reorder) the batch
    assert torch.allclose(runs, whole[order], atol=1e-5)  # padding never reaches an embedding

    def one_step(overhead: float, layers: int | None) -> tuple[float, dict]:
        m = copy.deepcopy(encoder.model).train()
        bottom = _FrozenBottom(m, texts, trained=layers) if layers else None
        # plain SGD at rate 1: the step is the gradient (Adam's first step is its sign, which float noise flips)
        optimiser = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
        loss = train_step(m, optimiser, texts, codes, 0.1, bottom, overhead=overhead)
        return loss, {n: p.detach().clone() for n, p in m.named_parameters()}

    for layers in (None, 2):
        (a, pa), (b, pb) = one_step(0, layers), one_step(math.inf, layers)
        assert a == pytest.approx(b, abs=1e-5)
        for name, p in pa.items():
            assert torch.allclose(p, pb[name], atol=1e-5), name


def test_tuning_the_top_layers_leaves_the_rest_as_they_were(text_encoder, emotion):
    import torch

    X, y, _, _ = emotion
    tuned = contrastive_tune(text_encoder, X[:16], y[:16], steps=2, lr=1e-4, layers=2)
    before, after = text_encoder.model.state_dict(), tuned.model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".layer.4." in n or ".layer.5." in n for n in changed)
    assert all(p.requires_grad for p in tuned.model.parameters())  # an ordinary model again
    assert tuned.identity["tuning"]["layers"] == 2
    assert len(tuned.model[0].auto_model.encoder.layer) == 6  # the layer list is whole again
    with pytest.raises(InputError, match="from 1 to 6"):
        contrastive_tune(text_encoder, X[:16], y[:16], steps=1, layers=7)
