"""How far prompt templates alone can take zero-shot text classification with no corpus.

    python -m eval.zeroshot_templates        # about 5 minutes cold, under one with the embedding cache warm

On the eleven zero-shot datasets of ``eval.run_text --protocol zeroshot`` (label names only, test splits
capped at 2,000 rows, Matthews correlation for amazon_counterfactual, accuracy elsewhere), with the bundled
MiniLM, each row scores one way of building the label vectors from :data:`POOL`, thirty templates (the
shipped ``plain`` and ``ensemble`` sets among them):

- the shipped ``plain`` and ``ensemble`` sets, and all thirty pooled;
- a label-free choice: the ten templates under which the label vectors are least alike (mean pairwise
  cosine), which needs nothing but the label names;
- two oracles no user has, chosen on each test set itself: the best single template, and a greedy ensemble
  (templates added one at a time while the test score rises, at most six).

The oracles bound what any template choice can reach on these label sets. Written to
``eval/results/text_zeroshot_templates.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import numpy as np

from eval.datasets import load
from eval.run_text import run_per_dataset, scores
from eval.sampling import capped_subsample
from fewshot import TextEncoder, ZeroShotClassifier
from fewshot.prompts import resolve_templates

NAMES = [
    "sst2",
    "sst5",
    "cr",
    "mr",
    "subj",
    "emotion",
    "ag_news",
    "amazon_counterfactual",
    "banking77",
    "clinc150",
    "enron_spam",
]
TEST_CAP = 2000
LABEL_FREE_K = 10
GREEDY_MAX = 6
POOL = list(
    dict.fromkeys(
        resolve_templates("plain")
        + resolve_templates("ensemble")
        + [
            "This is {}.",
            "This message is {}.",
            "The category is {}.",
            "This is an example of {}.",
            "It was {}.",
            "A {} text.",
            "This review is {}.",
            "The label is {}.",
            "This is a {} sentence.",
            "Something {}.",
            "This document is about {}.",
            "The sentiment is {}.",
            "This post is about {}.",
            "The subject is {}.",
            "This expresses {}.",
            "The intent is {}.",
            "This request is about {}.",
            "This email is {}.",
            "Category: {}.",
            "Topic: {}.",
            "In short: {}.",
            "All about {}.",
            "The writer feels {}.",
            "A question about {}.",
        ]
    )
)


def _score(name: str, y: np.ndarray, S: np.ndarray) -> float:
    s = scores(y, S.argmax(axis=1), S.shape[1])
    return 100 * (s["mcc"] if name == "amazon_counterfactual" else s["accuracy"])


def _label_vectors(P: np.ndarray, chosen: list[int]) -> np.ndarray:
    """Unit label vectors pooled over the templates ``chosen`` of ``P`` (templates, labels, dim), each
    template's vectors first put on the unit sphere (as the classifier pools its prompts)."""
    Q = P[chosen] / np.linalg.norm(P[chosen], axis=-1, keepdims=True)
    V = Q.mean(axis=0)
    return V / np.linalg.norm(V, axis=-1, keepdims=True)


def evaluate(name: str, encoder: TextEncoder) -> dict:
    ds = load(name)
    idx = capped_subsample(ds.test_labels, TEST_CAP)
    E, y = encoder.encode([ds.test_texts[i] for i in idx]), ds.test_labels[idx]
    labels = list(ds.label_names)
    k = len(labels)
    P = encoder.encode([t.replace("{}", str(lab)) for t in POOL for lab in labels]).reshape(len(POOL), k, -1)
    single = [_score(name, y, E @ _label_vectors(P, [j]).T) for j in range(len(POOL))]
    alike = []
    for j in range(len(POOL)):
        V = _label_vectors(P, [j])
        alike.append(float(((V @ V.T).sum() - k) / (k * (k - 1))))
    greedy: list[int] = []
    best = -np.inf
    while len(greedy) < GREEDY_MAX:
        rest = [j for j in range(len(POOL)) if j not in greedy]
        trials = {j: _score(name, y, E @ _label_vectors(P, greedy + [j]).T) for j in rest}
        j, s = max(trials.items(), key=lambda kv: kv[1])
        if s <= best:
            break
        greedy, best = greedy + [j], s

    def shipped(templates: str) -> float:  # the library's own path, as a user runs it
        zs = ZeroShotClassifier(labels, encoder=encoder, templates=templates).fit()
        return _score(name, y, zs.head_.class_scores(E))

    return {
        "dataset": name,
        "test_size": len(idx),
        "labels": k,
        "plain": shipped("plain"),
        "ensemble": shipped("ensemble"),
        "pool": _score(name, y, E @ _label_vectors(P, list(range(len(POOL)))).T),
        "label_free": _score(name, y, E @ _label_vectors(P, list(np.argsort(alike)[:LABEL_FREE_K])).T),
        "oracle_single": max(single),
        "oracle_single_template": POOL[int(np.argmax(single))],
        "oracle_greedy": best,
        "oracle_greedy_templates": [POOL[j] for j in greedy],
        "per_template": dict(zip(POOL, single, strict=True)),
    }


ROWS = {
    "plain": "plain template (the baseline)",
    "ensemble": "template ensemble (shipped default)",
    "pool": f"all {len(POOL)} templates pooled",
    "label_free": f"the {LABEL_FREE_K} templates whose label vectors are least alike (label-free choice)",
    "oracle_single": "oracle: best single template, chosen on the test set",
    "oracle_greedy": f"oracle: greedy ensemble of at most {GREEDY_MAX}, chosen on the test set",
}


def markdown(out: dict) -> str:
    rows = out["rows"]
    head = "| method | " + " | ".join(r["dataset"] for r in rows) + " | mean | vs plain | worst vs plain |"
    lines = [
        "# Zero-shot: how far templates go without a corpus",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. Accuracy (Matthews correlation for "
        f"amazon_counterfactual), MiniLM, label names only, test splits capped at {TEST_CAP:,} rows.",
        "",
        head,
        "|---" * (len(rows) + 4) + "|",
    ]
    for key, title in ROWS.items():
        vals = [r[key] for r in rows]
        diffs = [r[key] - r["plain"] for r in rows]
        cells = " | ".join(f"{v:.1f}" for v in vals)
        lines.append(f"| {title} | {cells} | {np.mean(vals):.1f} | {np.mean(diffs):+.1f} | {min(diffs):+.1f} |")
    gain = {key: np.mean([r[key] - r["plain"] for r in rows]) for key in ("oracle_single", "oracle_greedy")}
    lines += [
        "",
        f"Chosen on each test set, the best single template adds {gain['oracle_single']:+.1f} points to the "
        f"plain template's mean and a greedy ensemble {gain['oracle_greedy']:+.1f}: a template choice made "
        "without labelled data can do no better than these here.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=NAMES)
    a = ap.parse_args()
    run_per_dataset(a.datasets, evaluate, "eval.zeroshot_templates", "text_zeroshot_templates", markdown, pool=POOL)


if __name__ == "__main__":
    main()
