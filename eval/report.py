"""Write eval/RESULTS.md (and the plots text_shots.png, images_shots.png) from the JSON results in eval/results/.

python -m eval.report
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

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
    test subsample as the table (checked by the test size), so the report takes all that exist.
    """
    from eval.metrics import mean_std

    summary = [s for s in res["summary"] if s["method"] != "SetFit (MiniLM)"]
    sizes = {(s["dataset"], s["shots"]): s.get("test_size") for s in res["runs"]}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in sorted((RESULTS / "setfit").glob("*.json")):
        r = json.loads(path.read_text())
        if r["shots"] in res["shots"] and sizes.get((r["dataset"], r["shots"])) in (None, r["test_size"]):
            groups[(r["dataset"], r["shots"])].append(r)
    for (dataset, shots), rs in sorted(groups.items()):
        row = {"dataset": dataset, "method": "SetFit (MiniLM)", "shots": shots, "runs": len(rs)}
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


def tuning_section(res: dict) -> list[str]:
    """Issue 4's table: training-free adapters and contrastive tuning against SetFit, six datasets, one N."""
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
    lines = [
        f"## Adapters and tuning against SetFit: {body}, N = {n}",
        "",
        f"Accuracy (Matthews correlation for amazon_counterfactual), mean ± std over seeds 0..{res['seeds'] - 1} "
        "(the same support sets for every row, SetFit's included), test sets capped at "
        f"{max(r['test_size'] for r in rows):,} rows (a fixed stratified subsample). "
        f"Fit s = encoding the support set + tuning (tuned rows) + the head. Measured {res['date']} on "
        f"{res['machine']} in {res['wall_s'] / 60:.0f} min. Command: `{res['command']}`.",
        "",
        "| method | " + " | ".join(datasets) + " | mean | fit s, six datasets |",
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

        def versus(m: str, v: tuple[float, float]) -> str:
            return (
                f"**{m}** {_pct(v[0])} against SetFit's {_pct(setfit[0])} ({100 * (v[0] - setfit[0]):+.1f} points), "
                f"fit {v[1]:.0f} s against {setfit[1]:.0f} s (1/{setfit[1] / max(v[1], 1e-9):.1f})"
            )

        for label, group, budget in [("tuned", tuned, 3), ("training-free", free, 50)]:
            if not group:
                continue
            best = max(group, key=lambda m: group[m][0])
            auto = [m for m in group if m.endswith("+ auto") or m == "fewshot auto"]
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
    return lines + ["", *_note(res)]


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
            lines.append("| first probe (issue 5: prototype, 160 px; 5-shot 55) | " + " | ".join(cells) + " |")
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
    for name in ("minilm", "minilm_trained_keys", "mpnet"):
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
