"""Development sweep: does the lexical channel (``FewShotClassifier(lexical="auto")``) help, frozen and tuned?

    python -m eval.lexical_dev                                   # N=8, the development group, seeds 0-2
    python -m eval.lexical_dev --shots 64 --datasets sst2 mr subj --seeds 2
    python -m eval.lexical_dev --heads prototype --bodies frozen --shots 8 64   # the default head

Each support set of a development dataset (``eval.tune_dev.DEV_DATASETS``; the report group of
``eval/run_tuning.py`` is never read here) is fitted with ``lexical="auto"`` and each head asked for
(``--heads``; ``auto`` by default), on the frozen body and with ``tune="auto"``. The channel changes nothing
else in a fit (the tune, the head and its choice are the same with it off), so one fit gives both
accuracies on the capped test split: ``off`` from the head alone, ``on`` from the classifier. The row
keeps the weight picked and every weight's held-out accuracy.
The sweep keeps any weight that wins by one held-out example or more (``fewshot.lexical.MIN_GAIN`` set to 1
while it runs, recorded as ``min_gain``), so that ``python -m eval.lexical_rule`` can derive from its rows what
each margin would do.
Rows are appended to ``eval/results/lexical_dev.jsonl`` as they are measured; a rerun skips what is there.
Fit times are recorded but are only comparable within a run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

import fewshot.lexical as lexical
from eval.run_text import RESULTS, machine
from eval.tune_dev import dev_encoder, dev_support_sets
from fewshot import FewShotClassifier

OUT = RESULTS / "lexical_dev.jsonl"
SWEEP_MIN_GAIN = 1  # any win: every margin's choice follows from such a row
BODIES = {"frozen": False, "tuned": "auto"}


def done_keys(path=OUT) -> set[tuple]:
    """(dataset, N, seed, body, head) of the rows already in ``path``."""
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["shots"], r["seed"], r["body"], r.get("head_param", "auto")) for r in rows}


def sweep(a: argparse.Namespace, done: set[tuple]):
    """Every (support set, body, head) of the sweep ``a`` asks for that is not in ``done``: yields (dataset, N,
    seed, body, head, support texts, support labels, test texts, test labels)."""
    for name, ds, test_idx, shots, seed, texts, labels in dev_support_sets(a.datasets, a.shots, a.seeds, a.test_cap):
        test = [ds.test_texts[i] for i in test_idx]
        yt = np.asarray([ds.label_names[i] for i in ds.test_labels[test_idx]], dtype=object)
        for body, head in ((b, h) for b in a.bodies for h in a.heads):
            if (name, shots, seed, body, head) not in done:
                yield name, shots, seed, body, head, texts, labels, test, yt


def predictions(clf: FewShotClassifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of the fitted head alone and of the classifier (with its lexical channel, if on), from one
    encoding of ``texts``."""
    E, kw = clf._head_inputs(texts, show_progress=False)
    S = clf.head_.class_scores(E, **kw)
    channel = clf.lexical_channel_
    pooled = S if channel is None else channel.pool(clf.head_.log_proba(S), texts)
    classes = clf.head_.classes_  # S's columns
    return classes[S.argmax(axis=1)], classes[pooled.argmax(axis=1)]


def summary() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("head_param", "auto"), r["body"], r["shots"], r["dataset"])].append(r)
    print("head       body  N  dataset         off    on    change  weights picked")
    for (head, body, shots, name), rs in sorted(groups.items()):
        off, on = np.mean([r["off"] for r in rs]), np.mean([r["on"] for r in rs])
        picked = [r["lexical"].get("picked") for r in rs]
        change = f"{100 * off:5.1f} {100 * on:5.1f} {100 * (on - off):+6.1f}"
        print(f"{head:10} {body:6}{shots:3}  {name:14} {change}  {picked}")
    for head, body, shots in sorted({k[:3] for k in groups}):
        sets = [g for k, g in groups.items() if k[:3] == (head, body, shots)]
        change = 100 * np.mean([r["on"] - r["off"] for g in sets for r in g])
        per_set = [np.mean([r["on"] - r["off"] for r in g]) for g in sets]
        print(
            f"{head} {body} N={shots}: mean change {change:+.2f} over {sum(map(len, sets))} support sets; "
            f"worst dataset {100 * min(per_set):+.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "mr", "subj", "banking77", "20newsgroups"])
    ap.add_argument("--shots", nargs="+", type=int, default=[8])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bodies", nargs="+", choices=list(BODIES), default=list(BODIES))
    ap.add_argument("--heads", nargs="+", default=["auto"], help="the head parameters to fit (each its own rows)")
    ap.add_argument("--test-cap", type=int, default=1000)
    a = ap.parse_args()
    base = dev_encoder(a.datasets)
    lexical.MIN_GAIN = SWEEP_MIN_GAIN
    for name, shots, seed, body, head, texts, labels, test, yt in sweep(a, done_keys()):
        t = time.perf_counter()
        clf = FewShotClassifier(base, head=head, tune=BODIES[body], lexical="auto").fit(texts, labels)
        fit_s = time.perf_counter() - t
        off, on = predictions(clf, test)
        row = {
            "dataset": name,
            "shots": shots,
            "seed": seed,
            "body": body,
            "head_param": head,
            "head": clf.head_.selection_["picked"] if head == "auto" else head,
            "lexical": clf.lexical_,
            "min_gain": SWEEP_MIN_GAIN,
            "off": round(float(np.mean(off == yt)), 4),
            "on": round(float(np.mean(on == yt)), 4),
            "fit_s": round(fit_s, 2),
            "test_size": len(test),
            "machine": machine(),
        }
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} N={shots} seed {seed} {body} {head}: off {row['off']} on {row['on']}", flush=True)
    summary()


if __name__ == "__main__":
    main()
