"""Development sweep: how ``head="auto"`` should choose among heads on a tuned body.

    python -m eval.select_dev                                   # N=8 on the development group, seeds 0-2
    python -m eval.select_dev --shots 64 --datasets sst2 mr subj --seeds 2

Each support set of a development dataset (``eval.tune_dev.DEV_DATASETS``; the report group of
``eval/run_tuning.py`` is never read here) is fitted once with the shipped ``FewShotClassifier(head="auto",
tune="auto")``. The row keeps what the choice sees, every candidate's accuracy on the held-out halves of
the cross-fit (``held_out``), and what it cannot see, every candidate's accuracy on the capped test split
(``test``): each candidate is refitted on the tuned body's embeddings of the support set, with the label
prior where it takes one, exactly as the classifier would fit it. ``picked``, ``shipped`` and ``prefer``
are what the classifier did under the rule it had then; the rest does not depend on the rule, so any rule
can be scored offline on these rows (``summary``). Rows are appended to ``eval/results/select_dev.jsonl``
as they are measured, and a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from eval.run_text import RESULTS, machine
from eval.tune_dev import dev_encoder, dev_support_sets
from fewshot import FewShotClassifier
from fewshot.heads.auto import AutoHead, within_one_standard_error
from fewshot.heads.base import describe_head
from fewshot.labels import encode_labels

OUT = RESULTS / "select_dev.jsonl"


def done_keys() -> set[tuple]:
    if not OUT.exists():
        return set()
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["shots"], r["seed"]) for r in rows}


def candidate_accuracies(clf: FewShotClassifier, texts: list[str], labels: list[str], test: list[str], yt) -> dict:
    """Test accuracy of every default candidate refitted on ``clf``'s tuned body, as ``fit`` fits it."""
    E = clf.embed(texts)
    kw = clf._prior_kw(texts, E)
    codes = encode_labels(np.asarray(labels, dtype=object), clf.head_.classes_)  # the head's columns
    Et, kwt = clf._head_inputs(test, show_progress=False)
    truth = encode_labels(np.asarray(yt, dtype=object), clf.head_.classes_)
    out = {}
    for head in AutoHead()._heads():
        fitted = AutoHead._fit_one(head, E, codes, None, kw.get("prior"))
        pred = fitted.predict(Et, **AutoHead._kw(fitted, kwt.get("prior")))
        out[describe_head(head)] = round(float(np.mean(pred == truth)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "mr", "subj", "banking77", "20newsgroups"])
    ap.add_argument("--shots", nargs="+", type=int, default=[8])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-cap", type=int, default=1000)
    a = ap.parse_args()
    base = dev_encoder(a.datasets)
    done = done_keys()
    for name, ds, test_idx, shots, seed, texts, labels in dev_support_sets(a.datasets, a.shots, a.seeds, a.test_cap):
        if (name, shots, seed) in done:
            continue
        test = [ds.test_texts[i] for i in test_idx]
        yt = [ds.label_names[i] for i in ds.test_labels[test_idx]]
        t = time.perf_counter()
        clf = FewShotClassifier(base, head="auto", tune="auto", lexical=False).fit(texts, labels)
        fit_s = time.perf_counter() - t
        row = {
            "dataset": name,
            "shots": shots,
            "seed": seed,
            "tuning": {k: v for k, v in clf.tuning_.items() if k != "auto"},
            "picked": clf.head_.selection_["picked"],
            "prefer": clf.head_.selection_.get("prefer"),  # the rule behind "picked" and "shipped"
            "held_out": clf.head_.selection_["scores"],
            "test": candidate_accuracies(clf, texts, labels, test, yt),
            "shipped": round(float(np.mean(clf.predict(test) == np.asarray(yt, dtype=object))), 4),
            "fit_s": round(fit_s, 2),
            "test_size": len(test),
            "machine": machine(),
        }
        refit = row["test"][row["picked"]]
        if row["shipped"] != refit:  # the refit must be the classifier's own
            raise SystemExit(f"refitted {row['picked']} scores {refit}, the fitted classifier {row['shipped']}")
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} N={shots} seed {seed}: picked {row['picked']}, test {row['test']}", flush=True)
    summary()


def pick(row: dict, rule: str) -> str:
    """The candidate a selection rule picks from a row's held-out accuracies (names in candidate order):
    ``best`` (the best, the earliest on ties), ``NAME+1se`` (NAME unless another beats it by more than one
    standard error, the rule :class:`AutoHead` follows when given ``prefer``), or a candidate's name."""
    held_out = row["held_out"]
    names = list(held_out)
    best = max(names, key=lambda n: (held_out[n], -names.index(n)))
    if rule == "best":
        return best
    if rule.endswith("+1se"):
        prefer = rule.removesuffix("+1se")
        return prefer if within_one_standard_error(held_out, best, prefer, row["tuning"]["examples"])[0] else best
    return rule


def summary() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    for shots in sorted({r["shots"] for r in rows}):
        rs = [r for r in rows if r["shots"] == shots]
        rules = ["best", "cache+1se", "linear+1se", *rs[0]["test"]]
        by: dict[str, list[dict]] = {}
        for r in rs:
            by.setdefault(r["dataset"], []).append(r)
        print(f"N={shots}: " + ", ".join(f"{d} ({len(v)})" for d, v in sorted(by.items())))
        print("| rule | mean | " + " | ".join(sorted(by)) + " |")
        for rule in rules:
            per = {d: 100 * np.mean([r["test"][pick(r, rule)] for r in v]) for d, v in by.items()}
            cells = " | ".join(f"{per[d]:.1f}" for d in sorted(per))
            print(f"| {rule} | {np.mean(list(per.values())):.1f} | {cells} |")


if __name__ == "__main__":
    main()
