"""The systems users would otherwise pick, run on exactly our splits: SetFit 1.2.0 and TF-IDF + LR.

SetFit runs are slow on a CPU (minutes a fit), so each (dataset, shots, seed) result is stored in
``eval/results/setfit/`` with its predictions, and reused unless a rerun is asked for.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from eval.datasets import TextDataset, sample_per_class
from eval.metrics import accuracy, macro_f1, mcc

RESULTS = Path(__file__).resolve().parent / "results"
SETFIT_DIR = RESULTS / "setfit"
SETFIT_DATASETS = ["sst5", "amazon_counterfactual", "cr", "emotion", "enron_spam", "ag_news"]

# Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", Table 2 (SetFit with the MPNet body);
# accuracy, except Amazon CF (Matthews correlation). Published, not measured here.
PUBLISHED_SETFIT_MPNET = {
    8: {"sst5": 43.6, "amazon_counterfactual": 40.3, "cr": 88.5, "emotion": 48.8, "enron_spam": 90.1, "ag_news": 82.9},
    64: {"sst5": 51.9, "amazon_counterfactual": 61.9, "cr": 90.4, "emotion": 76.2, "enron_spam": 96.1, "ag_news": 88.0},
}


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "mcc": mcc(y_true, y_pred, n_classes),
    }


def tfidf_lr(ds: TextDataset, support: np.ndarray, test_idx: np.ndarray) -> dict:
    """Logistic regression on word and bigram TF-IDF of the support set: the classic baseline."""
    t = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    X = vec.fit_transform([ds.train_texts[i] for i in support])
    model = LogisticRegression(C=10.0, max_iter=2000).fit(X, ds.train_labels[support])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.predict(vec.transform([ds.test_texts[i] for i in test_idx]))
    predict_s = time.perf_counter() - t
    out = scores(ds.test_labels[test_idx], pred, len(ds.label_names))
    return {**out, "fit_s": fit_s, "items_per_s": len(test_idx) / predict_s}


def setfit_path(dataset: str, shots: int, seed: int) -> Path:
    return SETFIT_DIR / f"{dataset}_n{shots}_seed{seed}.json"


def setfit_cached(dataset: str, shots: int, seed: int) -> dict | None:
    p = setfit_path(dataset, shots, seed)
    return json.loads(p.read_text()) if p.exists() else None


def _fit_and_score(ds: TextDataset, train, seed: int, test_idx: np.ndarray, **training_args) -> dict:
    """Fit SetFit (bundled MiniLM body) on ``train`` and score it on ``test_idx``: the fields every stored
    SetFit result shares, the test predictions included. Callers set HF_HUB_OFFLINE before importing
    anything of Hugging Face's (it is read at import time)."""
    from setfit import SetFitModel, Trainer, TrainingArguments

    from fewshot.encoders.text import bundled_model_path

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model = SetFitModel.from_pretrained(str(bundled_model_path()))
        args = TrainingArguments(
            output_dir=tmp, seed=seed, show_progress_bar=False, save_strategy="no", **training_args
        )
        Trainer(model=model, args=args, train_dataset=train).train()
        fit_s = time.perf_counter() - t
    texts = [ds.test_texts[i] for i in test_idx]
    t = time.perf_counter()
    pred = np.asarray(model.predict(texts, batch_size=64))
    predict_s = time.perf_counter() - t
    return {
        "test_size": int(len(test_idx)),
        **scores(ds.test_labels[test_idx], pred, len(ds.label_names)),
        "fit_s": fit_s,
        "items_per_s": len(texts) / predict_s,
        "setfit_version": __import__("setfit").__version__,
        "body": "all-MiniLM-L6-v2 (bundled)",
        "predictions": [int(v) for v in pred],
    }


# SetFit's default pair sampling ("oversampling") takes every pair of support examples, so the number of
# pairs grows with the square of the support: 81,920 pairs (5,120 steps) for SST-5 at N=64, 122,880 for
# Emotion, 3 to 5 hours a fit on one core here. The SetFit paper trained on R=20 positive and 20 negative
# pairs per example; where the default would take more than PAIRS_OVER_PAPER times that, the run uses the
# paper's setting. That leaves every N=8 run and the binary N=64 runs (ratio 1.6) on the defaults and moves
# the multi-class N=64 runs (ratio 4.8 to 6.4) to the paper's R.
PAPER_PAIRS_PER_EXAMPLE = 20
PAIRS_OVER_PAPER = 2


def default_pair_count(labels: np.ndarray) -> int:
    """Pairs SetFit 1.2.0's default sampler makes for these labels: every pair with replacement (an
    example with itself included), positives and negatives each oversampled to the larger count."""
    counts = np.bincount(np.asarray(labels)).astype(np.int64)
    positive = int((counts * (counts + 1) // 2).sum())
    negative = int((counts.sum() ** 2 - (counts**2).sum()) // 2)
    return 2 * max(positive, negative)


def setfit_training_args(labels: np.ndarray) -> dict:
    """The TrainingArguments a few-shot SetFit run departs from its defaults with (see PAIRS_OVER_PAPER)."""
    paper = 2 * PAPER_PAIRS_PER_EXAMPLE * len(labels)
    return {"num_iterations": PAPER_PAIRS_PER_EXAMPLE} if default_pair_count(labels) > PAIRS_OVER_PAPER * paper else {}


def setfit_run(ds: TextDataset, shots: int, seed: int, test_idx: np.ndarray) -> dict:
    """Fit SetFit 1.2.0 (default TrainingArguments, the bundled MiniLM body) on our seeded support set.

    Only ``seed`` (SetFit's own training seed), the output folder and, for large multi-class supports, the
    paper's pair count (``setfit_training_args``) differ from the defaults. The result, with the arguments
    and the test predictions, is written to ``eval/results/setfit/``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset

    support = sample_per_class(ds.train_labels, shots, seed)
    labels = ds.train_labels[support]
    train = Dataset.from_dict({"text": [ds.train_texts[i] for i in support], "label": [int(v) for v in labels]})
    training_args = setfit_training_args(labels)
    result = {
        "dataset": ds.name,
        "shots": shots,
        "seed": seed,
        "support_size": int(len(support)),
        "training_args": training_args,
        **_fit_and_score(ds, train, seed, test_idx, **training_args),
    }
    SETFIT_DIR.mkdir(parents=True, exist_ok=True)
    setfit_path(ds.name, shots, seed).write_text(json.dumps(result) + "\n")
    return result


def setfit_zeroshot_path(dataset: str, seed: int) -> Path:
    return SETFIT_DIR / f"{dataset}_zeroshot_seed{seed}.json"


def setfit_zeroshot_run(ds: TextDataset, seed: int, test_idx: np.ndarray) -> dict:
    """SetFit's zero-shot recipe (its how-to guide): ``get_templated_dataset(candidate_labels=names,
    sample_size=8)`` ("This sentence is {label}", 8 copies per label), then a SetFit fit on that synthetic
    set with ``TrainingArguments(batch_size=32, num_epochs=1)``, the bundled MiniLM body, our seed. The
    same pair cap as the few-shot runs (``setfit_training_args``): of the stored datasets only banking77's
    616 synthetic rows take ``num_iterations=20`` (its default sampling is 11,704 steps, about 3 hours here).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from setfit import get_templated_dataset

    train = get_templated_dataset(candidate_labels=list(ds.label_names), sample_size=8)
    training_args = {"batch_size": 32, "num_epochs": 1, **setfit_training_args(np.asarray(train["label"]))}
    result = {
        "dataset": ds.name,
        "seed": seed,
        "train_size": len(train),
        "training_args": training_args,
        **_fit_and_score(ds, train, seed, test_idx, **training_args),
    }
    SETFIT_DIR.mkdir(parents=True, exist_ok=True)
    setfit_zeroshot_path(ds.name, seed).write_text(json.dumps(result) + "\n")
    return result


def main() -> None:
    """Run (or top up) SetFit results: ``python -m eval.peers --shots 8 --seeds 3``."""
    import argparse

    from eval.datasets import load
    from eval.sampling import capped_subsample

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data")
    ap.add_argument("--datasets", nargs="+", default=SETFIT_DATASETS)
    ap.add_argument("--shots", type=int, nargs="+", default=[8])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1")
    ap.add_argument("--seed", type=int, nargs="+", help="these seeds instead (to split runs across cores)")
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--zeroshot", action="store_true", help="SetFit's templated zero-shot recipe instead")
    a = ap.parse_args()
    seeds = a.seed if a.seed is not None else list(range(a.seeds))
    if a.zeroshot:
        for seed in seeds:
            for name in a.datasets:
                if setfit_zeroshot_path(name, seed).exists() and not a.redo:
                    continue
                ds = load(name, a.data)
                r = setfit_zeroshot_run(ds, seed, capped_subsample(ds.test_labels, a.test_cap))
                print(f"{name} zero-shot seed={seed}: acc {r['accuracy']:.3f} fit {r['fit_s']:.0f}s", flush=True)
        return
    for shots in a.shots:
        for seed in seeds:
            for name in a.datasets:
                if setfit_cached(name, shots, seed) and not a.redo:
                    continue
                ds = load(name, a.data)
                r = setfit_run(ds, shots, seed, capped_subsample(ds.test_labels, a.test_cap))
                print(
                    f"{name} n={shots} seed={seed}: acc {r['accuracy']:.3f} mcc {r['mcc']:.3f} fit {r['fit_s']:.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
