"""The evaluation harness's own logic: loaders against each README, sampling, metrics, intervals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from eval.datasets import load, sample_per_class, stratified_split
from eval.metrics import accuracy, ci95, macro_f1, mcc, mean_std
from eval.sampling import capped_subsample, episodes

# (train rows, test rows, classes, test rows per class) as each dataset's README.txt states them
README_COUNTS = {
    "sst2": (6920, 1821, 2, [912, 909]),
    "sst5": (8544, 2210, 5, [279, 633, 389, 510, 399]),
    "emotion": (16000, 2000, 6, [581, 695, 159, 275, 224, 66]),
    "amazon_counterfactual": (4018, 670, 2, [539, 131]),
    "banking77": (10003, 3080, 77, [40] * 77),
    "clinc150": (15000, 4500, 150, [30] * 150),
    "20newsgroups": (11314, 7532, 20, None),
}
# datasets without an official split: total rows per class across our seeded train/test split
README_TOTALS = {
    "cr": [1366, 2405],  # README: 3775 lines, 4 of them a label with no text; raw files 1366 / 2405
    "mr": [5331, 5331],
    "subj": [5000, 5000],
    "ag_news": [1900] * 4,
    "enron_spam": [16545, 17170],
}


@pytest.mark.parametrize("name", sorted(README_COUNTS))
def test_official_splits_match_readme(data_root, name):
    n_train, n_test, n_classes, per_class = README_COUNTS[name]
    ds = load(name, data_root)
    assert (len(ds.train_texts), len(ds.test_texts), len(ds.label_names)) == (n_train, n_test, n_classes)
    assert len(ds.train_labels) == n_train and len(ds.test_labels) == n_test
    if per_class:
        assert np.bincount(ds.test_labels, minlength=n_classes).tolist() == per_class
    assert all(isinstance(t, str) and t.strip() for t in ds.train_texts[:200] + ds.test_texts[:200])


@pytest.mark.parametrize("name", sorted(README_TOTALS))
def test_made_splits_cover_every_row_once(data_root, name):
    ds = load(name, data_root)
    total = np.bincount(ds.train_labels) + np.bincount(ds.test_labels)
    assert total.tolist() == README_TOTALS[name]
    assert "seed" in ds.split_note
    # stratified: each class has about the same share in test
    share = np.bincount(ds.test_labels) / total
    assert share.max() - share.min() < 0.01


def test_clinc_out_of_scope_and_goemotions_multilabel(data_root):
    clinc = load("clinc150", data_root)
    assert [len(clinc.extra[k]) for k in ("oos_train", "oos_val", "oos_test")] == [100, 100, 1000]
    go = load("goemotions", data_root)
    assert (len(go.train_texts), len(go.test_texts), len(go.label_names)) == (43410, 5427, 28)
    assert go.test_labels.shape == (5427, 28) and int((go.test_labels.sum(1) > 1).sum()) == 837
    # the single-label development sets: the rows of a coarse mapping with exactly one of its labels
    expected = {
        "ekman": ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"],
        "group": ["ambiguous", "negative", "neutral", "positive"],
    }
    for mapping, names in expected.items():
        ds = load(f"goemotions_{mapping}", data_root)
        rows = (data_root / "goemotions" / mapping / "test.tsv").read_text(encoding="utf-8").splitlines()
        single = [r.split("\t") for r in rows if r.strip() and "," not in r.split("\t")[1]]
        assert ds.label_names == names
        assert ds.test_texts == [t for t, _, _ in single]
        assert ds.test_labels.tolist() == [int(i) for _, i, _ in single]
        assert len(ds.train_texts) == len(ds.train_labels) > 30_000
        assert set(ds.train_labels.tolist()) == set(range(len(names)))


def test_sampler_is_deterministic_and_stratified():
    y = np.repeat([0, 1, 2], [50, 30, 5])
    a, b = sample_per_class(y, 8, seed=3), sample_per_class(y, 8, seed=3)
    assert np.array_equal(a, b)
    assert np.bincount(y[a]).tolist() == [8, 8, 5]  # a class with fewer than n gives all it has
    assert len(np.unique(a)) == len(a)
    assert not np.array_equal(a, sample_per_class(y, 8, seed=4))


def test_episodes_are_deterministic_disjoint_and_n_way():
    y = np.repeat(np.arange(10), 30)
    eps = list(episodes(y, n_way=5, k_shot=2, n_query=15, n_episodes=20, seed=1))
    again = list(episodes(y, n_way=5, k_shot=2, n_query=15, n_episodes=20, seed=1))
    for (s, q), (s2, q2) in zip(eps, again):
        assert np.array_equal(s, s2) and np.array_equal(q, q2)
        assert len(np.unique(y[s])) == 5 and set(y[s]) == set(y[q])
        assert np.bincount(y[s])[np.unique(y[s])].tolist() == [2] * 5
        assert np.bincount(y[q])[np.unique(y[q])].tolist() == [15] * 5
        assert not set(s) & set(q)
    with pytest.raises(ValueError, match="classes have"):
        next(episodes(np.repeat([0, 1], 30), 5, 1, 15, 1, seed=0))


def test_capped_subsample_and_split_are_stratified_and_fixed():
    y = np.repeat([0, 1], [3000, 1000])
    idx = capped_subsample(y, 2000)
    assert len(idx) == 2000 and np.bincount(y[idx]).tolist() == [1500, 500]
    assert np.array_equal(idx, capped_subsample(y, 2000))
    assert len(capped_subsample(y, 10_000)) == 4000
    tr, te = stratified_split(y, 0.25)
    assert not set(tr) & set(te) and len(tr) + len(te) == 4000
    assert np.bincount(y[te]).tolist() == [750, 250]


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    for n_classes in (2, 5):
        yt = rng.integers(0, n_classes, 500)
        yp = np.where(rng.random(500) < 0.6, yt, rng.integers(0, n_classes, 500))
        assert accuracy(yt, yp) == pytest.approx(accuracy_score(yt, yp))
        assert macro_f1(yt, yp, n_classes) == pytest.approx(f1_score(yt, yp, average="macro"))
        assert mcc(yt, yp, n_classes) == pytest.approx(matthews_corrcoef(yt, yp))
    # a class never predicted and never present scores 0, as zero_division=0
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 2) == pytest.approx(0.5)
    assert mcc(np.array([1, 1]), np.array([1, 1]), 2) == 0.0


def test_confidence_interval_covers_the_true_mean_95_times_in_100():
    """What the interval is for: over many seeded experiments of 600 episodes, mean +/- ci95 holds the
    true mean about 95% of the time (binomial spread over 2,000 experiments: +/- 1 point)."""
    rng = np.random.default_rng(0)
    samples = rng.normal(0.7, 0.1, size=(2000, 600))
    half = np.array([ci95(s) for s in samples])
    covered = np.abs(samples.mean(axis=1) - 0.7) <= half
    assert 0.94 <= covered.mean() <= 0.96
    assert mean_std([0.5, 0.7, 0.6, 0.8]) == pytest.approx((0.65, 0.1118034), rel=1e-6)


def test_setfit_pair_count_matches_enumeration_and_keeps_defaults_where_cheap():
    from eval.peers import default_pair_count, setfit_training_args

    rng = np.random.default_rng(0)
    for labels in (np.repeat(np.arange(3), 4), rng.integers(0, 4, 23), np.array([0, 1, 1, 1, 1, 1, 1])):
        i, j = np.triu_indices(len(labels))  # every pair with replacement, as SetFit's sampler draws them
        positive = int((labels[i] == labels[j]).sum())
        assert default_pair_count(labels) == 2 * max(positive, len(i) - positive)
    # every N=8 support and a binary N=64 one keep SetFit's defaults; a 5-class N=64 one takes the paper's R
    for classes in (2, 4, 5, 6):
        assert setfit_training_args(np.repeat(np.arange(classes), 8)) == {}
    assert setfit_training_args(np.repeat(np.arange(2), 64)) == {}
    assert setfit_training_args(np.repeat(np.arange(5), 64)) == {"num_iterations": 20}


def test_setfit_fit_resumed_from_a_checkpoint_ends_where_an_unbroken_fit_does(data_root, tmp_path, monkeypatch):
    """A long SetFit fit stopped part-way and rerun continues from its last save (weights, optimizer, schedule,
    pair order) and lands on the same weights as one that never stopped; its fit time adds up both parts."""
    pytest.importorskip("setfit")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from safetensors.numpy import load_file

    from eval import peers

    ds = load("cr", data_root)
    support = sample_per_class(ds.train_labels, 4, seed=0)  # 8 reviews: 40 pairs, 3 steps of 16
    train = Dataset.from_dict(
        {"text": [ds.train_texts[i] for i in support], "label": ds.train_labels[support].tolist()}
    )
    test_idx = np.arange(20)
    monkeypatch.setattr(peers, "SAVE_STEPS", 1)

    unbroken = peers._fit_and_score(ds, train, 0, test_idx, checkpoints=tmp_path / "a")
    assert [p["to_step"] for p in unbroken["fit_parts"]] == [3]
    final = load_file(str(next((tmp_path / "a" / "checkpoint-3").glob("*.safetensors"))))

    # the same fit stopped after step 2: its folder holds checkpoint-2 only
    stopped = tmp_path / "b"
    shutil.copytree(tmp_path / "a", stopped, ignore=shutil.ignore_patterns("checkpoint-3"))
    resumed = peers._fit_and_score(ds, train, 0, test_idx, checkpoints=stopped)
    assert [(p["from_step"], p["to_step"]) for p in resumed["fit_parts"]] == [(0, 2), (2, 3)]
    assert resumed["fit_s"] == pytest.approx(sum(p["seconds"] for p in resumed["fit_parts"]))
    again = load_file(str(next((stopped / "checkpoint-3").glob("*.safetensors"))))
    assert again.keys() == final.keys()
    for name in final:
        np.testing.assert_allclose(again[name], final[name], atol=1e-6, err_msg=name)
    assert resumed["predictions"] == unbroken["predictions"]

    # checkpoints of another seed are not this fit's: a rerun starts from step 0
    shutil.copytree(tmp_path / "a", tmp_path / "c", ignore=shutil.ignore_patterns("checkpoint-3"))
    other = peers._fit_and_score(ds, train, 1, test_idx, checkpoints=tmp_path / "c")
    assert [(p["from_step"], p["to_step"]) for p in other["fit_parts"]] == [(0, 3)]


def test_image_loaders_match_readme(data_root):
    from eval.datasets import load_images

    cifar = load_images("cifar10", data_root)
    assert cifar.test_images.shape == (10000, 32, 32, 3) and cifar.test_images.dtype == np.uint8
    assert np.bincount(cifar.test_labels).tolist() == [1000] * 10
    assert np.bincount(cifar.train_labels).tolist() == [100] * 10
    assert cifar.label_names[:3] == ["airplane", "automobile", "bird"]
    euro = load_images("eurosat", data_root)
    assert euro.train_images.shape == (1000, 64, 64, 3) and np.bincount(euro.test_labels).tolist() == [100] * 10
    mnist = load_images("mnist", data_root)
    total = np.bincount(mnist.train_labels) + np.bincount(mnist.test_labels)
    assert total.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_lexical_margin_keeps_the_weight_only_when_it_wins_by_the_margin():
    from eval.lexical_rule import gain

    # 100 held-out examples: weight 0.3 gets two more right than the head alone; the pool gains 1.5 points on test
    row = {"dataset": "d", "seed": 0, "min_gain": 1, "on": 0.615, "off": 0.6}
    row["lexical"] = {"weights": {"0.0": 0.5, "0.2": 0.51, "0.3": 0.52}, "n": 100, "picked": 0.3}
    assert gain(row, 1) == pytest.approx(1.5) and gain(row, 2) == pytest.approx(1.5) and gain(row, 3) == 0.0
    # the head alone won outright: nothing to gain under any margin
    tie = {**row, "on": 0.6, "lexical": {"weights": {"0.0": 0.52, "0.3": 0.52}, "n": 100, "picked": 0.0}}
    assert gain(tie, 1) == 0.0
    # a row fitted under another margin, or whose pick is not the argmax, cannot be replayed
    with pytest.raises(ValueError, match="margin of 2"):
        gain({**row, "min_gain": 2}, 2)
    with pytest.raises(ValueError, match="any win picks 0.3"):
        gain({**row, "lexical": {**row["lexical"], "picked": 0.2}}, 2)
    # no held-out scores (the channel could not apply): no gain
    assert gain({**row, "lexical": {"picked": 0.0, "why": "a class has a single example"}}, 1) == 0.0


def test_label_expansion_leaves_out_words_as_close_to_another_label():
    from eval.zeroshot_templates import expanded

    # two labels on axes 0 and 1: "antonym" is nearer label 0 than "own" is, but nearly as near label 1
    names = np.eye(3, dtype=np.float32)[:2]
    own = np.array([0.6, 0.0, 0.8], dtype=np.float32)
    antonym = np.array([0.75, np.sqrt(1 - 0.75**2), 0.0], dtype=np.float32)
    W = np.stack([antonym, own])
    V = names.copy()
    # without the penalty the antonym is the nearer word of label 0; with it, label 0 takes its own word
    assert np.allclose(expanded(V, names, W, k=1, w=1.0, lam=0.0)[0], antonym)
    assert np.allclose(expanded(V, names, W, k=1, w=1.0, lam=1.0)[0], own)
    # the weight moves the label vector part of the way: w = 0 leaves it as it was
    assert np.allclose(expanded(V, names, W, k=1, w=0.0, lam=1.0), V)
    assert np.allclose(expanded(V, names, W, k=1, w=0.5, lam=1.0)[0], 0.5 * V[0] + 0.5 * own)


def test_all_but_the_top_removes_the_references_shared_directions():
    from eval.zeroshot_templates import all_but_the_top

    rng = np.random.default_rng(0)
    # reference rows spread mostly along axis 0, around a mean of 2 on axis 3
    reference = rng.normal(size=(200, 5)) * np.array([10.0, 1.0, 0.5, 0.2, 0.1]) + np.array([0, 0, 0, 2.0, 0])
    A = rng.normal(size=(7, 5))
    top1 = all_but_the_top(reference, 1)(A)
    assert np.allclose(np.linalg.norm(top1, axis=1), 1.0)
    assert np.allclose(top1[:, 0], 0.0, atol=0.05)  # the dominant direction is gone
    centred = A - reference.mean(axis=0)
    # D = 0: the mean alone is taken away
    assert np.allclose(all_but_the_top(reference, 0)(A), centred / np.linalg.norm(centred, axis=1, keepdims=True))


def test_a_label_free_setting_is_chosen_on_the_development_group_alone():
    from eval.zeroshot_templates import DEV, chosen

    dev, other = DEV[0], "ag_news"
    assert other not in DEV
    rows = [
        {"dataset": dev, "plain": 50.0, "csls": {"k=5": 51.0, "k=20": 49.0}},
        {"dataset": other, "plain": 50.0, "csls": {"k=5": 40.0, "k=20": 70.0}},  # the report group: unread
    ]
    assert chosen(rows, "csls") == "k=5"
    assert chosen(rows[1:], "csls") == "k=20"  # no development dataset run: all of them


def test_a_refreshed_results_file_takes_results_from_the_rerun_and_times_from_the_quiet_run():
    from eval.refresh_accuracy import refresh

    def row(method, seed, acc, fit_s):
        return {"method": method, "dataset": "d", "shots": 8, "seed": seed, "accuracy": acc, "fit_s": fit_s}

    quiet = {"command": "quiet", "rows": [row("a", 0, 0.5, 10.0), row("a", 1, 0.6, 11.0)]}
    rerun = {"command": "rerun", "rows": [row("a", 0, 0.5, 30.0), row("a", 1, 0.7, 33.0)]}
    out = refresh(quiet, rerun, "a fix")
    assert [(r["accuracy"], r["fit_s"]) for r in out["rows"]] == [(0.5, 10.0), (0.7, 11.0)]
    assert out["refreshed"]["changed_rows"] == [
        {"row": ["a", "d", 8, 1], "accuracy": [0.6, 0.7], "macro_f1": [None, None], "mcc": [None, None]}
    ]
    assert out["command"] == "quiet" and out["refreshed"]["results_from"] == "rerun"
    with pytest.raises(SystemExit, match="do not hold the same rows"):
        refresh(quiet, {"command": "x", "rows": rerun["rows"][:1]}, "")
    with pytest.raises(SystemExit, match="each once"):
        refresh(quiet, {"command": "x", "rows": [rerun["rows"][0], rerun["rows"][0]]}, "")


def test_the_tagging_rule_grid_decides_as_tag_does_with_the_shipped_settings(text_encoder):
    from eval.tagging_rule import counts, decide, micro_f1, scores, shipped
    from fewshot import ZeroShotClassifier

    labels = ["sport", "politics", "technology", "cooking", "weather"]
    texts = [
        "Our team lost the final after a penalty shoot-out.",
        "The senate passed the budget bill late last night.",
        "Simmer the onions in butter until golden.",
        "Heavy rain and strong winds are expected tomorrow.",
        "The new phone ships with a faster chip.",
        "I went to bed early because I was tired.",
        "My grandmother told me a story about her childhood.",
        "The striker scored twice as the storm rolled in over the stadium.",
    ]
    Y = np.zeros((len(texts), len(labels)), dtype=np.int8)
    for i, j in enumerate([0, 1, 3, 4, 2, -1, -1, 0]):
        if j >= 0:
            Y[i, j] = 1
    d = scores(texts, Y, labels, text_encoder)
    P = decide(d, *shipped())
    tags = ZeroShotClassifier(labels, encoder=text_encoder).fit().tag(texts)
    assert [{labels[j] for j in np.flatnonzero(row)} for row in P] == [{t for t, _ in tg} for tg in tags]
    # a margin wide enough takes every label, and a rule that never abstains tags every item
    assert decide(d, 5, -1.0, 1.5, 2.0).all()
    assert decide(d, 5, -1.0, float("inf"), 0.0).sum(axis=1).min() == 1
    assert micro_f1(counts(Y, P)) == pytest.approx(f1_score(Y, P, average="micro", zero_division=0))
