"""How close the int8 model stays to fp32, with and without smoothing the activations first (SmoothQuant).

    python -m eval.bench_int8_recipe          # about 3 minutes on 2 cores

300 seeded test texts from each of four development datasets (banking77: short queries, SST-2, Subj,
20 Newsgroups: long posts) are embedded by the bundled MiniLM's fp32 ONNX export and by int8 models
quantised from it: without smoothing (recipe 1), with smoothing at several strengths ``alpha``
(:data:`fewshot.encoders.onnx.SMOOTH_ALPHA` ships), and with the feed-forward down-projections smoothed as
well (the shipped recipe leaves them alone). Reported: the cosine of each int8 vector to its fp32
one (mean and lowest, per dataset and overall), and how much an int8 vector depends on its batch (the
first 50 texts of each dataset encoded alone against in their batch of 32). Only development datasets are
read: the recipe is chosen here, and its accuracy is reported on others (``eval/bench_encoders.py``).
Results: ``eval/results/int8_recipe.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import fewshot.encoders.onnx as fo
from eval.datasets import load
from eval.tune_dev import DEV_DATASETS
from fewshot import TextEncoder
from fewshot.encoders.derived import read_manifest

DATASETS = ["banking77", "sst2", "subj", "20newsgroups"]
PER_DATASET = 300
ALONE = 50
RESULTS = Path(__file__).parent / "results"


def sample_texts() -> dict[str, list[str]]:
    out = {}
    for name in DATASETS:
        assert name in DEV_DATASETS, f"{name} is not a development dataset"
        ds = load(name)
        pick = np.random.default_rng(0).choice(len(ds.test_texts), PER_DATASET, replace=False)
        out[name] = [ds.test_texts[i] for i in pick]
    return out


def every_product(graph: Any) -> list[Any]:
    """Every MatMul and Attention node with a constant weight, down-projections included."""
    weights = {init.name for init in graph.initializer}
    return [n for n in graph.node if n.op_type in ("MatMul", "Attention") and n.input[1] in weights]


def runtime(folder: Path) -> fo.OnnxTextRuntime:
    return fo.OnnxTextRuntime(folder, read_manifest(folder), threads=2)


def unit(E: np.ndarray) -> np.ndarray:
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def measure(rt: fo.OnnxTextRuntime, texts: dict[str, list[str]], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    row: dict[str, Any] = {"datasets": {}}
    every = []
    for name, tx in texts.items():
        E = unit(rt.encode(tx, batch_size=32))
        cos = (E * ref[name]).sum(axis=1)
        every.append(cos)
        alone = unit(np.vstack([rt.encode([t], batch_size=1) for t in tx[:ALONE]]))
        dep = (alone * E[:ALONE]).sum(axis=1)
        row["datasets"][name] = {
            "mean": float(cos.mean()),
            "min": float(cos.min()),
            "alone_vs_batch_min": float(dep.min()),
        }
    allc = np.concatenate(every)
    row["mean"], row["min"] = float(allc.mean()), float(allc.min())
    row["alone_vs_batch_min"] = min(d["alone_vs_batch_min"] for d in row["datasets"].values())
    return row


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Int8 recipe: cosine to fp32 with and without smoothing",
        "",
        f"Measured {result['date']}. Command: `{result['command']}`. {PER_DATASET} seeded test texts from each of "
        f"{', '.join(DATASETS)} (development datasets), batch 32; 'alone' is the lowest cosine between the first "
        f"{ALONE} texts of each encoded alone and in their batch.",
        "",
        "| recipe | mean | lowest | "
        + " | ".join(f"{d} mean / lowest" for d in DATASETS)
        + " | alone vs batch, lowest |",
        "|---|---|---|" + "---|" * len(DATASETS) + "---|",
    ]
    for row in result["rows"]:
        cells = [f"{row['datasets'][d]['mean']:.4f} / {row['datasets'][d]['min']:.4f}" for d in DATASETS]
        lines.append(
            f"| {row['recipe']} | {row['mean']:.5f} | {row['min']:.4f} | "
            + " | ".join(cells)
            + f" | {row['alone_vs_batch_min']:.4f} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.3, 0.5, 0.7, 0.8])
    a = ap.parse_args()
    enc = TextEncoder(backend="onnx")
    enc.encode(["warm up"])  # makes (or finds) the fp32 export
    fp32 = fo.export_folder(enc.identity["weights_sha256"], None)
    manifest = read_manifest(fp32)
    texts = sample_texts()
    ref_rt = runtime(fp32)
    ref = {name: unit(ref_rt.encode(tx, batch_size=32)) for name, tx in texts.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shipped_nodes = fo._smoothable
        for alpha, every in [(None, False), *((x, False) for x in a.alphas), (fo.SMOOTH_ALPHA, True)]:
            folder = Path(tmp) / f"alpha-{alpha}-{every}"
            folder.mkdir()
            fo._smoothable = every_product if every else shipped_nodes
            try:
                fo.quantize_int8(fp32, manifest, folder, smooth_alpha=alpha)
            finally:
                fo._smoothable = shipped_nodes
            row = measure(runtime(folder), texts, ref)
            row["recipe"] = "no smoothing (recipe 1)" if alpha is None else f"smoothing, alpha {alpha}"
            if every:
                row["recipe"] += ", down-projections too"
            row["alpha"], row["down_projections_smoothed"] = alpha, every
            row["shipped"] = alpha == fo.SMOOTH_ALPHA and not every
            rows.append(row)
            print(f"{row['recipe']}: mean {row['mean']:.5f}, lowest {row['min']:.4f}", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m eval.bench_int8_recipe",
        "datasets": DATASETS,
        "per_dataset": PER_DATASET,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8_recipe.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    write_markdown(result, RESULTS / "int8_recipe.md")


if __name__ == "__main__":
    main()
