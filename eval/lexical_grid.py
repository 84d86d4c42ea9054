"""Development sweep of the weights the lexical channel may choose from (``fewshot.lexical.WEIGHTS``).

    python -m eval.lexical_grid --bodies frozen --heads auto prototype --shots 8 64 --seeds 3
    python -m eval.lexical_grid --bodies tuned --heads auto --shots 64 --datasets sst2 mr subj --seeds 2

Each support set of a development dataset (``eval.tune_dev.DEV_DATASETS``; the report group is never read
here) is fitted once with ``lexical="auto"``. The fit's held-out log-probabilities of both channels (those
the weight is chosen on: five folds on a frozen body, the cross-fitted halves on a tuned one) are captured,
and both channels score the capped test split (the lexical model refitted on every example, as the
classifier does). Each grid of :data:`GRIDS` then picks its weight on the held-out scores exactly as
:func:`fewshot.lexical.choose` does, keeping any win (``MIN_GAIN`` set to 1, recorded as ``min_gain``: the
margin is checked on its own by ``eval/lexical_rule.py``), and its pool is scored on the test split. Rows
are appended to ``eval/results/lexical_grid.jsonl``; a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

import fewshot.lexical as lexical
from eval.lexical_dev import BODIES, SWEEP_MIN_GAIN, done_keys, sweep
from eval.run_text import RESULTS, machine
from eval.tune_dev import dev_encoder
from fewshot import FewShotClassifier
from fewshot.labels import encode_labels

OUT = RESULTS / "lexical_grid.jsonl"
GRIDS = {
    "0-0.5": (0.0, 0.1, 0.2, 0.3, 0.5),
    "0-0.7": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7),
    "0-0.9": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
}


def captured_fit(clf: FewShotClassifier, texts: list[str], labels: list[str]) -> tuple:
    """Fit ``clf`` and return the held-out (head, lexical) log-probabilities and codes the weight was chosen on."""
    seen = []
    choose = lexical.choose

    def capture(head_logp, lexical_logp, codes, weights=None):
        seen.append((head_logp, lexical_logp, codes))
        return choose(head_logp, lexical_logp, codes, weights)

    lexical.choose = capture
    try:
        clf.fit(texts, labels)
    finally:
        lexical.choose = choose
    if not seen:
        raise RuntimeError(f"no held-out scores to choose on: {clf.lexical_}")
    return seen[0]


def grid_scores(clf, texts, labels, test, yt) -> dict:
    held_head, held_lexical, codes = captured_fit(clf, texts, labels)
    E, kw = clf._head_inputs(test, show_progress=False)
    head_test = clf.head_.log_proba(clf.head_.class_scores(E, **kw))
    model = lexical.LexicalModel().fit(
        texts, encode_labels(np.asarray(labels, dtype=object), clf.head_.classes_), len(clf.head_.classes_)
    )
    lexical_test = model.log_proba(test)
    truth = encode_labels(yt, clf.head_.classes_)
    out = {"off": round(float(np.mean(head_test.argmax(axis=1) == truth)), 4)}
    for name, weights in GRIDS.items():
        w, t_head, t_lexical, record = lexical.choose(held_head, held_lexical, codes, weights)
        pooled = lexical.pool(head_test, lexical_test, w, t_head, t_lexical)
        out[name] = {"picked": w, "accuracy": round(float(np.mean(pooled.argmax(axis=1) == truth)), 4)}
    out["held_out"] = record["weights"]
    return out


def summary() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["head_param"], r["body"], r["shots"])].append(r)
    for (head, body, shots), rs in sorted(groups.items()):
        names = sorted({r["dataset"] for r in rs})
        line = [f"{head} {body} N={shots} ({len(rs)} support sets, {', '.join(names)}):"]
        for grid in GRIDS:
            per = [np.mean([r[grid]["accuracy"] - r["off"] for r in rs if r["dataset"] == d]) for d in names]
            line.append(f"{grid}: {100 * np.mean(per):+.2f} (worst {100 * min(per):+.1f})")
        print("  ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "subj", "banking77", "mr", "clinc150", "20newsgroups"])
    ap.add_argument("--shots", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bodies", nargs="+", choices=list(BODIES), default=["frozen"])
    ap.add_argument("--heads", nargs="+", default=["auto", "prototype"])
    ap.add_argument("--test-cap", type=int, default=1000)
    a = ap.parse_args()
    base = dev_encoder(a.datasets)
    lexical.MIN_GAIN = SWEEP_MIN_GAIN
    for name, shots, seed, body, head, texts, labels, test, yt in sweep(a, done_keys(OUT)):
        clf = FewShotClassifier(base, head=head, tune=BODIES[body], lexical="auto")
        row = {"dataset": name, "shots": shots, "seed": seed, "body": body, "head_param": head}
        row["min_gain"] = SWEEP_MIN_GAIN
        row |= grid_scores(clf, texts, labels, test, yt) | {"test_size": len(test), "machine": machine()}
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, shots, seed, body, head, {g: row[g] for g in GRIDS}, "off", row["off"], flush=True)
    summary()


if __name__ == "__main__":
    main()
