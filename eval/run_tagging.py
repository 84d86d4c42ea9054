"""Zero-shot tagging with the library's defaults, on label sets it was not tuned on.

    python -m eval.run_tagging            # about 10 minutes cold, under one with the embedding cache warm

Every label set is tagged by ``ZeroShotClassifier(labels).tag(texts)`` with its defaults (MiniLM, the
template ensemble), the shipped path. Each row gives micro-F1 of those tags, of the best single cosine
threshold chosen on the test set itself (an oracle no user has), of the best label alone (top-1), and of the
fixed 0.2 cosine; the mean number of tags an item and the share of items given none ("none of these"),
beside the truth's.

Development sets (the decision rule and its settings were chosen on these, by mean micro-F1;
``python -m eval.tagging_rule`` scores a grid of the settings on every set):
- ag_news+none: 1,500 AG News test articles and 500 movie-review sentences (MR) that fit no news topic;
- ag_news pairs: 1,200 AG News articles and 400 items that join two articles of different topics;
- 20newsgroups: 2,001 test posts, one group each; banking77: 2,002 test queries, one intent each (a stratified
  sample of 2,000, rounded class by class).
AG News and 20 Newsgroups labels carry the one-line descriptions of eval/label_descriptions.json.
Report sets (measured once the rule was fixed):
- goemotions: the 5,427 test comments, 28 labels (27 emotions and neutral), 15% with two or more;
- goemotions-ekman: the same comments, Ekman's 6 emotions; neutral comments should get no tag;
- clinc150+oos: 1,950 in-scope test queries of 150 intents (13 each) and 500 out-of-scope queries (no tag).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from eval.datasets import load
from eval.run_text import run_per_dataset
from eval.sampling import capped_subsample
from fewshot import TextEncoder, ZeroShotClassifier

HERE = Path(__file__).resolve().parent
DEV = ["ag_news+none", "ag_news pairs", "20newsgroups", "banking77"]
REPORT = ["goemotions", "goemotions-ekman", "clinc150+oos"]
DESCRIPTIONS = json.loads((HERE / "label_descriptions.json").read_text())


def _onehot(codes: np.ndarray, n_labels: int) -> np.ndarray:
    Y = np.zeros((len(codes), n_labels), dtype=np.int8)
    Y[np.arange(len(codes)), codes] = 1
    return Y


def _ekman(root_test: Path) -> tuple[list[str], np.ndarray, list[str]]:
    names = [x.strip() for x in (root_test / "labels.txt").read_text().splitlines() if x.strip()]
    texts, rows = [], []
    for line in (root_test / "test.tsv").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            text, ids, _ = line.split("\t")
            texts.append(text)
            row = np.zeros(len(names), dtype=np.int8)
            row[[int(i) for i in ids.split(",")]] = 1
            rows.append(row)
    keep = [j for j, n in enumerate(names) if n != "neutral"]
    return texts, np.vstack(rows)[:, keep], [names[j] for j in keep]


def tagging_set(name: str) -> tuple[list[str], np.ndarray, object]:
    """Texts, their true tags as an indicator array (n, n_labels; an all-zero row: none of these), labels."""
    if name in ("ag_news+none", "ag_news pairs"):
        ds = load("ag_news")
        labels = {n: DESCRIPTIONS["ag_news"][n] for n in ds.label_names}
        if name == "ag_news+none":
            ti = capped_subsample(ds.test_labels, 1500)
            mr = load("mr")
            mi = capped_subsample(mr.test_labels, 500, seed=3)
            texts = [ds.test_texts[i] for i in ti] + [mr.test_texts[i] for i in mi]
            return texts, np.vstack([_onehot(ds.test_labels[ti], 4), np.zeros((len(mi), 4), np.int8)]), labels
        ti = capped_subsample(ds.test_labels, 2000, seed=5)
        texts = [ds.test_texts[i] for i in ti[:1200]]
        rows = list(_onehot(ds.test_labels[ti[:1200]], 4))
        for a, b in zip(ti[1200::2], ti[1201::2]):
            texts.append(ds.test_texts[a] + " " + ds.test_texts[b])
            row = np.zeros(4, dtype=np.int8)
            row[[ds.test_labels[a], ds.test_labels[b]]] = 1
            rows.append(row)
        return texts, np.vstack(rows), labels
    if name == "20newsgroups":
        ds = load(name)
        ti = capped_subsample(ds.test_labels, 2000)
        labels = {n: DESCRIPTIONS[name][n] for n in ds.label_names}
        return [ds.test_texts[i] for i in ti], _onehot(ds.test_labels[ti], 20), labels
    if name == "banking77":
        ds = load(name)
        ti = capped_subsample(ds.test_labels, 2000)
        return [ds.test_texts[i] for i in ti], _onehot(ds.test_labels[ti], 77), list(ds.label_names)
    if name == "goemotions":
        ds = load(name)
        return ds.test_texts, ds.test_labels.astype(np.int8), list(ds.label_names)
    if name == "goemotions-ekman":
        from eval.datasets import data_dir

        return _ekman(data_dir() / "goemotions" / "ekman")
    if name == "clinc150+oos":
        ds = load("clinc150")
        ti = capped_subsample(ds.test_labels, 2000)
        oos = ds.extra["oos_test"][:500]
        Y = np.vstack([_onehot(ds.test_labels[ti], 150), np.zeros((len(oos), 150), np.int8)])
        return [ds.test_texts[i] for i in ti] + oos, Y, list(ds.label_names)
    raise KeyError(name)


def _f1(Y: np.ndarray, P: np.ndarray) -> float:
    return float(f1_score(Y, P, average="micro", zero_division=0))


def _row(Y: np.ndarray, P: np.ndarray) -> dict:
    return {
        "micro_f1": _f1(Y, P),
        "tags_per_item": float(P.sum(axis=1).mean()),
        "share_none": float((P.sum(axis=1) == 0).mean()),
    }


def evaluate(name: str, encoder: TextEncoder) -> dict:
    texts, Y, labels = tagging_set(name)
    zs = ZeroShotClassifier(labels, encoder=encoder).fit()
    classes = zs.label_head_.classes_.tolist()  # the labels as given: Y's and label_scores' columns
    P = _tagged(zs.tag(texts), classes, Y)  # the shipped defaults
    S = zs.label_scores(zs.embed(texts))  # the inputs as tag() reads them
    grid = np.quantile(S, np.linspace(0.5, 0.9995, 400))
    oracle_t = max(grid, key=lambda t: _f1(Y, (S >= t).astype(np.int8)))
    top1 = np.zeros_like(Y)
    top1[np.arange(len(S)), S.argmax(axis=1)] = 1
    alone = None
    if zs.expansion_["method"] != "none":  # the same with the label text alone: what the vocabulary's words did
        plain = ZeroShotClassifier(labels, encoder=encoder, expand="none").fit()
        alone = _row(Y, _tagged(plain.tag(texts), classes, Y))
    return {
        "dataset": name,
        "items": len(texts),
        "labels": len(classes),
        "truth_tags_per_item": float(Y.sum(axis=1).mean()),
        "truth_share_none": float((Y.sum(axis=1) == 0).mean()),
        "default": _row(Y, P),
        "oracle_threshold": {**_row(Y, (S >= oracle_t).astype(np.int8)), "threshold": float(oracle_t)},
        "top1": _row(Y, top1),
        "cosine_0.2": _row(Y, (S >= 0.2).astype(np.int8)),
        "label_text_alone": alone,  # expand="none", where the expansion applies
    }


def _tagged(tags: list[list[tuple[str, float]]], classes: list[str], Y: np.ndarray) -> np.ndarray:
    """``tag()``'s answers as a 0/1 matrix in ``Y``'s columns (``classes``)."""
    P = np.zeros_like(Y)
    for i, t in enumerate(tags):
        for label, _ in t:
            P[i, classes.index(label)] = 1
    return P


def markdown(out: dict) -> str:
    lines = [
        "# Zero-shot tagging with the defaults",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. Micro-F1 (%); tags an item; share of items with no tag.",
        "The oracle is the best single cosine threshold chosen on the test set itself.",
        "",
        "| group | label set | items | labels | `tag()` defaults | oracle threshold | top-1 | cosine 0.2 |"
        " tags/item: defaults (truth) | none: defaults (truth) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        group = "dev" if r["dataset"] in DEV else "report"
        d = r["default"]
        lines.append(
            f"| {group} | {r['dataset']} | {r['items']} | {r['labels']} | **{100 * d['micro_f1']:.1f}** | "
            f"{100 * r['oracle_threshold']['micro_f1']:.1f} (at {r['oracle_threshold']['threshold']:.2f}) | "
            f"{100 * r['top1']['micro_f1']:.1f} | {100 * r['cosine_0.2']['micro_f1']:.1f} | "
            f"{d['tags_per_item']:.2f} ({r['truth_tags_per_item']:.2f}) | "
            f"{100 * d['share_none']:.1f}% ({100 * r['truth_share_none']:.1f}%) |"
        )
    alone = [r for r in out["rows"] if r.get("label_text_alone")]
    if alone:
        lines += [
            "",
            'Where the vocabulary\'s words widened the label names (`expand="auto"`), `tag()` with the label '
            'text alone (`expand="none"`): '
            + "; ".join(f"{r['dataset']} {100 * r['label_text_alone']['micro_f1']:.1f}" for r in alone)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=DEV + REPORT)
    a = ap.parse_args()
    run_per_dataset(a.sets, evaluate, "eval.run_tagging", "text_tagging", markdown, dev=DEV, report=REPORT)


if __name__ == "__main__":
    main()
