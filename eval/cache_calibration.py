"""How calibrated the cache adapter's probabilities are when it picks a sharp kernel, and what a log kernel
would change.

    python -m eval.cache_calibration        # about 3 minutes with the embedding cache warm

The cache adapter (:class:`fewshot.heads.CacheAdapterHead`) scores a class by ``sum_i exp(-beta * (1 -
cos(query, key_i)))`` over its examples, and fits its temperature on leave-one-out scores of the examples
themselves. When it picks a sharp kernel (``beta`` > 0) those scores are only as large as the examples are
close to one another: queries that sit a little further from every example (new wording, as test queries
often do) get smaller scores for every class, and so flatter probabilities than the temperature was fitted
for. The log of each class's kernel sum is unchanged by such a uniform shift (the softmax drops it), which
this compares with the shipped head on many-class intent sets, where the sharp kernels get picked.

For each dataset and seed: ``CLASSES`` intents drawn at random, ``SHOTS`` train examples of each, 500 test
queries of those intents; ``FewShotClassifier(head=..., lexical=False)``, the library's fit with its
held-out temperature. Reported: accuracy, mean top probability, expected calibration error (15 bins), and
the beta and weights the head picked.

Written to ``eval/results/cache_calibration.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import numpy as np

from eval.datasets import load
from eval.run_text import run_per_dataset
from fewshot import FewShotClassifier, TextEncoder
from fewshot.calibration import expected_calibration_error
from fewshot.heads import CacheAdapterHead

SETS = {"banking77": 25, "clinc150": 30}  # dataset: intents drawn a seed
SHOTS = 8
SEEDS = range(1, 7)
TEST = 500


class LogKernelCacheHead(CacheAdapterHead):
    """The cache adapter with each class's kernel sum taken as its log (beta = 0, the cosine to the class
    mean, is left as it is)."""

    def _cache(self, Q: np.ndarray, beta: float) -> np.ndarray:
        S = super()._cache(Q, beta)
        return S if beta == 0.0 else np.log(np.maximum(S, 1e-300))

    def _loo_cache(self, beta: float, rows: np.ndarray) -> np.ndarray:
        S = super()._loo_cache(beta, rows)
        return S if beta == 0.0 else np.log(np.maximum(S, 1e-300))


HEADS = {"shipped": CacheAdapterHead, "log kernel": LogKernelCacheHead}


def evaluate(name: str, encoder: TextEncoder) -> dict:
    """Every seed's runs of both heads on the dataset ``name``."""
    ds = load(name)
    names = np.asarray(ds.label_names)
    runs = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        classes = rng.choice(len(names), SETS[name], replace=False)
        pick = [rng.choice(np.flatnonzero(ds.train_labels == c), SHOTS, replace=False) for c in classes]
        train = np.concatenate(pick)
        test = rng.choice(np.flatnonzero(np.isin(ds.test_labels, classes)), TEST, replace=False)
        X, y = [ds.train_texts[i] for i in train], names[ds.train_labels[train]]
        Xt, yt = [ds.test_texts[i] for i in test], names[ds.test_labels[test]]
        for head, make in HEADS.items():
            clf = FewShotClassifier(encoder=encoder, head=make(), lexical=False).fit(X, y)
            P = clf.predict_proba(Xt)
            codes = np.searchsorted(clf.classes_, yt)
            runs.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "head": head,
                    "accuracy": float((P.argmax(axis=1) == codes).mean()),
                    "confidence": float(P.max(axis=1).mean()),
                    "ece": expected_calibration_error(P, codes),
                    "beta": clf.head_.beta_,
                    "weights": list(clf.head_.weights_),
                }
            )
    return {"dataset": name, "runs": runs}


def markdown(out: dict) -> str:
    runs = [r for row in out["rows"] for r in row["runs"]]
    lines = [
        "# The cache adapter's calibration with sharp kernels",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. {SHOTS} examples of each of the drawn intents, "
        f"{TEST} test queries, MiniLM, `lexical=False`; ECE over 15 bins.",
        "",
        "| dataset | seed | head | beta, weights | accuracy | mean top probability | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['head']} | {r['beta']:g}, {tuple(r['weights'])} | "
            f"{100 * r['accuracy']:.1f} | {r['confidence']:.3f} | {r['ece']:.3f} |"
        )
    lines += ["", "| head | runs | mean accuracy | mean ECE | mean ECE where the shipped head picked beta > 0 |"]
    lines.append("|---|---|---|---|---|")
    sharp = {(r["dataset"], r["seed"]) for r in runs if r["head"] == "shipped" and r["beta"] > 0}
    for head in HEADS:
        rs = [r for r in runs if r["head"] == head]
        on = [r["ece"] for r in rs if (r["dataset"], r["seed"]) in sharp]
        sharp_ece = f"{np.mean(on):.3f} ({len(on)} runs)" if on else "none"
        lines.append(
            f"| {head} | {len(rs)} | {100 * np.mean([r['accuracy'] for r in rs]):.1f} | "
            f"{np.mean([r['ece'] for r in rs]):.3f} | {sharp_ece} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    run_per_dataset(list(SETS), evaluate, "eval.cache_calibration", "cache_calibration", markdown)


if __name__ == "__main__":
    main()
