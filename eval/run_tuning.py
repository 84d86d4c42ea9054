"""Fine-tuning and the training-free heads against SetFit, through the library's own code path.

    python -m eval.run_tuning                      # the report group (SetFit's six datasets), N=8, seeds 0-2
    python -m eval.run_tuning --shots 64 --tag _n64_lexical
    python -m eval.run_tuning --tune-settings '{"layers": null}' --tag _all_layers   # every layer tuned at N=8
    python -m eval.run_tuning --group dev --shots 8 64 --seeds 2 --tag _dev   # the development group
    python -m eval.report

Every row is a :class:`fewshot.FewShotClassifier` fitted on label names (``names[y]``) and asked to
``predict`` the test texts, so the table measures what ships: the label prior the library builds, its
templates and temperature, its calibration, ``tune="auto"``'s schedule and ``head="auto"``'s choice. Each row
records the classifier's parameters, the tuning settings it ran with and the head ``auto`` picked.

The lexical channel (``lexical="auto"``, the library's default) changes nothing else in a fit, so the shipped
tuned fit, made with it, also gives its head alone: the pooled scores are the shipped ``tuned (auto
schedule) + auto + lexical`` row and the head alone the ``tuned (auto schedule) + auto`` row (both carry
that fit's time, the channel's small share included; the first the weight it picked). The other rows set
``lexical`` explicitly.

Datasets come in two groups (:data:`GROUPS`): the tuning schedule and the heads were chosen on the
development group (``eval/tune_dev.py``), and the report group is measured with those choices fixed.

Same protocol, splits and seeds as ``python -m eval.run_text --protocol setfit`` (N examples a class drawn
with ``sample_per_class(train_labels, N, seed)``; the test split capped at 2,000 rows by a fixed stratified
subsample), and SetFit's stored per-seed runs (``eval/results/setfit/``) on the same support sets.

Fit time is what a user waits for. Tuned rows: the wall time of ``fit`` (tune, encode, head, calibration);
the variants with another head on the same tuned body add their head's fit to the tune's share of that
time. Frozen rows use the embedding cache, so their time is the head's fit plus the support set's encoding
at the body's measured uncached speed on that dataset. Each row records the torch thread count and the
load average when its fit started; results are written after every support set, and a rerun with the same
body, N, test cap and tuning resumes where it stopped (seeds and datasets may be added).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

import numpy as np

from eval.datasets import load, sample_per_class
from eval.peers import SETFIT_DATASETS, scores, setfit_cached
from eval.run_text import CACHE, RESULTS, machine
from eval.sampling import capped_subsample
from fewshot import FewShotClassifier, TextEncoder
from fewshot.encoders.text import BUNDLED_MPNET

BODIES = {"minilm": None, "mpnet": BUNDLED_MPNET}
GROUPS = {
    "report": SETFIT_DATASETS,
    "dev": ["sst2", "subj", "banking77", "mr", "clinc150", "20newsgroups", "goemotions_ekman", "goemotions_group"],
}
# rows of the table: (method name, FewShotClassifier settings); the tuned ones share one tune per support set
FROZEN = [
    ("prototype (centred)", {"head": "prototype", "head_params": {"center": True}, "lexical": False}),
    ("linear", {"head": "linear", "lexical": False}),
    ("cache + label prior", {"head": "cache", "lexical": False}),
    ("auto", {"head": "auto", "lexical": False}),
    ("auto + lexical", {"head": "auto", "lexical": "auto"}),
]
SHIPPED = ("tuned (auto schedule) + auto + lexical", {"head": "auto", "tune": "auto", "lexical": "auto"})
# the shipped fit's head alone (the channel changes nothing else in a fit)
HEAD_ALONE_ROW = "tuned (auto schedule) + auto"
TUNED_VARIANTS = [
    ("tuned (auto schedule) + linear", {"head": "linear", "lexical": False}),
    ("tuned (auto schedule) + cache", {"head": "cache", "lexical": False}),
    ("tuned (auto schedule) + prototype", {"head": "prototype", "lexical": False}),
]


def settings(clf: FewShotClassifier) -> dict:
    """Everything a row depends on: the classifier's parameters, its tune and its head's choice."""
    from fewshot.classifiers.few_shot import PRIOR_TEMPERATURE, PRIOR_TEMPLATES

    params = {k: v for k, v in clf.get_params().items() if k != "encoder"}
    out = {"params": params, "tuning": clf.tuning_, "temperature": clf.temperature_}
    if getattr(clf, "prior_", None) is not None:
        out["label_prior"] = {"templates": PRIOR_TEMPLATES, "temperature": PRIOR_TEMPERATURE}
    if hasattr(clf.head_, "choice_"):  # head="auto": what it picked and every candidate's CV accuracy
        out["auto_choice"] = clf.head_.choice_
        out["auto_selection"] = clf.head_.selection_
    if getattr(clf, "lexical_", None) is not None:  # the weight picked and every weight's held-out accuracy
        out["lexical_selection"] = clf.lexical_
    return json.loads(json.dumps(out, default=str))


def head_alone(row: dict) -> dict:
    """``row`` of a fit with the lexical channel, as the fit without it (what the head alone predicted)."""
    row = {**row, "params": {**row["params"], "lexical": False}}
    row.pop("lexical_selection", None)
    return row


def predicted(clf: FewShotClassifier, texts: list[str], E: np.ndarray, channel: bool = True) -> np.ndarray:
    """``clf.predict(texts)`` given the texts' embeddings ``E`` under ``clf.encoder_``: the same steps after
    the encoding (checked against ``predict`` on the first rows), so that heads sharing one tuned body
    share one encoding of the test set. ``channel=False``: what the head alone predicts, without the
    lexical channel."""
    S = clf.head_.class_scores(E, **clf._prior_kw(texts, E))
    lexical = getattr(clf, "lexical_channel_", None) if channel else None
    out = clf._labels(clf._in_class_order(S if lexical is None else lexical.pool(clf.head_.log_proba(S), texts)))
    if channel:
        k = min(32, len(texts))
        assert (clf.predict(texts[:k]) == out[:k]).all(), "predicted() departs from predict()"
    return out


def conditions() -> dict:
    import torch

    return {"threads": torch.get_num_threads(), "load_average_at_start": round(os.getloadavg()[0], 2)}


def timed_fit(clf: FewShotClassifier, texts: list[str], labels: np.ndarray) -> tuple[FewShotClassifier, float, dict]:
    cond = conditions()
    t = time.perf_counter()
    clf.fit(texts, labels)
    return clf, time.perf_counter() - t, cond


def support_rows(ds, shots, seed, test_texts, yt, names, frozen, cached, rate, tune, tune_settings=None) -> list[dict]:
    C = len(names)
    code = {n: i for i, n in enumerate(names)}

    def metrics(pred: np.ndarray) -> dict:
        return scores(yt, np.array([code[v] for v in pred]), C)

    support = sample_per_class(ds.train_labels, shots, seed)
    texts, labels = [ds.train_texts[i] for i in support], names[ds.train_labels[support]]
    base = {"dataset": ds.name, "shots": shots, "seed": seed, "test_size": len(yt), "support_size": len(texts)}
    encode_s = len(texts) / rate
    rows = []
    for method, kw in FROZEN:
        clf, fit_s, cond = timed_fit(FewShotClassifier(cached, **kw), texts, labels)
        pred = clf.predict(test_texts)
        rows.append(
            {
                **base,
                "method": f"fewshot {method}",
                **metrics(pred),
                "fit_s": encode_s + fit_s,
                "encode_s_estimated": encode_s,
                **cond,
                **settings(clf),
            }
        )
    if tune:
        method, kw = SHIPPED
        if tune_settings:  # the shipped fit with some of the schedule's settings given (--tune-settings)
            kw = {**kw, "tune": dict(tune_settings)}
        clf, fit_s, cond = timed_fit(FewShotClassifier(frozen, **kw), texts, labels)
        tuned = clf.encoder_
        t = time.perf_counter()
        Et = tuned.encode(test_texts, batch_size=128)
        predict_s = time.perf_counter() - t
        # the head and calibration share of the fit, measured by refitting them on the tuned body
        _, head_s, _ = timed_fit(FewShotClassifier(tuned, head=kw["head"], lexical=False), texts, labels)
        tune_s = max(fit_s - head_s, 0.0)
        shipped = {
            **base,
            "fit_s": fit_s,
            "tune_s": tune_s,
            "predict_items_per_s": len(yt) / predict_s,
            **cond,
            **settings(clf),
        }
        rows.append(
            {
                **head_alone(shipped),
                "method": f"fewshot {HEAD_ALONE_ROW}",
                **metrics(predicted(clf, test_texts, Et, channel=False)),
            }
        )
        rows.append({**shipped, "method": f"fewshot {method}", **metrics(predicted(clf, test_texts, Et))})
        for variant, vkw in TUNED_VARIANTS:
            v, v_s, vcond = timed_fit(FewShotClassifier(tuned, **vkw), texts, labels)
            vpred = predicted(v, test_texts, Et)
            rows.append(
                {
                    **base,
                    "method": f"fewshot {variant}",
                    **metrics(vpred),
                    "fit_s": tune_s + v_s,
                    "tune_s": tune_s,
                    **vcond,
                    **settings(v),
                    "tuning": clf.tuning_,
                }
            )
    return rows


def run(
    body: str,
    names_: list[str],
    shots_list: list[int],
    seeds: int,
    test_cap: int,
    tune: bool,
    done: set,
    save,
    tune_settings: dict | None = None,
) -> None:
    frozen = TextEncoder(BODIES[body])
    cached = TextEncoder(BODIES[body], cache_dir=CACHE)
    prepared: dict[str, tuple] = {}

    def prepare(name: str) -> tuple:
        """The dataset, its capped test split and the body's uncached speed on it (measured once)."""
        if name not in prepared:
            ds = load(name)
            test_idx = capped_subsample(ds.test_labels, test_cap)
            test_texts = [ds.test_texts[i] for i in test_idx]
            cached.encode(test_texts, show_progress=True)  # fill the cache before anything is timed
            probe = test_texts[:128]
            t = time.perf_counter()
            frozen.encode(probe)
            rate = len(probe) / (time.perf_counter() - t)
            names = np.asarray(ds.label_names, dtype=object)
            prepared[name] = (ds, test_texts, ds.test_labels[test_idx], names, rate)
        return prepared[name]

    # seed by seed across the datasets, so that a run stopped early has every dataset for the seeds it did
    for shots in shots_list:
        for seed in range(seeds):
            for name in names_:
                if (name, shots, seed) in done:
                    continue
                ds, test_texts, yt, names, rate = prepare(name)
                rows = support_rows(ds, shots, seed, test_texts, yt, names, frozen, cached, rate, tune, tune_settings)
                r = setfit_cached(name, shots, seed) if body == "minilm" else None
                if r is not None:
                    rows.append(
                        {
                            "dataset": name,
                            "shots": shots,
                            "seed": seed,
                            "test_size": len(yt),
                            "method": "SetFit (MiniLM)",
                            **{k: r[k] for k in ("accuracy", "macro_f1", "mcc")},
                            "fit_s": r["fit_s"],
                            "training_args": r.get("training_args", {}),
                        }
                    )
                save(rows)
                print(f"{name} N={shots} seed {seed} done", flush=True)


def schedule() -> dict:
    """The constants of ``tune="auto"``'s schedule, of ``head="auto"``'s choice on a tuned body and of the
    lexical channel, and the rows measured: results measured under other ones are not resumed."""
    import fewshot.classifiers.few_shot as few_shot
    import fewshot.lexical as lexical
    import fewshot.tuning as tuning

    constants = {k: getattr(tuning, k) for k in sorted(dir(tuning)) if k.startswith(("AUTO_", "FULL_", "CHUNK_"))}
    constants |= {k: getattr(few_shot, k) for k in ("TUNE_FOLDS", "TUNED_PREFERRED", "LEXICAL_FOLDS")}
    constants |= {f"lexical.{k}": getattr(lexical, k) for k in ("C", "WEIGHTS", "NGRAMS", "MIN_GAIN")}
    methods = [m for m, _ in FROZEN] + [HEAD_ALONE_ROW, SHIPPED[0]] + [m for m, _ in TUNED_VARIANTS]
    return json.loads(json.dumps(constants | {"methods": methods}))  # as the results file holds it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", choices=sorted(BODIES), default="minilm")
    ap.add_argument("--group", choices=sorted(GROUPS), default="report")
    ap.add_argument("--datasets", nargs="+", help="a subset of the group's datasets")
    ap.add_argument("--shots", nargs="+", type=int, default=[8])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument("--no-tune", action="store_true", help="only the frozen (training-free) rows")
    ap.add_argument(
        "--tune-settings",
        type=json.loads,
        default=None,
        help="JSON of tuning settings given to the shipped fit in place of the schedule's, e.g. '{\"layers\": null}'",
    )
    ap.add_argument("--note", default="")
    ap.add_argument("--tag", default="", help="suffix of the results file (text_tuning_<body><tag>.json)")
    a = ap.parse_args()
    datasets = a.datasets or GROUPS[a.group]
    outside = sorted(set(datasets) - set(GROUPS[a.group]))
    if outside:
        ap.error(f"{outside} are not in the {a.group} group ({', '.join(GROUPS[a.group])})")
    path = RESULTS / f"text_tuning_{a.body}{a.tag}.json"
    command = " ".join(["python -m eval.run_tuning"] + sys.argv[1:])
    out = json.loads(path.read_text()) if path.exists() else {}
    setup = {"body": a.body, "shots": a.shots, "test_cap": a.test_cap, "tune": not a.no_tune, "schedule": schedule()}
    if a.tune_settings:
        setup["tune_settings"] = a.tune_settings
    if out.get("setup") != setup:
        out = {"rows": [], "wall_s": 0.0, "setup": setup}  # measured another way: start afresh
    out.update(
        command=command,
        body=a.body,
        group=a.group,
        groups=GROUPS,
        shots=a.shots if len(a.shots) > 1 else a.shots[0],
        seeds=a.seeds,
        machine=machine(),
        note=a.note,
        tune_settings=a.tune_settings,
    )
    done = {(r["dataset"], r["shots"], r["seed"]) for r in out["rows"]}
    started = time.perf_counter()
    wall0 = out["wall_s"]

    def save(rows: list[dict]) -> None:
        out["rows"] += rows
        out["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
        out["wall_s"] = round(wall0 + time.perf_counter() - started, 1)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, path)  # a run stopped mid-write leaves the previous file whole

    run(a.body, datasets, a.shots, a.seeds, a.test_cap, not a.no_tune, done, save, a.tune_settings)
    print(f"wrote {path} ({out['wall_s']} s in all)")


if __name__ == "__main__":
    main()
