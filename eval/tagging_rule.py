"""The settings of ``tag()``'s default decision rule, chosen on the development sets and checked on the others.

    python -m eval.tagging_rule          # seconds with the embedding cache warm, minutes without

``ZeroShotClassifier.tag()`` tags an input with its best label and any label within ``TAG_MARGIN`` of it,
and with none of them when the best label is both no closer than the ordinary sentences the input most
resembles (the mean cosine of its ``TAG_NONE_NEIGHBOURS`` nearest background sentences, plus
``TAG_NONE_DELTA``) and not unusual for that label on ordinary text (its z-score under ``TAG_NONE_Z``). For
each label set of ``eval.run_tagging`` this scores every combination of a grid of those four settings from
one encoding of its texts, as ``tag()`` computes them, and picks the combination with the best mean
micro-F1 over the development sets. It prints that choice, the shipped settings and the best combination of
the report sets (an oracle), each with its micro-F1 on every set, the share of items it leaves untagged and
how many of those truly have no tag; and a paired bootstrap of the development mean's difference between the
choice and the shipped settings (items resampled within each set, 1,000 times).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from datetime import UTC, datetime

import numpy as np

from eval.run_tagging import DEV, REPORT, _row, tagging_set
from eval.run_text import CACHE, RESULTS, machine
from fewshot import TextEncoder, ZeroShotClassifier
from fewshot.classifiers import zero_shot as zs_module
from fewshot.classifiers.background import background_embeddings
from fewshot.classifiers.zero_shot import best_label_z, looks_ordinary

NEIGHBOURS = (1, 3, 5, 10, 20)
DELTAS = tuple(round(d, 2) for d in np.arange(-0.30, 0.101, 0.025))
ZS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, float("inf"))
MARGINS = (0.0, 0.01, 0.02, 0.03)


def shipped() -> tuple:
    return (zs_module.TAG_NONE_NEIGHBOURS, zs_module.TAG_NONE_DELTA, zs_module.TAG_NONE_Z, zs_module.TAG_MARGIN)


def scores(texts: list[str], Y: np.ndarray, labels: object, encoder: TextEncoder) -> dict:
    """What the rule needs of one label set: label scores, the best label's z, the background closeness."""
    zs = ZeroShotClassifier(labels, encoder=encoder).fit()
    E = zs.embed(texts, show_progress=len(texts) > 2000)  # the inputs as tag() reads them
    S = zs.label_head_.class_scores(E)
    top, z = best_label_z(S, zs.background_)
    sims = E @ background_embeddings(encoder, zs.frame_).T
    sims.sort(axis=1)
    near = {k: sims[:, -k:].mean(axis=1) for k in NEIGHBOURS}
    return {"Y": Y, "S": S, "top": top, "z": z, "near": near, "empty": ~E.any(axis=1)}


def decide(d: dict, k: int, delta: float, z_max: float, margin: float) -> np.ndarray:
    keep = d["S"] >= d["top"][:, None] - margin
    none = looks_ordinary(d["top"], d["z"], d["near"][k], delta, z_max)
    keep &= ~none[:, None] & ~d["empty"][:, None]
    return keep.astype(np.int8)


def counts(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per item: true positives, false positives, false negatives (micro-F1 is 2TP / (2TP + FP + FN))."""
    return np.stack([(Y & P).sum(1), ((1 - Y) & P).sum(1), (Y & (1 - P)).sum(1)], axis=1)


def micro_f1(c: np.ndarray) -> float:
    tp, fp, fn = c.sum(0)
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def paired_bootstrap(data: dict, names: list[str], a: tuple, b: tuple, rounds: int = 1000) -> dict:
    """The mean over ``names`` of micro-F1 under setting ``a`` less under ``b``, with a 95% interval from
    resampling the items of each set (the same items for both settings)."""
    rng = np.random.default_rng(0)
    per = {n: (counts(data[n]["Y"], decide(data[n], *a)), counts(data[n]["Y"], decide(data[n], *b))) for n in names}

    diffs = []
    for _ in range(rounds):
        d = []
        for ca, cb in per.values():
            i = rng.integers(0, len(ca), len(ca))
            d.append(micro_f1(ca[i]) - micro_f1(cb[i]))
        diffs.append(np.mean(d))
    point = float(np.mean([micro_f1(ca) - micro_f1(cb) for ca, cb in per.values()]))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"difference": point, "low": float(lo), "high": float(hi)}


def summary(d: dict, P: np.ndarray) -> dict:
    untagged = P.sum(1) == 0
    right = (d["Y"][untagged].sum(1) == 0).mean() if untagged.any() else None
    return {**_row(d["Y"], P), "none_right": None if right is None else float(right)}


def markdown(out: dict) -> str:
    b = out["chosen_less_shipped_dev"]
    n = len(out["grid"]["neighbours"]) * len(out["grid"]["delta"]) * len(out["grid"]["z"]) * len(out["margins"])
    lines = [
        "# The settings of the tagging rule",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. {n} combinations of the number of background"
        f" neighbours {list(out['grid']['neighbours'])}, delta {out['grid']['delta'][0]} to"
        f" {out['grid']['delta'][-1]} by 0.025, z {['inf' if z is None else z for z in out['grid']['z']]} and"
        f" margin {list(out['margins'])}, each scored on every label set of `python -m eval.run_tagging` from one"
        " encoding. Micro-F1 (%), with the share of items left untagged and, of those, the share that truly"
        " have no tag.",
        "",
        "| settings | k | delta | z | margin | development mean | report mean | "
        + " | ".join(out["dev"] + out["report"])
        + " |",
        "|---" * (7 + len(out["dev"]) + len(out["report"])) + "|",
    ]
    for r in out["rows"]:
        cells = []
        for name in out["dev"] + out["report"]:
            s = r["sets"][name]
            right = "" if s["none_right"] is None else f", {100 * s['none_right']:.0f}% right"
            cells.append(f"{100 * s['micro_f1']:.1f} ({100 * s['share_none']:.0f}% none{right})")
        lines.append(
            f"| {r['what']} | {r['neighbours']} | {r['delta']} | {'inf' if r['z'] is None else r['z']} |"
            f" {r['margin']} | {100 * r['dev_mean']:.2f} | {100 * r['report_mean']:.2f} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"Development mean, the choice less the shipped settings: {100 * b['difference']:+.2f} points (95% interval"
        f" {100 * b['low']:+.2f} to {100 * b['high']:+.2f}; paired bootstrap over the items of each set).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    t0 = time.perf_counter()
    encoder = TextEncoder(cache_dir=CACHE)
    data = {name: scores(*tagging_set(name), encoder) for name in DEV + REPORT}
    grid = list(itertools.product(NEIGHBOURS, DELTAS, ZS, MARGINS))
    table = {}
    for setting in grid:
        table[setting] = {name: {"micro_f1": micro_f1(counts(d["Y"], decide(d, *setting)))} for name, d in data.items()}

    def mean(setting: tuple, names: list[str]) -> float:
        return float(np.mean([table[setting][n]["micro_f1"] for n in names]))

    chosen = max(grid, key=lambda s: (round(mean(s, DEV), 6), -s[3], s[1]))  # ties: fewer extra tags, less none
    oracle = max(grid, key=lambda s: mean(s, REPORT))
    rows = []
    for what, setting in (("chosen on development", chosen), ("shipped", shipped()), ("report oracle", oracle)):
        table[setting] = {name: summary(d, decide(d, *setting)) for name, d in data.items()}
        rows.append(
            {
                "what": what,
                "neighbours": setting[0],
                "delta": setting[1],
                "z": setting[2] if np.isfinite(setting[2]) else None,
                "margin": setting[3],
                "dev_mean": mean(setting, DEV),
                "report_mean": mean(setting, REPORT),
                "sets": table[setting],
            }
        )
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": "python -m eval.tagging_rule",
        "grid": {"neighbours": NEIGHBOURS, "delta": DELTAS, "z": [z if np.isfinite(z) else None for z in ZS]},
        "margins": MARGINS,
        "dev": DEV,
        "report": REPORT,
        "seconds": round(time.perf_counter() - t0, 1),
        "chosen_less_shipped_dev": paired_bootstrap(data, DEV, chosen, shipped()),
        "rows": rows,
    }
    (RESULTS / "text_tagging_rule.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "text_tagging_rule.md").write_text(markdown(out))
    for r in rows:
        cells = "  ".join(
            f"{n} {100 * s['micro_f1']:.1f} ({100 * s['share_none']:.0f}% none"
            + (f", {100 * s['none_right']:.0f}% of them right)" if s["none_right"] is not None else ")")
            for n, s in ((n, r["sets"][n]) for n in DEV + REPORT)
        )
        print(
            f"{r['what']}: k={r['neighbours']} delta={r['delta']} z={r['z']} margin={r['margin']}"
            f"  dev {100 * r['dev_mean']:.2f}  report {100 * r['report_mean']:.2f}\n  {cells}"
        )
    b = out["chosen_less_shipped_dev"]
    print(
        f"development mean, chosen less shipped: {100 * b['difference']:+.2f} points"
        f" (95% interval {100 * b['low']:+.2f} to {100 * b['high']:+.2f})"
    )


if __name__ == "__main__":
    main()
