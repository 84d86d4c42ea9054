"""Development sweep: train every layer of the body, or only the top ones, in the shipped fit.

    python -m eval.tune_layers                               # the development group, N=8, seeds 0-1
    python -m eval.tune_layers --datasets sst2 --seeds 1 --variants all:5e-5 top3:1e-4

Each row is ``FewShotClassifier(head="auto", tune={...})`` fitted on a seeded support set of a development
dataset (``eval.tune_dev.DEV_DATASETS``; the report group of ``eval/run_tuning.py`` is never read here) and
scored on its capped test split, with the wall time of the fit. A variant is ``all:LR`` (every layer,
learning rate LR) or ``topK:LR`` (the top K layers; the ones below frozen and run once per text). The rest
of the schedule is ``tune="auto"``'s, but for the steps: those of ``AUTO_EPOCHS`` (5) passes over the examples,
or P times as many with ``:xP`` after a variant. Rows are appended
to ``eval/results/tune_layers.jsonl`` as they are measured, and a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from eval.peers import scores
from eval.run_text import RESULTS, machine
from eval.tune_dev import dev_encoder, dev_support_sets
from fewshot import FewShotClassifier
from fewshot.tuning import AUTO_EPOCHS, pass_steps

OUT = RESULTS / "tune_layers.jsonl"


def parse_variant(text: str, n_examples: int) -> dict:
    """``all:LR`` / ``topK:LR``, optionally ``:xP`` for P times the steps of ``AUTO_EPOCHS`` passes over the
    examples (the schedule's floor and ceiling of steps applied first); without it, those steps."""
    which, lr, *more = text.split(":")
    layers = None if which == "all" else int(which.removeprefix("top"))
    times = float(more[0].removeprefix("x")) if more else 1.0
    return {"layers": layers, "lr": float(lr), "steps": max(1, round(pass_steps(n_examples, AUTO_EPOCHS)[1] * times))}


def done_keys() -> set[tuple]:
    if not OUT.exists():
        return set()
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["shots"], r["seed"], r["variant"]) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "mr", "subj", "banking77", "20newsgroups"])
    ap.add_argument("--shots", nargs="+", type=int, default=[8])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["all:5e-5", "top3:1e-4", "top2:1e-4", "top2:2e-4"])
    ap.add_argument("--test-cap", type=int, default=1000)
    a = ap.parse_args()
    base = dev_encoder(a.datasets)
    done = done_keys()
    for name, ds, test_idx, shots, seed, texts, labels in dev_support_sets(a.datasets, a.shots, a.seeds, a.test_cap):
        test, yt = [ds.test_texts[i] for i in test_idx], ds.test_labels[test_idx]
        for variant in a.variants:
            if (name, shots, seed, variant) in done:
                continue
            tune = {**parse_variant(variant, len(texts)), "seed": seed}
            load_avg = os.getloadavg()[0]
            t = time.perf_counter()
            clf = FewShotClassifier(base, head="auto", tune=tune, lexical=False).fit(texts, labels)
            fit_s = time.perf_counter() - t
            pred = clf.predict(test)
            codes = np.array([ds.label_names.index(p) for p in pred])
            row = {
                "dataset": name,
                "shots": shots,
                "seed": seed,
                "variant": variant,
                "tuning": {k: v for k, v in clf.tuning_.items() if k != "auto"},
                "head": clf.head_.selection_.get("picked") if hasattr(clf.head_, "selection_") else None,
                "fit_s": round(fit_s, 2),
                "load_average_at_start": round(load_avg, 2),
                "test_size": len(test),
                **scores(yt, codes, len(ds.label_names)),
                "machine": machine(),
            }
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} N={shots} seed {seed} {variant}: {row['accuracy']:.3f} in {fit_s:.1f} s", flush=True)
    summary()


def summary() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["shots"], r["variant"]), []).append(r)
    print("| N | variant | datasets | mean accuracy | fit s (sum of dataset means) |")
    for (shots, variant), rs in sorted(groups.items()):
        by = {}
        for r in rs:
            by.setdefault(r["dataset"], []).append(r)
        acc = np.mean([np.mean([r["accuracy"] for r in v]) for v in by.values()])
        fit = sum(np.mean([r["fit_s"] for r in v]) for v in by.values())
        print(f"| {shots} | {variant} | {', '.join(sorted(by))} | {100 * acc:.1f} | {fit:.0f} |")


if __name__ == "__main__":
    main()
