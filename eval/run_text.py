"""Text benchmark: fewshot's heads against SetFit and TF-IDF on the same seeded splits.

    python -m eval.run_text                       # all protocols (SetFit results read from the cache)
    python -m eval.run_text --quick               # a small slice in a couple of minutes
    python -m eval.run_text --protocol setfit --shots 8 64 --seeds 5 --setfit run

Protocols:
- setfit: N examples per class drawn from train with seeds 0..S-1, scored on the test split (at most
  ``--test-cap`` rows, a fixed seeded stratified subsample when larger); mean and std over seeds. Fit time
  of our heads = encoding the support set at the model's uncached speed on that dataset + the head's fit.
- episodic: 5-way K-shot episodes (15 queries a class) drawn from a dataset's test split; mean and 95% CI.
- zeroshot: label names only.
Embeddings are cached per (encoder, text) in ``eval/cache/``, so comparing heads costs one encoding pass.
Raw results go to ``eval/results/text_<protocol>.json``; ``python -m eval.report`` writes eval/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from eval.datasets import LOADERS, TextDataset, load, sample_per_class
from eval.metrics import accuracy, ci95, mean_std
from eval.peers import SETFIT_DATASETS, scores, setfit_cached, setfit_run, tfidf_lr
from eval.sampling import capped_subsample, episodes
from fewshot import TextEncoder, ZeroShotClassifier
from fewshot.heads import KNNHead, LinearHead, PrototypeHead

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / "cache" / "embeddings"

SINGLE_LABEL = [n for n in LOADERS if n not in ("goemotions", "20newsgroups")]  # 20NG: long posts, episodic only
# the SetFit-protocol table: the SetFit paper's six datasets and three classic binary ones; the many-class
# intent sets (77 and 150 classes, 64 shots = 5k-10k support texts a seed) are covered by the episodes
SETFIT_TABLE = SETFIT_DATASETS + ["sst2", "mr", "subj"]
EPISODIC = ["emotion", "sst5", "banking77", "clinc150", "20newsgroups"]
EPISODE_POOL = 3000  # test rows per dataset episodes draw from (clinc150 keeps 20 of each of its 150 intents)
HEADS = {
    "prototype": lambda: PrototypeHead(),
    "prototype (centred)": lambda: PrototypeHead(center=True),
    "knn": lambda: KNNHead(),
    "linear": lambda: LinearHead(),
}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_per_dataset(
    names: list[str], evaluate: Any, module: str, stem: str, markdown: Any, **fields: Any
) -> dict[str, Any]:
    """Run ``evaluate(name, encoder)`` on each dataset with the cached bundled encoder and write the rows,
    with the date, machine, command, ``fields`` and the time taken, to ``results/<stem>.json`` and the
    table ``markdown(out)`` to ``results/<stem>.md``."""
    encoder = TextEncoder(cache_dir=CACHE)
    t = time.perf_counter()
    rows = []
    for name in names:
        rows.append(evaluate(name, encoder))
        print(f"{name} done", flush=True)
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": " ".join([f"python -m {module}"] + sys.argv[1:]),
        **fields,
        "seconds": round(time.perf_counter() - t, 1),
        "rows": rows,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(out))
    print(markdown(out))
    return out


class Embedder:
    """Encodes through the on-disk cache; also measures the uncached encoding speed of each dataset."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.cached = TextEncoder(encoder.model, cache_dir=CACHE)
        self.rates: dict[str, float] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.cached.encode(texts, show_progress=len(texts) > 2000)

    def rate(self, ds: TextDataset) -> float:
        """Texts per second of the bare model on 128 test texts of ``ds`` (no cache)."""
        if ds.name not in self.rates:
            texts = ds.test_texts[:128]
            t = time.perf_counter()
            self.encoder.encode(texts)
            self.rates[ds.name] = len(texts) / (time.perf_counter() - t)
        return self.rates[ds.name]


def run_setfit_protocol(names, shots_list, seeds, test_cap, setfit_mode, setfit_shots, embed) -> list[dict]:
    rows = []
    for name in names:
        ds = load(name)
        test_idx = capped_subsample(ds.test_labels, test_cap)
        Et = embed([ds.test_texts[i] for i in test_idx])
        yt = ds.test_labels[test_idx]
        rate = embed.rate(ds)
        for shots in shots_list:
            for seed in range(seeds):
                support = sample_per_class(ds.train_labels, shots, seed)
                texts = [ds.train_texts[i] for i in support]
                encode_s = len(texts) / rate  # a user's fit encodes its examples: at the uncached speed
                Es, ys = embed(texts), ds.train_labels[support]
                base = {"dataset": name, "shots": shots, "seed": seed, "test_size": len(test_idx)}
                for head_name, make in HEADS.items():
                    t = time.perf_counter()
                    head = make().fit(Es, ys)
                    fit_s = encode_s + time.perf_counter() - t
                    t = time.perf_counter()
                    pred = head.predict(Et)
                    head_s = time.perf_counter() - t
                    items_per_s = 1.0 / (1.0 / rate + head_s / len(Et))
                    rows.append(
                        {
                            **base,
                            "method": f"fewshot {head_name}",
                            **scores(yt, pred, len(ds.label_names)),
                            "fit_s": fit_s,
                            "items_per_s": items_per_s,
                        }
                    )
                rows.append({**base, "method": "TF-IDF + LR", **tfidf_lr(ds, support, test_idx)})
                if name in SETFIT_DATASETS and shots in setfit_shots and setfit_mode != "skip":
                    r = setfit_cached(name, shots, seed)
                    if r is None and setfit_mode == "run":
                        r = setfit_run(ds, shots, seed, test_idx)
                    if r is not None:
                        rows.append(
                            {
                                **base,
                                "method": "SetFit (MiniLM)",
                                **{k: r[k] for k in ("accuracy", "macro_f1", "mcc", "fit_s", "items_per_s")},
                            }
                        )
                print(f"{name} n={shots} seed={seed} done", flush=True)
    return rows


def run_episodic(names, shots_list, n_episodes, embed) -> list[dict]:
    rows = []
    for name in names:
        ds = load(name)
        pool = capped_subsample(ds.test_labels, EPISODE_POOL)
        E, y = embed([ds.test_texts[i] for i in pool]), ds.test_labels[pool]
        for k in shots_list:
            accs: dict[str, list[float]] = {h: [] for h in HEADS}
            for s_idx, q_idx in episodes(y, 5, k, 15, n_episodes, seed=k):
                for head_name, make in HEADS.items():
                    accs[head_name].append(accuracy(y[q_idx], make().fit(E[s_idx], y[s_idx]).predict(E[q_idx])))
            for head_name, v in accs.items():
                rows.append(
                    {
                        "dataset": name,
                        "way": 5,
                        "shots": k,
                        "queries": 15,
                        "episodes": n_episodes,
                        "method": f"fewshot {head_name}",
                        "accuracy": float(np.mean(v)),
                        "ci95": ci95(v),
                    }
                )
            print(f"episodic {name} 5-way {k}-shot done", flush=True)
    return rows


def run_zeroshot(names, test_cap, embed) -> list[dict]:
    rows = []
    for name in names:
        ds = load(name)
        test_idx = capped_subsample(ds.test_labels, test_cap)
        Et, yt = embed([ds.test_texts[i] for i in test_idx]), ds.test_labels[test_idx]
        arms = {  # the label text alone, then the ensemble with vocabulary expansion (each label one mean vector,
            # the inputs as they are: scored on the cached embeddings; eval.zeroshot_templates scores the default)
            "plain templates": {"templates": "plain", "expand": "none"},
            "ensemble templates": {"templates": "ensemble", "expand": "none"},
            "default: ensemble + vocabulary expansion": {},
        }
        for arm, kw in arms.items():
            kw = {"pool": "mean", "frame": "none", **kw}
            zs = ZeroShotClassifier(ds.label_names, encoder=embed.cached, **kw).fit()
            pred = zs.head_.class_scores(Et).argmax(axis=1)  # columns follow label_names order
            rows.append(
                {
                    "dataset": name,
                    "method": f"fewshot zero-shot ({arm})",
                    "test_size": len(test_idx),
                    **scores(yt, pred, len(ds.label_names)),
                }
            )
        print(f"zeroshot {name} done", flush=True)
    return rows


def summarise(rows: list[dict], keys: tuple[str, ...], metrics: tuple[str, ...]) -> list[dict]:
    """Group rows by ``keys`` and give mean and std of each metric over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        s = dict(zip(keys, key))
        s["runs"] = len(rs)
        for m in metrics:
            if all(m in r for r in rs):
                s[m], s[f"{m}_std"] = mean_std([r[m] for r in rs])
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="datasets folder (default: $FEWSHOT_DATA or ../shared/data)")
    ap.add_argument("--protocol", choices=["setfit", "episodic", "zeroshot", "all"], default="all")
    ap.add_argument("--datasets", nargs="+", help="datasets for the SetFit protocol (default: SETFIT_TABLE)")
    ap.add_argument("--shots", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument(
        "--setfit",
        choices=["cached", "run", "skip"],
        default="cached",
        help="SetFit: read stored results (default), run missing ones, or leave it out",
    )
    ap.add_argument("--setfit-shots", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--note", help="a remark on the conditions of this run, kept with the results")
    ap.add_argument("--quick", action="store_true", help="3 datasets, N=8, 2 seeds, 100 episodes, 500 test rows")
    a = ap.parse_args()
    if a.data:
        os.environ["FEWSHOT_DATA"] = a.data
    if a.quick:
        names, shots, seeds, n_ep, cap = ["sst2", "emotion", "ag_news"], [8], 2, 100, 500
        ep_names, zs_names = ["emotion"], ["sst2", "emotion"]
    else:
        names, shots, seeds, n_ep, cap = a.datasets or SETFIT_TABLE, a.shots, a.seeds, a.episodes, a.test_cap
        ep_names, zs_names = EPISODIC, SINGLE_LABEL
    embed = Embedder(TextEncoder())
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "encoder": "all-MiniLM-L6-v2 (bundled)",
        "test_cap": cap,
        "quick": a.quick,
        "note": a.note,
    }
    suffix = "_quick" if a.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if a.protocol in ("setfit", "all"):
        rows = run_setfit_protocol(names, shots, seeds, cap, a.setfit, a.setfit_shots, embed)
        summary = summarise(
            rows, ("dataset", "method", "shots"), ("accuracy", "macro_f1", "mcc", "fit_s", "items_per_s")
        )
        out = {
            **meta,
            "command": " ".join(["python -m eval.run_text"] + sys.argv[1:]),
            "shots": shots,
            "seeds": seeds,
            "runs": rows,
            "summary": summary,
        }
        (RESULTS / f"text_setfit_protocol{suffix}.json").write_text(json.dumps(out, indent=1) + "\n")
    if a.protocol in ("episodic", "all"):
        rows = run_episodic(ep_names, [1, 5], n_ep, embed)
        (RESULTS / f"text_episodic{suffix}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    if a.protocol in ("zeroshot", "all"):
        rows = run_zeroshot(zs_names, cap, embed)
        (RESULTS / f"text_zeroshot{suffix}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    print(f"finished in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
