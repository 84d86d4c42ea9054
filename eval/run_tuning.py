"""The training-free cache adapter, head="auto" and contrastive tuning against SetFit.

    python -m eval.run_tuning                      # MiniLM, the six SetFit datasets, N=8, seeds 0-2
    python -m eval.run_tuning --body mpnet --no-tune   # the same with all-mpnet-base-v2 (frozen methods)
    python -m eval.report

Same protocol, splits and seeds as `python -m eval.run_text --protocol setfit` (N examples a class drawn
with `sample_per_class(train_labels, N, seed)`; the test split capped at 2,000 rows by a fixed stratified
subsample), and SetFit's stored per-seed runs (eval/results/setfit/) for seeds 0..S-1, so every number in a
row of the table comes from the same support sets. Fit time is what a user waits for: encoding the support
set (at the body's uncached speed on that dataset), plus the head's fit, plus, for the tuned rows, the
contrastive tuning itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np

from eval.datasets import load, sample_per_class
from eval.peers import SETFIT_DATASETS, scores, setfit_cached
from eval.run_text import CACHE, RESULTS, machine
from eval.sampling import capped_subsample
from fewshot import TextEncoder
from fewshot.encoders.text import BUNDLED_MPNET
from fewshot.heads import AutoHead, CacheAdapterHead, LinearHead, PrototypeHead, ZeroShotHead
from fewshot.prompts import label_prompts, parse_labels, resolve_templates
from fewshot.tuning import contrastive_tune

BODIES = {"minilm": None, "mpnet": BUNDLED_MPNET}


def label_vectors(encoder: TextEncoder, names: list[str]) -> ZeroShotHead:
    """The zero-shot head over the label names with the default template, as FewShotClassifier builds it."""
    parsed = parse_labels(names)
    texts, owners, weights = label_prompts(parsed, resolve_templates(None))
    codes = [names.index(o) for o in owners]
    return ZeroShotHead().fit(encoder.encode(texts), codes, sample_weight=weights, classes=list(range(len(names))))


def heads_on(Es, ys, Et, prior_s, prior_t) -> dict[str, tuple[np.ndarray, float]]:
    """Predictions and fit seconds of each head on one support set."""
    out = {}
    for name, make, with_prior in [
        ("prototype (centred)", lambda: PrototypeHead(center=True), False),
        ("linear", lambda: LinearHead(), False),
        ("cache + label prior", lambda: CacheAdapterHead(), True),
        ("auto", lambda: AutoHead(), True),
        ("cache + label prior, trained keys (50 epochs)", lambda: CacheAdapterHead(train_epochs=50), True),
    ]:
        t = time.perf_counter()
        head = make()
        if with_prior:
            head.fit(Es, ys, prior=prior_s)
            fit_s = time.perf_counter() - t
            pred = head.predict(Et, prior=prior_t)
        else:
            head.fit(Es, ys)
            fit_s = time.perf_counter() - t
            pred = head.predict(Et)
        out[name] = (pred, fit_s)
    return out


def run(body: str, names: list[str], shots: int, seeds: int, test_cap: int, tune: bool, steps: int) -> list[dict]:
    frozen = TextEncoder(BODIES[body])
    cached = TextEncoder(BODIES[body], cache_dir=CACHE)
    rows = []
    for name in names:
        ds = load(name)
        test_idx = capped_subsample(ds.test_labels, test_cap)
        test_texts = [ds.test_texts[i] for i in test_idx]
        yt = ds.test_labels[test_idx]
        Et = cached.encode(test_texts, show_progress=True)
        probe = test_texts[:128]
        t = time.perf_counter()
        frozen.encode(probe)
        rate = len(probe) / (time.perf_counter() - t)
        zs = label_vectors(cached, ds.label_names)
        prior_t = zs.class_scores(Et)
        C = len(ds.label_names)
        for seed in range(seeds):
            support = sample_per_class(ds.train_labels, shots, seed)
            texts, ys = [ds.train_texts[i] for i in support], ds.train_labels[support]
            base = {"dataset": name, "shots": shots, "seed": seed, "test_size": len(test_idx), "body": body}
            encode_s = len(texts) / rate
            Es = cached.encode(texts)
            for head_name, (pred, fit_s) in heads_on(Es, ys, Et, zs.class_scores(Es), prior_t).items():
                rows.append(
                    {**base, "method": f"fewshot {head_name}", **scores(yt, pred, C), "fit_s": encode_s + fit_s}
                )
            if tune:
                t = time.perf_counter()
                tuned = contrastive_tune(frozen, texts, ys, steps=steps, seed=seed)
                tune_s = time.perf_counter() - t
                Es2 = tuned.encode(texts)
                Et2 = tuned.encode(test_texts, batch_size=128, show_progress=True)
                zs2 = label_vectors(tuned, ds.label_names)
                tuned_heads = heads_on(Es2, ys, Et2, zs2.class_scores(Es2), zs2.class_scores(Et2))
                for head_name, (pred, fit_s) in tuned_heads.items():
                    rows.append(
                        {
                            **base,
                            "method": f"fewshot tuned ({steps} steps) + {head_name}",
                            **scores(yt, pred, C),
                            "fit_s": encode_s + tune_s + fit_s,
                            "tune_s": tune_s,
                        }
                    )
            r = setfit_cached(name, shots, seed) if body == "minilm" else None
            if r is not None:
                rows.append(
                    {
                        **base,
                        "method": "SetFit (MiniLM)",
                        **{k: r[k] for k in ("accuracy", "macro_f1", "mcc")},
                        "fit_s": r["fit_s"],
                    }
                )
            print(f"{name} seed {seed} done", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", choices=sorted(BODIES), default="minilm")
    ap.add_argument("--datasets", nargs="+", default=SETFIT_DATASETS)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10, help="contrastive tuning steps")
    ap.add_argument("--no-tune", action="store_true", help="only the training-free methods")
    ap.add_argument("--note", default="")
    ap.add_argument("--tag", default="", help="suffix of the results file (text_tuning_<body><tag>.json)")
    a = ap.parse_args()
    started = time.perf_counter()
    rows = run(a.body, a.datasets, a.shots, a.seeds, a.test_cap, not a.no_tune, a.steps)
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": " ".join(["python -m eval.run_tuning"] + sys.argv[1:]),
        "body": a.body,
        "shots": a.shots,
        "seeds": a.seeds,
        "wall_s": round(time.perf_counter() - started, 1),
        "note": a.note,
        "rows": rows,
    }
    path = RESULTS / f"text_tuning_{a.body}{a.tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} in {out['wall_s']} s")


if __name__ == "__main__":
    main()
