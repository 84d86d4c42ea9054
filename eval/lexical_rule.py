"""Development check of the lexical channel's margin (``fewshot.lexical.MIN_GAIN``) on stored fits.

    python -m eval.lexical_rule

The lexical channel's weight is the one with the best held-out accuracy on the support set, kept only if it
gets at least ``MIN_GAIN`` more held-out examples right than the head alone. Every row of
``eval/results/lexical_dev.jsonl`` (the development group; ``python -m eval.lexical_dev``) holds one fit's
held-out accuracy at every weight, the number of held-out examples, and the test accuracy of the head alone
(``off``) and of the pool at the weight picked without a margin (``on``). A margin only ever keeps that
weight or falls back to the head alone, so each margin's test accuracy follows exactly from the row. Prints,
per body, head and N, the mean over datasets of the gain over the head alone (each dataset the mean of its
seeds) and the worst dataset's, for each margin.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from eval.lexical_dev import OUT


def gain(row: dict, margin: int) -> float:
    """The test accuracy gain over the head alone (points) of the channel under a margin of ``margin``
    held-out examples. A row without held-out scores (the channel could not apply) gains nothing."""
    record = row.get("lexical") or {}
    held_out, n = record.get("weights"), record.get("n")
    if not held_out or "0.0" not in held_out:
        return 0.0
    if row.get("min_gain", 1) != 1:
        raise ValueError(f"{row['dataset']} seed {row['seed']}: fitted with a margin of {row['min_gain']}, not 1")
    best = max(held_out, key=lambda w: (held_out[w], -float(w)))  # any win, ties to the smaller weight
    if float(best) != float(record["picked"]):
        raise ValueError(f"{row['dataset']} seed {row['seed']}: picked {record['picked']}, any win picks {best}")
    won = (held_out[best] - held_out["0.0"]) * n
    if n > 5000 and abs(won - margin) < 1.5:  # accuracies kept to 4 decimals: a count exact up to 5,000
        raise ValueError(f"{row['dataset']} seed {row['seed']}: a win of {won:.1f} of {n} is too close to call")
    return 100 * (row["on"] - row["off"]) if best != "0.0" and round(won) >= margin else 0.0


def table(rows: list[dict], margins: tuple[int, ...]) -> list[str]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("lexical") is not None:
            groups[(r["body"], r.get("head_param", "auto"), r["shots"])].append(r)
    lines, overall = [], defaultdict(list)
    for (body, head, shots), rs in sorted(groups.items()):
        names = sorted({r["dataset"] for r in rs})
        parts = [f"{body} {head} N={shots} ({len(rs)} support sets, {len(names)} datasets):"]
        for m in margins:
            per = [np.mean([gain(r, m) for r in rs if r["dataset"] == d]) for d in names]
            overall[m].append(np.mean(per))
            parts.append(f"margin {m}: {np.mean(per):+.2f} (worst {min(per):+.1f})")
        lines.append("  ".join(parts))
    lines.append("mean of the groups:  " + "  ".join(f"margin {m}: {np.mean(v):+.2f}" for m, v in overall.items()))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", nargs="+", type=int, default=[1, 2, 3])
    a = ap.parse_args()
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    print("\n".join(table(rows, tuple(a.margins))))


if __name__ == "__main__":
    main()
