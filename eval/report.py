"""Write eval/RESULTS.md (and the plots text_shots.png, images_shots.png) from the JSON results in eval/results/.

python -m eval.report
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from eval.peers import PUBLISHED_SETFIT_MPNET, SETFIT_DATASETS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PRIMARY = {"amazon_counterfactual": "mcc"}  # as the SetFit paper; accuracy elsewhere


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _note(res: dict) -> list[str]:
    return [f"Note: {res['note']}", ""] if res.get("note") else []


def with_stored_setfit(res: dict) -> list[dict]:
    """The summary, with SetFit's rows rebuilt from every stored per-seed run (eval/results/setfit/).

    SetFit runs finish long after a table is made; each stored run used the same seeded support set and
    test subsample as the table (checked by the test size), so the report takes all that exist for the
    table's datasets and sizes (runs of other datasets belong to the tuning tables).
    """
    from eval.metrics import mean_std

    summary = [s for s in res["summary"] if s["method"] != "SetFit (MiniLM)"]
    sizes = {(s["dataset"], s["shots"]): s.get("test_size") for s in res["runs"]}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in sorted((RESULTS / "setfit").glob("*.json")):
        if "_zeroshot_" in path.name:  # SetFit's templated zero-shot runs belong to another table
            continue
        r = json.loads(path.read_text())
        if (r["dataset"], r["shots"]) in sizes and sizes[(r["dataset"], r["shots"])] in (None, r["test_size"]):
            groups[(r["dataset"], r["shots"])].append(r)
    for (dataset, shots), rs in sorted(groups.items()):
        row = {"dataset": dataset, "method": "SetFit (MiniLM)", "shots": shots, "runs": len(rs)}
        # runs stored before `training_args` was recorded all used the defaults, read here as {}
        row["training_args"] = sorted({json.dumps(r.get("training_args", {}), sort_keys=True) for r in rs})
        for m in ("accuracy", "macro_f1", "mcc", "fit_s", "items_per_s"):
            row[m], row[f"{m}_std"] = mean_std([r[m] for r in rs])
        summary.append(row)
    return summary


def setfit_protocol_section(res: dict) -> list[str]:
    summary = res["summary"] = with_stored_setfit(res)
    by = {(s["dataset"], s["method"], s["shots"]): s for s in summary}
    methods = sorted({s["method"] for s in summary}, key=lambda m: (not m.startswith("fewshot"), m))
    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    lines = [
        "## SetFit protocol",
        "",
        f"N examples per class drawn from train with seeds 0..{res['seeds'] - 1}; test sets capped at "
        f"{res['test_cap']} rows (a fixed seeded stratified subsample when larger). Metric: accuracy, Matthews "
        "correlation for amazon_counterfactual; mean ± std over seeds (runs = seeds that finished). Encoder: "
        f"{res['encoder']}. Measured {res['date']} on {res['machine']}.",
        "",
        f"Command: `{res['command']}`",
        "",
        *_note(res),
    ]
    for shots in res["shots"]:
        lines += [
            f"### N = {shots}",
            "",
            "| method | " + " | ".join(datasets) + " | mean | fit s (mean) | items/s |",
            "|---" * (len(datasets) + 4) + "|",
        ]
        for m in methods:
            cells, vals, fits, rates = [], [], [], []
            for d in datasets:
                s = by.get((d, m, shots))
                if s is None:
                    cells.append("")
                    continue
                metric = PRIMARY.get(d, "accuracy")
                cells.append(f"{_pct(s[metric])} ± {_pct(s[metric + '_std'])} ({s['runs']})")
                vals.append(s[metric])
                fits.append(s["fit_s"])
                rates.append(s["items_per_s"])
            if not vals:
                continue
            mean = _pct(sum(vals) / len(vals)) if len(vals) == len(datasets) else "n/a"
            lines.append(
                f"| {m} | " + " | ".join(cells) + f" | {mean} | {sum(fits) / len(fits):.2f} | "
                f"{sum(rates) / len(rates):.0f} |"
            )
        pub = PUBLISHED_SETFIT_MPNET.get(shots)
        if pub:
            cells = [f"{pub[d]:.1f}" if d in pub else "" for d in datasets]
            lines.append("| SetFit (MPNet), *published, not measured here* | " + " | ".join(cells) + " | | | |")
        lines.append("")
        departed = [
            f"{d} ({', '.join(a for a in s['training_args'] if a != '{}')})"
            for d in datasets
            if (s := by.get((d, "SetFit (MiniLM)", shots))) and s["training_args"] != ["{}"]
        ]
        if departed:
            lines += [
                "SetFit (MiniLM) runs use SetFit's default TrainingArguments except, where its default sampling "
                "(every pair of the support, oversampled) would take more than twice the SetFit paper's 20 "
                "pairs per example, the paper's `num_iterations=20` (eval/peers.py, `setfit_training_args`): "
                + "; ".join(departed)
                + ".",
                "",
            ]
    lines += six_dataset_headline(by, res["shots"])
    return lines


def six_dataset_headline(by: dict, shots_list: list[int]) -> list[str]:
    """Mean over the SetFit paper's six datasets, per method, where every one of them has a result."""
    lines = [
        "### Mean over the SetFit paper's six datasets",
        "",
        "| method | N | mean | fit s (total) |",
        "|---|---|---|---|",
    ]
    methods = sorted({k[1] for k in by})
    for shots in shots_list:
        for m in methods:
            rows = [by.get((d, m, shots)) for d in SETFIT_DATASETS]
            if any(r is None for r in rows):
                continue
            mean = sum(r[PRIMARY.get(r["dataset"], "accuracy")] for r in rows) / len(rows)
            lines.append(f"| {m} | {shots} | {_pct(mean)} | {sum(r['fit_s'] for r in rows):.1f} |")
        pub = PUBLISHED_SETFIT_MPNET.get(shots)
        if pub:
            lines.append(f"| SetFit (MPNet), *published* | {shots} | {sum(pub.values()) / 6:.1f} | |")
    return lines + [""]


def episodic_section(res: dict) -> list[str]:
    lines = [
        "## Episodic: 5-way K-shot, 15 queries a class",
        "",
        f"Episodes drawn from each dataset's test split (seeded); mean accuracy ± 95% CI (1.96·std/√episodes). "
        f"Measured {res['date']} on {res['machine']}. Command: `python -m eval.run_text --protocol episodic`",
        "",
        "| dataset | K | " + " | ".join(sorted({r["method"] for r in res["rows"]})) + " |",
        "|---|---|" + "---|" * len({r["method"] for r in res["rows"]}),
    ]
    grid = defaultdict(dict)
    for r in res["rows"]:
        grid[(r["dataset"], r["shots"])][r["method"]] = f"{_pct(r['accuracy'])} ± {_pct(r['ci95'])}"
    methods = sorted({r["method"] for r in res["rows"]})
    episodes = res["rows"][0]["episodes"] if res["rows"] else 0
    for (d, k), cells in grid.items():
        lines.append(f"| {d} | {k} | " + " | ".join(cells.get(m, "") for m in methods) + " |")
    return lines + ["", f"{episodes} episodes per cell.", "", *_note(res)]


def zeroshot_section(res: dict) -> list[str]:
    methods = sorted({r["method"] for r in res["rows"]})
    lines = [
        "## Zero-shot: label names only",
        "",
        f"Accuracy (Matthews correlation for amazon_counterfactual). Measured {res['date']} on {res['machine']}. "
        "Command: `python -m eval.run_text --protocol zeroshot`",
        "",
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    grid = defaultdict(dict)
    for r in res["rows"]:
        grid[r["dataset"]][r["method"]] = _pct(r[PRIMARY.get(r["dataset"], "accuracy")])
    for d, cells in grid.items():
        lines.append(f"| {d} | " + " | ".join(cells.get(m, "") for m in methods) + " |")
    return lines + ["", *_note(res)]


def zeroshot_techniques_section(res: dict) -> list[str]:
    """Each zero-shot technique on its own, against SetFit's templated zero-shot."""
    targets, dev = res["targets"], res["dev"]
    grid: dict[str, dict[str, float]] = defaultdict(dict)
    for r in res["rows"]:
        grid[r["method"]][r["dataset"]] = r["accuracy"]
    names = targets + dev
    lines = [
        "## Zero-shot techniques, one at a time",
        "",
        f"Accuracy; MiniLM (bundled). Measured {res['date']} on {res['machine']}. Command: `{res['command']}` "
        "(SetFit rows: `python -m eval.peers --zeroshot --seeds 3 --datasets emotion ag_news sst2 banking77`). "
        f"The headline is the mean over {', '.join(targets)}; the other six datasets were used to choose the "
        "self-training recipe (one round, top quarter, centred) before the headline was run. The unlabelled "
        "corpus is 2,000 rows of each dataset's train split with the labels dropped; test rows (2,000 at most, "
        "seeded stratified) are never seen before scoring. Descriptions: `eval/label_descriptions.json`, only "
        'where written. SetFit: `get_templated_dataset` (8 rows a label, "This sentence is {}") + SetFit '
        "training, batch 32, 1 epoch, same body; mean of its stored seeds; banking77 with `num_iterations=20` "
        "(the default pair sampling is 11,704 steps, about 3 hours here).",
        "",
        "| method | " + " | ".join(names) + " | mean (headline) | mean (other six) |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for method, cells in grid.items():
        head = [cells[n] for n in targets if n in cells]
        rest = [cells[n] for n in dev if n in cells]
        lines.append(
            f"| {method} | "
            + " | ".join(_pct(cells[n]) if n in cells else "" for n in names)
            + f" | {_pct(np.mean(head)) if len(head) == len(targets) else ''}"
            + f" | {_pct(np.mean(rest)) if len(rest) == len(dev) else ''} |"
        )
    return lines + ["", *_note(res)]


def zeroshot_calibration_section(res: dict) -> list[str]:
    zd = res["zeroshot_default"]
    lines = [
        "## Calibration: expected calibration error before and after",
        "",
        f"Measured {res['date']} on {res['machine']}. Command: `{res['command']}`. ECE: 15 equal-width bins "
        "of the top probability; lower is better.",
        "",
        f"Zero-shot default temperature: the log-loss optimum on {zd['fitted_on']} is "
        f"T = {zd['temperature']:.4f} (the library's default: {zd['in_code']['ZEROSHOT_TEMPERATURE']}). "
        "A validation split (500 labelled train rows of the dataset) fits a temperature for one dataset "
        "(`fit_calibration`).",
        "",
        "| zero-shot, test split | accuracy | ECE at T=0.05 (the default) | ECE, fitted default | "
        "ECE, T from a validation split (T) |",
        "|---|---|---|---|---|",
    ]
    for r in res["zeroshot"]:
        v = r["validation split (500 rows)"]
        lines.append(
            f"| {r['dataset']} | {_pct(r['accuracy'])} | {r['T=0.05 (the default)']['ece']:.3f} | "
            f"{r['fitted default']['ece']:.3f} | {v['ece']:.3f} ({v['temperature']:.3f}) |"
        )
    keys = ("T=0.05 (the default)", "fitted default", "validation split (500 rows)")
    m = [np.mean([r[k]["ece"] for r in res["zeroshot"]]) for k in keys]
    lines.append(f"| **mean** | | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} |")
    lines += [
        "",
        "Few-shot, 8 examples a class, seeds 0-2: the head's probabilities as they are against the temperature "
        "fitted on held-out scores of the 8-shot support set (the default, `calibrate=True`). Accuracy is "
        "unchanged by construction. Fit seconds: the head alone on cached embeddings, without and with the "
        "calibration (leave-one-out in closed form for prototypes, 5-fold refits for the linear head); "
        "encoding the examples, which both share, is not included. The default pools the prototype head with "
        "the lexical channel: there each channel is put at its held-out temperature before pooling, with or "
        "without `calibrate`, and `calibrate=True` fits one more temperature on the pool.",
        "",
        "| dataset | head | accuracy | ECE uncalibrated | ECE calibrated | fitted T (mean) | fit s without / with |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in res["fewshot"]:
        groups[(r["dataset"], r["head"])].append(r)
    means: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (d, h), rs in groups.items():
        u = float(np.mean([r["uncalibrated"]["ece"] for r in rs]))
        c = float(np.mean([r["calibrated"]["ece"] for r in rs]))
        means[h].append((u, c))
        acc = float(np.mean([r["calibrated"]["accuracy"] for r in rs]))
        t = float(np.mean([r["calibrated"]["temperature"] for r in rs]))
        fs = [np.mean([r[k].get("fit_s_cached", np.nan) for r in rs]) for k in ("uncalibrated", "calibrated")]
        lines.append(f"| {d} | {h} | {_pct(acc)} | {u:.3f} | {c:.3f} | {t:.2f} | {fs[0]:.2f} / {fs[1]:.2f} |")
    for h, pairs in means.items():
        lines.append(
            f"| **mean** | {h} | | {np.mean([p[0] for p in pairs]):.3f} | {np.mean([p[1] for p in pairs]):.3f} | | |"
        )
    return lines + ["", *_note(res)]


def oos_section(res: dict) -> list[str]:
    lines = [
        "## Out-of-scope detection: CLINC150",
        "",
        f"Measured {res['date']} on {res['machine']}. Command: `{res['command']}`. Larson et al. 2019's metrics "
        "on the full test split (4,500 in-scope queries, 1,000 out-of-scope): in-scope accuracy (abstaining on "
        "an in-scope query counts as an error) and out-of-scope recall. Support: N examples of each of the 150 "
        'intents from train, seeds 0-2 (mean). Thresholds: from the support set alone (`abstain="auto"`: '
        "5% quantile of held-out true-class scores), or from the validation split (3,000 in-scope + 100 "
        "out-of-scope rows; the threshold with the best validation accuracy, `fit_calibration`), or for "
        "zero-shot from an unlabelled corpus (2,000 train queries + 20 out-of-scope ones).",
        "",
        "| N | method | in-scope accuracy | out-of-scope recall |",
        "|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in res["rows"]:
        groups[(r["shots"], r["method"])].append(r)
    for (n, m), rs in groups.items():
        acc = np.mean([r["in_scope_accuracy"] for r in rs])
        rec = np.mean([r["oos_recall"] for r in rs])
        lines.append(f"| {n or 'zero-shot'} | {m} | {_pct(acc)} | {_pct(rec)} |")
    return lines + ["", *_note(res)]


def multilabel_section(res: dict) -> list[str]:
    lines = [
        "## Multi-label tagging: GoEmotions",
        "",
        f"Measured {res['date']} on {res['machine']}. Command: `{res['command']}`. Test split (5,427 comments, "
        "28 labels incl. neutral). mAP: mean over labels of average precision (threshold-free). Zero-shot "
        "thresholds: a fixed 0.2 cosine and the best micro-F1 threshold on the validation "
        "split. Few-shot: 8 train comments of each label (seeds 0-2, mean), one prototype per label, threshold "
        "with the best micro-F1 on leave-one-out scores of the support set.",
        "",
        "| method | mAP | micro-F1 | macro-F1 | threshold | tags an item | items with no tag |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in res["rows"]:
        groups[r["method"]].append(r)
    for m, rs in groups.items():

        def avg(k: str, rs: list[dict] = rs) -> float | None:
            v = [r[k] for r in rs if r.get(k) is not None]
            return float(np.mean(v)) if v else None

        ap, thr = avg("mAP"), avg("threshold")
        lines.append(
            f"| {m} | {'' if ap is None else _pct(ap)} | {_pct(avg('micro_f1'))} | {_pct(avg('macro_f1'))} | "
            f"{'' if thr is None or thr < -0.5 else f'{thr:.3f}'} | {avg('mean_tags_per_item'):.2f} | "
            f"{_pct(avg('share_with_no_tag'))} |"
        )
    return lines + ["", *_note(res)]


def projected_setfit(n: int) -> dict[str, float]:
    """SetFit's fit seconds per dataset at N = ``n`` projected from short fits timed on a quiet machine
    (``python -m eval.peers --timing``); every seed's support set has the same size, hence the same steps."""
    timing = _load("setfit_timing.json") or []
    return {t["dataset"]: t["projected_fit_s"] for t in timing if t["shots"] == n}


def _refreshed(res: dict) -> str:
    """What a results file refreshed by ``eval.refresh_accuracy`` says of where its numbers come from."""
    r = res.get("refreshed")
    if not r:
        return ""
    return (
        f" Results re-measured after a change ({r['why']}) with `{r['results_from']}`: "
        f"{len(r['changed_rows'])} of the {len(res['rows'])} rows came out otherwise (`changed_rows` in the "
        "file). Fit times are those of the quiet run, the change altering a choice a fit makes, not its work "
        "(`python -m eval.refresh_accuracy`)."
    )


def tuning_section(res: dict) -> list[str]:
    """Training-free adapters and contrastive tuning against SetFit, one group of datasets, one N."""
    import numpy as np

    rows, n = res["rows"], res["shots"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell: dict[tuple[str, str], tuple[float, float, float, int]] = {}
    for m in methods:
        for d in datasets:
            rs = [r for r in rows if r["method"] == m and r["dataset"] == d]
            if rs:
                vals = [r[PRIMARY.get(d, "accuracy")] for r in rs]
                cell[(m, d)] = (
                    float(np.mean(vals)),
                    float(np.std(vals)),
                    float(np.mean([r["fit_s"] for r in rs])),
                    len(rs),
                )
    body = "MiniLM (all-MiniLM-L6-v2)" if res["body"] == "minilm" else "MPNet (all-mpnet-base-v2)"
    given = res.get("tune_settings")
    lines = [
        f"## Adapters and tuning against SetFit: {body}, N = {n}"
        + (f", tuned with {json.dumps(given)} given to the schedule" if given else "")
        + (" (development group)" if res.get("group") == "dev" else ""),
        "",
        f"Accuracy (Matthews correlation for amazon_counterfactual), mean ± std over seeds "
        f"{', '.join(str(v) for v in sorted({r['seed'] for r in rows}))} "
        "(the same support sets for every row, SetFit's included), test sets capped at "
        f"{max(r['test_size'] for r in rows):,} rows (a fixed stratified subsample). "
        f"Fit s = encoding the support set + tuning (tuned rows) + the head. Measured {res['date']} on "
        f"{res['machine']} in {res['wall_s'] / 60:.0f} min. Command: `{res['command']}`." + _refreshed(res),
        "",
        "| method | " + " | ".join(datasets) + f" | mean | fit s, {len(datasets)} datasets |",
        "|---|" + "---|" * (len(datasets) + 2),
    ]
    means = {}
    for m in methods:
        cells = [cell.get((m, d)) for d in datasets]
        if any(c is None for c in cells):
            continue
        means[m] = (float(np.mean([c[0] for c in cells])), float(sum(c[2] for c in cells)))
        lines.append(
            f"| {m} | "
            + " | ".join(f"{_pct(c[0])} ± {_pct(c[1])}" for c in cells)
            + f" | {_pct(means[m][0])} | {means[m][1]:.0f} |"
        )
    if res["body"] == "mpnet":
        pub = PUBLISHED_SETFIT_MPNET.get(n, {})
        if pub:
            lines.append(
                "| SetFit (MPNet), *published, not measured here* | "
                + " | ".join(f"{pub.get(d, '')}" for d in datasets)
                + f" | {np.mean([pub[d] for d in datasets if d in pub]):.1f} | |"
            )
    setfit = means.get("SetFit (MiniLM)")
    if setfit:
        tuned = {m: v for m, v in means.items() if m.startswith("fewshot tuned")}
        free = {m: v for m, v in means.items() if m.startswith("fewshot") and m not in tuned}
        lines.append("")

        projected = projected_setfit(n)
        # the fit column is a sum over the datasets of each one's mean over seeds: one support set of each
        quiet = sum(projected[d] for d in datasets) if set(datasets) <= set(projected) else None

        def versus(m: str, v: tuple[float, float]) -> str:
            line = (
                f"**{m}** {_pct(v[0])} against SetFit's {_pct(setfit[0])} ({100 * (v[0] - setfit[0]):+.1f} points), "
                f"fit {v[1]:.0f} s against {setfit[1]:.0f} s (1/{setfit[1] / max(v[1], 1e-9):.1f})"
            )
            if quiet is not None:
                line += f"; against SetFit's projected quiet time, {quiet:.0f} s, 1/{quiet / max(v[1], 1e-9):.1f}"
            return line

        for label, group, budget in [("tuned", tuned, 3), ("training-free", free, 50)]:
            if not group:
                continue
            best = max(group, key=lambda m: group[m][0])
            # the row a user gets from the support alone: `auto` with the lexical channel (the default) where
            # the run measured it, else `auto` alone
            auto = [m for m in group if m.endswith("+ auto + lexical") or m == "fewshot auto + lexical"]
            auto = auto or [m for m in group if m.endswith("+ auto") or m == "fewshot auto"]
            line = (
                f"- {label.capitalize()} (fit-time target 1/{budget} of SetFit's): best row {versus(best, group[best])}"
            )
            if auto and auto[0] != best:
                line += f"; the row chosen from the support alone, {versus(auto[0], group[auto[0]])}"
            lines.append(line + ".")
        lines.append(
            "- A best row is picked after seeing the test scores; `auto` picks its head by cross-validation "
            "on each support set, which a user can do."
        )
    # the shipped fit: with the lexical channel (the default) where the run measured it, else its head alone
    shipped = next((m for m in methods if m.endswith("tuned (auto schedule) + auto + lexical")), None)
    shipped = shipped or next((m for m in methods if m.endswith("tuned (auto schedule) + auto")), None)
    if shipped and setfit:
        lines += ["", *per_seed_lines(rows, shipped, datasets, projected_setfit(n))]
    return lines + ["", *_note(res)]


def tune_dev_section(path: Path) -> list[str]:
    """The development sweep ``tune="auto"`` was chosen on: accuracy after each number of passes."""
    points = {}  # a curve stopped and run again repeats its first points: the latest of each counts
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            points[(r["dataset"], r["shots"], r["seed"], r["lr"], r["batch_size"], r["max_seq"], r["epochs"])] = r
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in points.values():
        groups[(r["dataset"], r["shots"], r["lr"], r["epochs"])].append(r)
    lines = [
        "## Choosing the tuning schedule (development group)",
        "",
        "`python -m eval.tune_dev` on development datasets only (sst2, subj, banking77, mr, clinc150, "
        "20newsgroups; the six datasets of the tables above and below are the report group, never read by the "
        "sweep). One tune per support set, scored after each number of passes over the examples (0 = the frozen "
        "body), test sets capped at 1,000 rows; accuracy of the linear and prototype heads refitted on the tuned "
        "body, mean over the seeds run. The sweep ran beside other jobs, so its seconds are not comparable.",
        "",
        "| dataset | N | lr | passes | steps | seeds | prototype | linear | cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (d, n, lr, e), rs in sorted(groups.items()):
        mean = {k: _pct(float(np.mean([r[f"acc_{k}"] for r in rs]))) for k in ("prototype", "linear", "cache")}
        lines.append(
            f"| {d} | {n} | {lr:g} | {e} | {rs[0]['steps']} | {len(rs)} | {mean['prototype']} | {mean['linear']} | "
            f"{mean['cache']} |"
        )
    return lines + [""]


def _every_layer_at_8(rows: list[dict]) -> list[str]:
    """Every layer (``all:5e-5``) against the top two (``top2:1e-4``) at 8 a class, on the seeds both ran."""
    import numpy as np

    runs: dict[tuple, dict[int, float]] = defaultdict(dict)
    classes: dict[str, int] = {}
    for r in rows:
        if r["shots"] == 8 and r["variant"] in ("all:5e-5", "top2:1e-4"):
            runs[(r["dataset"], r["variant"])][r["seed"]] = 100 * r["accuracy"]
            classes[r["dataset"]] = r["tuning"]["classes"]
    diffs = {}
    for d in sorted(classes):
        seeds = sorted(set(runs[(d, "all:5e-5")]) & set(runs[(d, "top2:1e-4")]))
        if seeds:
            diffs[d] = float(np.mean([runs[(d, "all:5e-5")][s] - runs[(d, "top2:1e-4")][s] for s in seeds]))
    if not diffs:
        return []
    many = [v for d, v in diffs.items() if classes[d] > 2]
    cells = ", ".join(f"{d} {v:+.2f}" for d, v in sorted(diffs.items(), key=lambda kv: -kv[1]))
    return [
        f"Every layer (`all:5e-5`) against the top two (`top2:1e-4`) at 8 a class, on the seeds both ran: {cells}; "
        f"{np.mean(list(diffs.values())):+.2f} on the mean of the {len(diffs)} datasets, {np.mean(many):+.2f} on "
        f'the {len(many)} with three classes or more. `tune="auto"` trains every layer for three classes or '
        "more at any size; two classes below 16 a class keep the top third, where SetFit's whole fit is about 10 s "
        "and every layer takes twice the top two's time."
    ]


def tune_layers_section(path: Path) -> list[str]:
    """The development sweep behind how many layers ``tune="auto"`` trains: accuracy and fit time."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["shots"], r["dataset"], r["variant"])].append(r)
    lines = [
        "## Training every layer or the top ones (development group)",
        "",
        "`python -m eval.tune_layers` (and `--shots 16 32 --datasets sst2 mr`, `--shots 64 --datasets sst2 mr`, "
        "`--shots 64 --seeds 3 --datasets goemotions_ekman --variants all:5e-5 all:5e-5:x3`, `--shots 8 --seeds 3 "
        "--datasets goemotions_ekman sst2 mr subj --variants top2:1e-4 top2:1e-4:x2 top2:1e-4:x3`, `--shots 8 "
        "--seeds 3 --datasets goemotions_ekman sst2 mr subj goemotions_group --variants top2:1e-4 top2:1e-4:x0.5 "
        "top2:5e-5`, `--shots 16 32 64 --seeds 3 --datasets goemotions_group --variants all:5e-5 all:5e-5:x3`, "
        "`--shots 8 --seeds 3 --datasets goemotions_ekman goemotions_group --variants all:5e-5 all:5e-5:x3 "
        "top2:1e-4:x3`, `--seeds 3 --test-cap 2000 --datasets clinc150 --variants all:5e-5 top2:1e-4`) "
        "on development datasets only (`goemotions_ekman`, `goemotions_group`: the GoEmotions comments with exactly "
        "one of its seven Ekman labels, of its four sentiment groups). Each row: "
        '`FewShotClassifier(head="auto", tune={...})`, the rest of '
        'the schedule `tune="auto"`\'s, fitted on seeded support sets and scored on the test split capped at '
        "1,000 rows (CLINC150's 150 intents: 2,000); mean over the seeds run. `all` trains every layer of "
        "MiniLM; `topK` the top K of its six, the layers below frozen and run once per text; the steps are those "
        "of 5 passes over the examples, and `xP` runs P times as many (`x0.5` half). Fit seconds: wall time of "
        "`fit` (the tune, its two cross-fitted halves, the head), one job on the machine, except the N = 8 `x2` "
        "and `x3` rows of SST-2, MR and SUBJ and the CLINC150 rows, which ran beside another job (their seconds "
        "are not comparable). Among the top-two variants at 8 a class `top2:1e-4` is the best of its neighbours: "
        "on GoEmotions (both), SST-2, MR and SUBJ it averages 57.6 against 56.9 with half its steps and 57.3 at "
        "half "
        "its rate; without GoEmotions' groups, 62.0 against 61.5 with twice and 61.1 with three times its steps.",
        "",
        *_every_layer_at_8(rows),
        "",
        "| N | dataset | variant | seeds | accuracy | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for (n, d, v), rs in sorted(groups.items()):
        acc = _pct(float(np.mean([r["accuracy"] for r in rs])))
        lines.append(f"| {n} | {d} | {v} | {len(rs)} | {acc} | {np.mean([r['fit_s'] for r in rs]):.1f} |")
    return lines + [""]


def select_dev_section(path: Path) -> list[str]:
    """The development sweep behind how ``head="auto"`` chooses on a tuned body: each rule's accuracy."""
    from eval.select_dev import pick

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        "## Choosing a head on a tuned body (development group)",
        "",
        "`python -m eval.select_dev` (and `--shots 64 --datasets sst2 mr subj --seeds 2`) on development datasets "
        'only. Each support set is fitted once with `FewShotClassifier(head="auto", tune="auto")`; the row keeps '
        "every candidate head's accuracy on the two cross-fitted halves (what the choice sees) and on the test "
        "split capped at 1,000 rows, each candidate refitted on the tuned body as `fit` fits it. A rule is then "
        "scored by the test accuracy of the candidate it picks: `best` takes the best held-out accuracy (the "
        "earliest candidate on ties), `NAME+1se` keeps NAME unless another beats it by more than one standard "
        "error of the difference (`cache+1se` ships), a name alone always takes that head. Mean over the seeds, "
        "then over the datasets.",
        "",
    ]
    for shots in sorted({r["shots"] for r in rows}):
        rs = [r for r in rows if r["shots"] == shots]
        datasets = sorted({r["dataset"] for r in rs})
        seeds = {d: sum(r["dataset"] == d for r in rs) for d in datasets}
        lines += [
            f"N = {shots} ({', '.join(f'{d}: {seeds[d]} seeds' for d in datasets)})",
            "",
            "| rule | mean | " + " | ".join(datasets) + " |",
            "|---" * (len(datasets) + 2) + "|",
        ]
        for rule in ["best", "cache+1se", "linear+1se", *rs[0]["test"]]:
            per = [float(np.mean([r["test"][pick(r, rule)] for r in rs if r["dataset"] == d])) for d in datasets]
            lines.append(f"| {rule} | {_pct(float(np.mean(per)))} | " + " | ".join(_pct(v) for v in per) + " |")
        lines.append("")
    return lines


def lexical_dev_section(path: Path) -> list[str]:
    """The development sweep of the lexical channel: accuracy with it and without, frozen and tuned."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        "## The lexical channel (development group)",
        "",
        "`python -m eval.lexical_dev` (N = 8), and at N = 64 `--shots 64 --datasets sst2 mr subj --seeds 2` "
        "and `--shots 64 --datasets banking77 20newsgroups clinc150 --seeds 2 --bodies frozen` (a tuned fit "
        "of these at 64 a class takes the better part of an hour here); the default head: `--heads prototype "
        "--bodies frozen --shots 8 64 --datasets sst2 subj banking77 mr clinc150 20newsgroups`. Development "
        'datasets only. Each support set is fitted once with `FewShotClassifier(head=..., lexical="auto")` on '
        'the frozen body and (`head="auto"`) with `tune="auto"`; the channel changes nothing else in a fit, so '
        "the head alone (off) and the classifier (on) are scored from the same fit, on the test split capped "
        "at 1,000 rows. Accuracy %, mean over the seeds; the last column gives the lexical weight picked on "
        "each support set (0: the head alone). These fits keep any weight that wins by one held-out example "
        "or more; the next section checks the margin the library uses.",
        "",
    ]
    for shots in sorted({r["shots"] for r in rows}):
        lines += [
            f"N = {shots}",
            "",
            "| dataset | head | body | seeds | off | on | change | weights picked |",
            "|---" * 8 + "|",
        ]
        changes = {}
        for name in sorted({r["dataset"] for r in rows if r["shots"] == shots}):
            for head, body in (("auto", "frozen"), ("auto", "tuned"), ("prototype", "frozen")):
                rs = [
                    r
                    for r in rows
                    if r["shots"] == shots
                    and r["dataset"] == name
                    and r["body"] == body
                    and r.get("head_param", "auto") == head
                ]
                if not rs:
                    continue
                off, on = float(np.mean([r["off"] for r in rs])), float(np.mean([r["on"] for r in rs]))
                changes.setdefault((head, body), []).append(on - off)
                picked = ", ".join(str(r["lexical"].get("picked", 0.0)) for r in rs)
                lines.append(
                    f"| {name} | {head} | {body} | {len(rs)} | {_pct(off)} | {_pct(on)} | {100 * (on - off):+.1f} "
                    f"| {picked} |"
                )
        for (head, body), ch in changes.items():
            lines.append(f"| mean over datasets | {head} | {body} | | | | {100 * float(np.mean(ch)):+.2f} | |")
        lines.append("")
    return lines


def lexical_rule_section(path: Path) -> list[str]:
    """The margin the lexical channel's weight must win by, checked on the development sweep's fits."""
    from eval.lexical_rule import table
    from fewshot.lexical import MIN_GAIN

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        "## The lexical channel's margin (development group)",
        "",
        "`python -m eval.lexical_rule`, on the fits of the table above. The weight with the best held-out "
        "accuracy is kept only if it gets at least `margin` more held-out examples right than the head alone "
        f"(`fewshot.lexical.MIN_GAIN`, {MIN_GAIN}); margin 1 is any win, what those fits picked. A margin keeps that "
        "weight or falls back to the head alone, so each margin's test accuracy follows from the row. Change "
        "over the head alone, points: the mean over datasets (each the mean of its seeds) and the worst "
        "dataset's.",
        "",
        "```",
        *table(rows, (1, 2, 3)),
        "```",
        "",
    ]


def lexical_grid_section(path: Path) -> list[str]:
    """The development sweep of the weights the lexical channel may choose from."""
    from eval.lexical_grid import GRIDS

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        "## The lexical channel's weights (development group)",
        "",
        "`python -m eval.lexical_grid` on development datasets only: each support set fitted once on the "
        'frozen body with `lexical="auto"`; each set of weights then picks its weight on the same held-out '
        "scores, as the library does, and is scored on the test split (capped at 1,000 rows). Change in "
        "accuracy points over the head alone, mean over datasets (each the mean over its seeds), and the worst "
        "dataset.",
        "",
        "| head | N | support sets | " + " | ".join(f"weights {g}" for g in GRIDS) + " |",
        "|---" * (3 + len(GRIDS)) + "|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["head_param"], r["body"], r["shots"]), []).append(r)
    for (head, body, shots), rs in sorted(groups.items()):
        names = sorted({r["dataset"] for r in rs})
        cells = []
        for grid in GRIDS:
            per = [np.mean([r[grid]["accuracy"] - r["off"] for r in rs if r["dataset"] == d]) for d in names]
            cells.append(f"{100 * np.mean(per):+.2f} (worst {100 * min(per):+.1f})")
        lines.append(f"| {head} ({body}) | {shots} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def per_seed_lines(rows: list[dict], shipped: str, datasets: list[str], projected: dict[str, float]) -> list[str]:
    """The shipped configuration against SetFit on every support set: score, fit time, what auto chose."""
    lines = [
        f'Per support set, `{shipped.removeprefix("fewshot ")}` (the shipped `FewShotClassifier(head="auto", '
        'tune="auto")`) against SetFit: score, fit seconds, the head `auto` picked, the lexical weight picked '
        "(blank: the channel off), the tuning steps, and the load average when our fit started. SetFit's fit "
        "seconds: as stored with its runs (timed under whatever else ran then), and projected for a quiet "
        "machine from two short fits of the same support set "
        "(`python -m eval.peers --timing`, seed 0's support set; every seed's has the same size and steps); the "
        "ratio uses the projection where there is one.",
        "",
        "| dataset | seed | ours | SetFit | ours fit s | SetFit fit s, stored | projected | ours / SetFit time "
        "| head picked | lexical weight | steps | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    wins = 0
    for d in datasets:
        metric = PRIMARY.get(d, "accuracy")
        for r in sorted((r for r in rows if r["dataset"] == d and r["method"] == shipped), key=lambda r: r["seed"]):
            sf = next(
                (x for x in rows if x["dataset"] == d and x["seed"] == r["seed"] and x["method"] == "SetFit (MiniLM)"),
                None,
            )
            if sf is None:
                continue
            wins += r[metric] >= sf[metric]
            quiet = projected.get(d)
            lines.append(
                f"| {d} | {r['seed']} | {_pct(r[metric])} | {_pct(sf[metric])} | "
                f"{r['fit_s']:.0f} | {sf['fit_s']:.0f} | {'' if quiet is None else f'{quiet:.0f}'} | "
                f"{r['fit_s'] / (quiet or sf['fit_s']):.2f} | {r.get('auto_choice', '')} | "
                f"{(r.get('lexical_selection') or {}).get('picked', '')} | "
                f"{(r.get('tuning') or {}).get('steps', '')} | {r.get('load_average_at_start', '')} |"
            )
    n = sum(1 for r in rows if r["method"] == shipped)
    return lines + ["", f"Ours at least SetFit's score on {wins} of {n} support sets."]


def images_section(res: dict) -> list[str]:
    """Few-shot and zero-shot image tables (eval/run_images.py), one per dataset and image size."""
    import numpy as np

    rows = [r for r in res["rows"] if r["method"] != "_encoding"]
    rate = {(r["dataset"], r["image_size"]): r["images_per_s"] for r in res["rows"] if r["method"] == "_encoding"}
    shots = sorted({r["shots"] for r in rows if r["shots"] > 0})
    lines = [
        "## Images: few-shot and zero-shot (bundled MobileNetV2)",
        "",
        f"Accuracy %, mean ± std over {res['seeds']} seeds (support sets drawn from the train pool with the same "
        f"seeds for every method). Measured {res['date']} on {res['machine']} in {res['wall_s'] / 60:.0f} min. "
        f'Command: `{res["command"]}`. Zero-shot: the label names in "a photo of a {{}}." (CamelCase split '
        "into words), ConSE with MiniLM; the cache adapter's prior is the class-space ConSE score.",
        "",
    ]
    for dataset, size in dict.fromkeys((r["dataset"], r["image_size"]) for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset and r["image_size"] == size]
        lines += [
            f"**{dataset}, {size} px** ({sub[0]['test_size']} test images; encoding "
            f"{rate.get((dataset, size), float('nan')):.0f} images/s on the CPU, features and class scores in "
            "one pass)",
            "",
            "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
            "|---|" + "---|" * len(shots),
        ]
        for m in dict.fromkeys(r["method"] for r in sub if r["shots"] > 0):
            cells = []
            for k in shots:
                acc = [r["accuracy"] for r in sub if r["method"] == m and r["shots"] == k]
                cells.append(f"{100 * np.mean(acc[0]):.1f} ± {100 * np.std(acc[0]):.1f}" if acc else "")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        probe = res.get("probe", {}).get(dataset)
        if probe:
            cells = [f"{100 * probe[str(k)]:.0f}" if str(k) in probe else "" for k in shots]
            lines.append("| first probe (prototype, 160 px; 5-shot 55) | " + " | ".join(cells) + " |")
        for r in sub:
            if r["shots"] == 0:
                lines.append(
                    f"| {r['method']} | {100 * r['accuracy'][0]:.1f} (no examples) |" + " |" * (len(shots) - 1)
                )
        lines.append("")
    return lines + _note(res)


def plot_images(res: dict, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["method"] != "_encoding"]
    panels = list(dict.fromkeys((r["dataset"], r["image_size"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["shots"] > 0))
    for ax, (d, size) in zip(axes.ravel(), panels):
        for i, m in enumerate(methods):
            pts = sorted(
                (r["shots"], 100 * np.mean(r["accuracy"]))
                for r in rows
                if r["dataset"] == d and r["image_size"] == size and r["method"] == m and r["shots"] > 0
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}", label=m)
        for r in rows:
            if r["dataset"] == d and r["image_size"] == size and r["method"].startswith("zero-shot ConSE (classes"):
                ax.axhline(100 * r["accuracy"][0], color="grey", ls="--", lw=1, label="zero-shot ConSE")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{d}, {size} px")
        ax.set_xlabel("examples per class")
        ax.set_ylabel("accuracy %")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=90)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(s["dataset"] for s in res["summary"]))
    cols = 4
    rows = (len(datasets) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    methods = sorted({s["method"] for s in res["summary"]})
    colour = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour per method in every panel
    for ax, d in zip(axes.ravel(), datasets):
        metric = PRIMARY.get(d, "accuracy")
        for m in methods:
            pts = sorted((s["shots"], s[metric]) for s in res["summary"] if s["dataset"] == d and s["method"] == m)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=m, color=colour[m])
        ax.set_xscale("log", base=2)
        ax.set_title(d)
        ax.set_xlabel("examples per class")
        ax.set_ylabel("MCC" if metric == "mcc" else "accuracy %")
    for ax in axes.ravel()[len(datasets) :]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[m], marker="o") for m in methods]
    labels = methods
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)


def main() -> None:
    lines = [
        "# Results",
        "",
        "Generated by `python -m eval.report` from the JSON files in `eval/results/`. Every number "
        "below was measured on the machine named with it, with the command given; rows marked *published* are "
        "quoted from papers for reference.",
        "",
    ]
    core = RESULTS / "bench_core.md"
    if core.exists():
        lines += [
            "## Core engine",
            "",
            "See [results/bench_core.md](results/bench_core.md) (`python -m eval.bench_core`).",
            "",
        ]
    res = _load("text_setfit_protocol.json")
    if res:
        lines += setfit_protocol_section(res)
        plot(res, RESULTS / "text_shots.png")
        lines += ["![accuracy against shots](results/text_shots.png)", ""]
    ep = _load("text_episodic.json")
    if ep:
        lines += episodic_section(ep)
    zs = _load("text_zeroshot.json")
    if zs:
        lines += zeroshot_section(zs)
    for name, section in (
        ("techniques", zeroshot_techniques_section),
        ("calibration", zeroshot_calibration_section),
        ("oos", oos_section),
        ("multilabel", multilabel_section),
    ):
        part = _load(f"text_zeroshot_{name}.json")
        if part:
            lines += section(part)
    templates = RESULTS / "text_zeroshot_templates.md"
    if templates.exists():  # written by eval.zeroshot_templates; its title becomes a section heading
        lines += ["#" + templates.read_text().strip(), ""]
    if (RESULTS / "tune_dev.jsonl").exists():
        lines += tune_dev_section(RESULTS / "tune_dev.jsonl")
    if (RESULTS / "tune_layers.jsonl").exists():
        lines += tune_layers_section(RESULTS / "tune_layers.jsonl")
    runs = RESULTS / "bench_tune_runs.md"
    if runs.exists():  # written by eval.bench_tune_runs; its title becomes a section heading
        lines += ["#" + runs.read_text().strip(), ""]
    if (RESULTS / "select_dev.jsonl").exists():
        lines += select_dev_section(RESULTS / "select_dev.jsonl")
    if (RESULTS / "lexical_dev.jsonl").exists():
        lines += lexical_dev_section(RESULTS / "lexical_dev.jsonl")
        lines += lexical_rule_section(RESULTS / "lexical_dev.jsonl")
    if (RESULTS / "lexical_grid.jsonl").exists():
        lines += lexical_grid_section(RESULTS / "lexical_grid.jsonl")
    # mpnet: python -m eval.run_tuning --body mpnet --no-tune
    for name in ("minilm", "minilm_n64_lexical", "minilm_dev", "mpnet"):
        tu = _load(f"text_tuning_{name}.json")
        if tu:
            lines += tuning_section(tu)
    im = _load("images.json")
    if im:
        lines += images_section(im)
        plot_images(im, RESULTS / "images_shots.png")
        lines += ["![image accuracy against shots](results/images_shots.png)", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
