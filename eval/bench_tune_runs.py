"""What running a tuning batch in runs of similar length saves: seconds a step, with and without.

    python -m eval.bench_tune_runs           # about 10 minutes on 2 cores; nothing else should run

For each dataset of the SetFit protocol at 8 and 64 examples a class (seed 0's support set), the body is
tuned as ``tune="auto"`` would (its batch size, learning rate and layers) for a few steps, twice from the
same start: once with every batch padded to its longest text (``overhead=inf``) and once in length runs
(:func:`fewshot.tuning.length_chunks`, the shipped default). The two alternate, the run order flipping
between rounds, and each keeps its own copy of the model. Reported: the median seconds a step of each, their
ratio, and the padded tokens a step runs over the tokens it holds. The two give the same embeddings and
gradients but draw dropout differently (``tests/test_tuning.py``), so their fits differ as two seeds do.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from datetime import UTC, datetime

import numpy as np

from eval.datasets import load, sample_per_class
from eval.peers import SETFIT_DATASETS
from eval.run_text import RESULTS, machine
from fewshot import TextEncoder
from fewshot.labels import encode_labels
from fewshot.tuning import (
    CHUNK_OVERHEAD_TOKENS,
    _batches,
    _FrozenBottom,
    auto_schedule,
    length_chunks,
    train_step,
    transformer_layers,
)

OUT = RESULTS / "bench_tune_runs.json"


def padding(model, texts: list[str], batches: list[np.ndarray], overhead: float) -> float:
    """Padded tokens run over real tokens, summed over ``batches``."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    run = real = 0
    for b in batches:
        lengths = prepare([texts[i] for i in b])["attention_mask"].sum(dim=1).numpy()
        real += lengths.sum()
        for r in length_chunks(lengths, overhead):
            run += len(r) * lengths[r].max()
    return float(run / real)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=SETFIT_DATASETS)
    ap.add_argument("--shots", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--steps", type=int, default=4, help="timed steps of each, in rounds of one")
    a = ap.parse_args()
    load_at_start = round(os.getloadavg()[0], 2)
    import torch

    base = TextEncoder()
    depth = len(transformer_layers(base.model)[2])
    rows = []
    for shots in a.shots:
        for name in a.datasets:
            ds = load(name)
            support = sample_per_class(ds.train_labels, shots, 0)
            texts = [ds.train_texts[i] for i in support]
            codes = encode_labels(ds.train_labels[support], np.unique(ds.train_labels[support]))
            plan = auto_schedule(len(texts), len(np.unique(codes)), depth)
            batches = list(_batches(codes, plan["batch_size"], a.steps + 1, np.random.default_rng(0)))
            arms = {}
            for arm, overhead in (("one padded batch", math.inf), ("length runs", CHUNK_OVERHEAD_TOKENS)):
                model = copy.deepcopy(base.model)
                bottom = _FrozenBottom(model, texts, plan["layers"]) if plan["layers"] else None
                params = [p for p in model.parameters() if p.requires_grad]
                arms[arm] = (model, bottom, torch.optim.AdamW(params, lr=plan["lr"]), overhead, [])
            torch.manual_seed(0)
            for step, batch in enumerate(batches):  # the first step of each is a warm-up, not timed
                order = list(arms) if step % 2 == 0 else list(arms)[::-1]
                for arm in order:
                    model, bottom, optimiser, overhead, seconds = arms[arm]
                    model.train()
                    t = time.perf_counter()
                    train_step(model, optimiser, [texts[i] for i in batch], codes[batch], 0.1, bottom, overhead)
                    if step:
                        seconds.append(time.perf_counter() - t)
            med = {arm: statistics.median(v[4]) for arm, v in arms.items()}
            row = {
                "dataset": name,
                "shots": shots,
                "batch_size": plan["batch_size"],
                "layers": plan["layers"],
                "steps_timed": a.steps,
                "seconds_a_step": {k: round(v, 4) for k, v in med.items()},
                "speedup": round(med["one padded batch"] / med["length runs"], 2),
                "padded_over_real_tokens": {
                    "one padded batch": round(padding(base.model, texts, batches, math.inf), 2),
                    "length runs": round(padding(base.model, texts, batches, CHUNK_OVERHEAD_TOKENS), 2),
                },
                "threads": torch.get_num_threads(),
                "machine": machine(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.write_text(
        json.dumps(
            {"date": datetime.now(UTC).date().isoformat(), "command": "python -m eval.bench_tune_runs", "rows": rows},
            indent=1,
        )
        + "\n"
    )
    lines = [
        "# Tuning batches in length runs",
        "",
        f"Measured {datetime.now(UTC).date().isoformat()} on {machine()}, load average {load_at_start:.2f} when it "
        f"started (other work already running shows here) and {os.getloadavg()[0]:.2f} at its end (which counts its "
        "own work). Command: "
        "`python -m eval.bench_tune_runs`. Seed 0's support set of each dataset; the batch, rate and layers of "
        f'`tune="auto"`; median seconds of {a.steps} steps of each, alternating (one warm-up step each first). '
        "Tokens: padded tokens run over the real tokens of the same batches.",
        "",
        "| N | dataset | batch | layers | s/step, one padded batch | s/step, length runs | speedup | tokens run, "
        "one batch | tokens run, runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, p = r["seconds_a_step"], r["padded_over_real_tokens"]
        lines.append(
            f"| {r['shots']} | {r['dataset']} | {r['batch_size']} | {r['layers'] or 'all'} | "
            f"{s['one padded batch']:.3f} | {s['length runs']:.3f} | {r['speedup']:.2f}x | "
            f"{p['one padded batch']:.2f} | {p['length runs']:.2f} |"
        )
    (RESULTS / "bench_tune_runs.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
