"""Zero-shot quality, calibration, out-of-scope detection and multi-label tagging.

    python -m eval.run_zeroshot            # everything: 2.5 minutes with the embedding cache warm, on 2 quiet cores
    python -m eval.run_zeroshot --part techniques calibration oos multilabel

Parts, each written to ``eval/results/text_<part>.json``:
- techniques: zero-shot accuracy on ag_news, emotion, sst2, banking77 (the headline) and six more datasets,
  one row per technique on its own: the plain template (the baseline: inputs read as they are), the template
  ensemble, label descriptions, corpus centring, self-training, and SetFit's templated zero-shot (stored
  runs, ``eval.peers --zeroshot``); every row but the baseline reads inputs and pools prompts as the library's
  defaults do (``frame="auto"``, ``pool="soft"``).
  The unlabelled corpus is a fixed sample of each dataset's *train* split (labels dropped); test rows are
  never seen before scoring.
- calibration: the default zero-shot temperature (lowest log-loss on the train splits of DEV, six datasets
  outside the headline), expected calibration error before and after on the headline datasets' test
  splits; few-shot (8 a class, 3 seeds) ECE with and without the held-out temperature.
- oos: CLINC150 with its out-of-scope queries (Larson et al. 2019): in-scope accuracy and out-of-scope
  recall at 5 and 10 examples per intent (3 seeds), with the threshold from the support set alone or from
  the validation split (its in-scope and out-of-scope rows); zero-shot likewise.
- multilabel: GoEmotions (28 labels, test split): mean average precision, micro- and macro-F1, zero-shot
  (threshold from the validation split) and few-shot (8 examples a label, threshold from the support set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, f1_score

from eval.datasets import load, sample_per_class
from eval.metrics import accuracy, macro_f1
from eval.peers import setfit_zeroshot_path
from eval.run_text import Embedder, machine
from eval.sampling import capped_subsample
from fewshot import FewShotClassifier, TextEncoder, ZeroShotClassifier
from fewshot import calibration as cal
from fewshot.classifiers import zero_shot as clf_module
from fewshot.maths import fit_temperature, l2_normalize, softmax

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = ["ag_news", "emotion", "sst2", "banking77"]
DEV = ["sst5", "cr", "mr", "subj", "clinc150", "amazon_counterfactual"]
CORPUS_CAP, CORPUS_SEED, TEST_CAP = 2000, 7, 2000
DESCRIPTIONS = {
    k: v for k, v in json.loads((HERE / "label_descriptions.json").read_text()).items() if not k.startswith("_")
}


def _split(ds, embed):
    ti = capped_subsample(ds.test_labels, TEST_CAP)
    ci = capped_subsample(ds.train_labels, CORPUS_CAP, seed=CORPUS_SEED)
    test = [ds.test_texts[i] for i in ti]
    corpus = [ds.train_texts[i] for i in ci]
    embed(test + corpus)  # one pass fills the cache for every classifier below
    return test, ds.test_labels[ti], corpus


def given_order(zs: ZeroShotClassifier, S: np.ndarray) -> np.ndarray:
    """Scores ``S`` (columns in ``zs.classes_`` order, sorted) in the order the labels were given, which is
    the datasets' label codes."""
    at = {c: j for j, c in enumerate(zs.classes_.tolist())}
    return S[:, [at[c] for c in zs.label_head_.classes_.tolist()]]


def _predict_codes(zs: ZeroShotClassifier, texts: list[str]) -> np.ndarray:
    return given_order(zs, zs.class_scores(texts)).argmax(axis=1)


def techniques(names: list[str], embed: Embedder) -> list[dict]:
    rows = []
    for name in names:
        ds = load(name)
        test, yt, corpus = _split(ds, embed)
        k = len(ds.label_names)
        labels_desc = DESCRIPTIONS.get(name)
        names = ds.label_names
        methods = {  # the label text alone (expand="none") unless the row says otherwise
            "plain template": (dict(labels=names, templates="plain", adapt="none", frame="none"), None),
            "template ensemble": (dict(labels=names, templates="ensemble", adapt="none"), None),
            "ensemble + vocabulary expansion (the default)": (dict(labels=names, adapt="none", expand="auto"), None),
            "ensemble + corpus centring": (dict(labels=names, templates="ensemble", adapt="center"), corpus),
            "ensemble + self-training": (dict(labels=names, templates="ensemble", adapt="selftrain"), corpus),
            "ensemble + expansion + self-training (the default with a corpus)": (
                dict(labels=names, adapt="selftrain", expand="auto"),
                corpus,
            ),
            "plain + self-training": (dict(labels=names, templates="plain", adapt="selftrain"), corpus),
        }
        if labels_desc:
            methods["ensemble + descriptions"] = (dict(labels=labels_desc, templates="ensemble", adapt="none"), None)
            methods["ensemble + descriptions + self-training"] = (
                dict(labels=labels_desc, templates="ensemble", adapt="selftrain"),
                corpus,
            )
        for method, (kw, X) in methods.items():
            t = time.perf_counter()
            zs = ZeroShotClassifier(encoder=embed.cached, **{"expand": "none", **kw}).fit(X)
            fit_s = time.perf_counter() - t
            pred = _predict_codes(zs, test)
            rows.append(
                {
                    "dataset": name,
                    "method": f"fewshot {method}",
                    "test_size": len(test),
                    "corpus_size": len(corpus) if X is not None else 0,
                    "accuracy": accuracy(yt, pred),
                    "macro_f1": macro_f1(yt, pred, k),
                    "fit_s_cached": fit_s,
                }
            )
        runs = [json.loads(p.read_text()) for p in (setfit_zeroshot_path(name, s) for s in range(3)) if p.exists()]
        if runs:
            acc, f1 = [r["accuracy"] for r in runs], [r["macro_f1"] for r in runs]
            rows.append(
                {
                    "dataset": name,
                    "method": "SetFit templated zero-shot (measured)",
                    "test_size": runs[0]["test_size"],
                    "seeds": [r["seed"] for r in runs],
                    "accuracy": float(np.mean(acc)),
                    "accuracy_std": float(np.std(acc)),
                    "macro_f1": float(np.mean(f1)),
                    "fit_s": float(np.mean([r["fit_s"] for r in runs])),
                    "training_args": runs[0].get("training_args"),
                }
            )
        print(f"techniques {name} done", flush=True)
    return rows


def _label_scores(names: list[str], embed: Embedder, texts: list[str]) -> np.ndarray:
    zs = ZeroShotClassifier(names, encoder=embed.cached, adapt="none").fit()
    return given_order(zs, zs.class_scores(texts))


def calibration(embed: Embedder, seeds: int) -> dict:
    # 1. the default zero-shot temperature and abstention threshold, from labelled *train* rows of DEV
    pooled_S, pooled_y = [], []
    for name in DEV:
        ds = load(name)
        ci = capped_subsample(ds.train_labels, CORPUS_CAP, seed=CORPUS_SEED)
        pooled_S.append(_label_scores(ds.label_names, embed, [ds.train_texts[i] for i in ci]))
        pooled_y.append(ds.train_labels[ci])
    # T on the raw cosines (logp = cosine; softmax(cos / T)): one scalar for all datasets' rows
    T = min(
        np.geomspace(0.005, 0.5, 200),
        key=lambda t: float(
            np.mean([-np.log(softmax(S, t)[np.arange(len(y)), y]).mean() for S, y in zip(pooled_S, pooled_y)])
        ),
    )
    own = np.concatenate([S[np.arange(len(y)), y] for S, y in zip(pooled_S, pooled_y)])
    abstain = float(np.quantile(own, cal.ABSTAIN_QUANTILE))
    out = {
        "zeroshot_default": {
            "fitted_on": f"train splits of {', '.join(DEV)} ({CORPUS_CAP} rows each at most), labels used",
            "temperature": float(T),
            "abstain_threshold_5pct": abstain,
            "in_code": {"ZEROSHOT_TEMPERATURE": clf_module.ZEROSHOT_TEMPERATURE},
        },
        "zeroshot": [],
        "fewshot": [],
    }
    # 2. zero-shot ECE on the headline test splits: the default T=0.05, the fitted optimum, and a
    #    temperature fitted on 500 labelled train rows of the same dataset (a validation split)
    for name in TARGETS:
        ds = load(name)
        test, yt, _ = _split(ds, embed)
        S = _label_scores(ds.label_names, embed, test)
        vi = capped_subsample(ds.train_labels, 500, seed=11)
        Sv = _label_scores(ds.label_names, embed, [ds.train_texts[i] for i in vi])
        t_val = fit_temperature(Sv, ds.train_labels[vi], prior_sd=cal.LOG_T_PRIOR_SD)
        row = {"dataset": name, "test_size": len(test), "accuracy": accuracy(yt, S.argmax(1))}
        for label, t in (
            ("T=0.05 (the default)", 0.05),
            ("fitted default", T),
            ("validation split (500 rows)", t_val),
        ):
            P = softmax(S, t)
            row[label] = {
                "temperature": float(t),
                "ece": cal.expected_calibration_error(P, yt),
                "nll": float(-np.log(P[np.arange(len(yt)), yt]).mean()),
            }
        out["zeroshot"].append(row)
    # 3. few-shot: 8 examples a class, held-out temperature against none
    for name in TARGETS:
        ds = load(name)
        test, yt, _ = _split(ds, embed)
        # the heads alone, and the default (the prototype head pooled with the lexical channel)
        for name_, head, lexical in (
            ("prototype", "prototype", False),
            ("linear", "linear", False),
            ("prototype + lexical channel (the default)", "prototype", "auto"),
        ):
            for seed in range(seeds):
                s = sample_per_class(ds.train_labels, 8, seed)
                X = [ds.train_texts[i] for i in s]
                y = ds.train_labels[s]
                row = {"dataset": name, "head": name_, "seed": seed, "shots": 8}
                for calibrate in (False, True):
                    t = time.perf_counter()
                    c = FewShotClassifier(encoder=embed.cached, head=head, calibrate=calibrate, lexical=lexical)
                    c.fit(X, y)
                    fit_s = time.perf_counter() - t  # embeddings cached: the head's fit (+ calibration)
                    P = c.predict_proba(test)
                    codes = np.searchsorted(c.classes_, yt)
                    key = "calibrated" if calibrate else "uncalibrated"
                    row[key] = {
                        "temperature": float(c.temperature_),
                        "ece": cal.expected_calibration_error(P, codes),
                        "nll": float(-np.log(np.clip(P[np.arange(len(codes)), codes], 1e-12, None)).mean()),
                        "accuracy": accuracy(codes, P.argmax(1)),
                        "fit_s_cached": fit_s,
                        "lexical": c.lexical_,
                    }
                out["fewshot"].append(row)
        print(f"calibration {name} done", flush=True)
    return out


class PooledAbstention(FewShotClassifier):
    """A classifier that keeps its lexical channel when abstaining, its threshold on the pooled scores: the
    library leaves the channel out when ``abstain`` is set, and this measures why."""

    def _without_lexical(self, base, items, abstain):
        return super()._without_lexical(base, items, None)


def _oos_metrics(pred_in, y_in, pred_oos) -> dict:
    """Larson et al. 2019: in-scope accuracy (an abstention on an in-scope query is an error) and
    out-of-scope recall (share of out-of-scope queries abstained on)."""
    return {
        "in_scope_accuracy": float(np.mean([p == t for p, t in zip(pred_in, y_in)])),
        "oos_recall": float(np.mean([p is None for p in pred_oos])),
    }


def oos(embed: Embedder, seeds: int) -> list[dict]:
    ds = load("clinc150")
    names = np.asarray(ds.label_names, dtype=object)
    test_in, y_in = ds.test_texts, names[ds.test_labels]
    test_oos = ds.extra["oos_test"]
    val_texts, val_y = ds.extra["val"]
    val_X = list(val_texts) + ds.extra["oos_val"]
    val_lab = list(names[val_y]) + [None] * len(ds.extra["oos_val"])
    embed(test_in + test_oos + val_X)
    rows = []
    for shots in (5, 10):
        for seed in range(seeds):
            s = sample_per_class(ds.train_labels, shots, seed)
            X, y = [ds.train_texts[i] for i in s], names[ds.train_labels[s]]
            base = {"shots": shots, "seed": seed, "test_in_scope": len(test_in), "test_oos": len(test_oos)}
            c = FewShotClassifier(encoder=embed.cached, abstain="auto").fit(X, y)  # abstaining: the head alone
            rows.append(
                {
                    **base,
                    "method": "prototype, no abstention",
                    **_oos_metrics(c.classes_[c.class_scores(test_in).argmax(1)], y_in, [""] * len(test_oos)),
                }
            )
            rows.append(
                {
                    **base,
                    "method": "prototype, threshold from the support set",
                    "threshold": c.threshold_,
                    "lexical": c.lexical_,
                    **_oos_metrics(c.predict(test_in), y_in, c.predict(test_oos)),
                }
            )
            c.fit_calibration(val_X, val_lab)
            rows.append(
                {
                    **base,
                    "method": "prototype, threshold from the validation split",
                    "threshold": c.threshold_,
                    **_oos_metrics(c.predict(test_in), y_in, c.predict(test_oos)),
                }
            )
            # what the library does not do: abstain="auto" on the pooled scores of the lexical channel
            c = PooledAbstention(encoder=embed.cached, abstain="auto").fit(X, y)
            rows.append(
                {
                    **base,
                    "method": "prototype + lexical channel, threshold from the support set on the pooled scores "
                    "(not used by the library)",
                    "threshold": c.threshold_,
                    "lexical": c.lexical_,
                    **_oos_metrics(c.predict(test_in), y_in, c.predict(test_oos)),
                }
            )
            # without abstain the default pools the head with the lexical channel
            c = FewShotClassifier(encoder=embed.cached).fit(X, y)
            rows.append(
                {
                    **base,
                    "method": "prototype + lexical channel (the default without abstain), no abstention",
                    "lexical": c.lexical_,
                    **_oos_metrics(c.predict(test_in), y_in, c.predict(test_oos)),
                }
            )
            c.fit_calibration(val_X, val_lab)
            rows.append(
                {
                    **base,
                    "method": "prototype + lexical channel, threshold from the validation split",
                    "threshold": c.threshold_,
                    **_oos_metrics(c.predict(test_in), y_in, c.predict(test_oos)),
                }
            )
        print(f"oos {shots}-shot done", flush=True)
    base = {"shots": 0, "seed": 0, "test_in_scope": len(test_in), "test_oos": len(test_oos)}
    z = ZeroShotClassifier(list(names), encoder=embed.cached, adapt="none").fit()
    rows.append(
        {
            **base,
            "method": "zero-shot, no abstention",
            **_oos_metrics(z.classes_[z.class_scores(test_in).argmax(1)], y_in, [""] * len(test_oos)),
        }
    )
    # "auto" from an unlabelled corpus: CLINC150's in-scope train queries with 1% out-of-scope ones
    corpus = [ds.train_texts[i] for i in capped_subsample(ds.train_labels, CORPUS_CAP, seed=CORPUS_SEED)]
    corpus += ds.extra["oos_train"][: len(corpus) // 100]
    for adapt in ("none", "selftrain"):
        z = ZeroShotClassifier(list(names), encoder=embed.cached, abstain="auto", adapt=adapt).fit(corpus)
        rows.append(
            {
                **base,
                "method": f"zero-shot, threshold from an unlabelled corpus (adapt={adapt})",
                "threshold": z.threshold_,
                **_oos_metrics(z.predict(test_in), y_in, z.predict(test_oos)),
            }
        )
    z = ZeroShotClassifier(list(names), encoder=embed.cached, adapt="none").fit()
    z.fit_calibration(val_X, val_lab)
    rows.append(
        {
            **base,
            "method": "zero-shot, threshold from the validation split",
            "threshold": z.threshold_,
            **_oos_metrics(z.predict(test_in), y_in, z.predict(test_oos)),
        }
    )
    return rows


def _multilabel_scores(Y: np.ndarray, S: np.ndarray, threshold: float, ap: bool = True) -> dict:
    """mAP = mean over labels of average precision (threshold-free); F1s of the tags at ``threshold``."""
    pred = (S >= threshold).astype(int)
    present = Y.sum(axis=0) > 0
    return {
        "mAP": float(average_precision_score(Y[:, present], S[:, present], average="macro")) if ap else None,
        "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
        "threshold": float(threshold),
        "mean_tags_per_item": float(pred.sum(axis=1).mean()),
        "share_with_no_tag": float((pred.sum(axis=1) == 0).mean()),
    }


def _best_f1_threshold(Y: np.ndarray, S: np.ndarray) -> float:
    grid = np.quantile(S, np.linspace(0.5, 0.999, 300))
    return float(max(grid, key=lambda t: f1_score(Y, (S >= t).astype(int), average="micro", zero_division=0)))


def multilabel(embed: Embedder, seeds: int) -> list[dict]:
    ds = load("goemotions")
    dev_texts, Ydev = ds.extra["dev"]
    test, Y = ds.test_texts, ds.test_labels
    embed(test + dev_texts)
    rows = []
    z = ZeroShotClassifier(ds.label_names, encoder=embed.cached, adapt="none").fit()
    S, Sdev = given_order(z, z.class_scores(test)), given_order(z, z.class_scores(dev_texts))  # Y's columns
    t_dev = _best_f1_threshold(Ydev, Sdev)
    rows.append({"method": "zero-shot, a fixed 0.2 cosine", **_multilabel_scores(Y, S, 0.2)})
    rows.append({"method": "zero-shot, threshold from the validation split", **_multilabel_scores(Y, S, t_dev)})
    top1 = np.where(S >= S.max(axis=1, keepdims=True), S, -np.inf)  # tag(top_k=1, threshold=-1): one tag each
    rows.append({"method": "zero-shot, top_k=1 (one tag an item)", **_multilabel_scores(Y, top1, -1.0, ap=False)})
    # few-shot: 8 items of each label (an item with two labels serves both), one prototype per label
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = []
        for j in range(Y.shape[1]):
            idx = np.flatnonzero(ds.train_labels[:, j])
            chosen.extend(rng.choice(idx, size=min(8, len(idx)), replace=False).tolist())
        chosen = sorted(set(chosen))
        pairs = [(i, j) for i in chosen for j in np.flatnonzero(ds.train_labels[i])]
        X = [ds.train_texts[i] for i, _ in pairs]
        yl = [ds.label_names[j] for _, j in pairs]
        c = FewShotClassifier(encoder=embed.cached, lexical=False).fit(X, yl)
        order = [c.classes_.tolist().index(n) for n in ds.label_names]
        St = c.class_scores(test)[:, order]
        # threshold from the support alone: leave-one-out scores of each support item against every label
        Es = l2_normalize(embed([ds.train_texts[i] for i in chosen]).astype(np.float64))
        Ys = ds.train_labels[chosen].astype(int)
        sums = Ys.T @ Es
        loo = np.zeros_like(Ys, dtype=np.float64)
        for r in range(len(chosen)):
            own = sums - np.outer(Ys[r], Es[r])
            loo[r] = l2_normalize(own) @ Es[r]
        t_sup = _best_f1_threshold(Ys, loo)
        rows.append(
            {
                "method": "few-shot prototypes (8 a label), threshold from the support set",
                "seed": seed,
                "support_items": len(chosen),
                **_multilabel_scores(Y, St, t_sup),
            }
        )
        top1 = np.where(St >= St.max(axis=1, keepdims=True), St, -np.inf)
        rows.append(
            {
                "method": "few-shot prototypes (8 a label), top_k=1",
                "seed": seed,
                "support_items": len(chosen),
                **_multilabel_scores(Y, top1, -1.0, ap=False),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="datasets folder (default: $FEWSHOT_DATA or ../shared/data)")
    ap.add_argument("--part", nargs="+", default=["techniques", "calibration", "oos", "multilabel"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--note")
    a = ap.parse_args()
    if a.data:
        os.environ["FEWSHOT_DATA"] = a.data
    embed = Embedder(TextEncoder())
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "encoder": "all-MiniLM-L6-v2 (bundled)",
        "command": " ".join(["python -m eval.run_zeroshot"] + sys.argv[1:]),
        "note": a.note,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    for part in a.part:
        t = time.perf_counter()
        if part == "techniques":
            data = {"rows": techniques(TARGETS + DEV, embed), "targets": TARGETS, "dev": DEV}
        elif part == "calibration":
            data = calibration(embed, a.seeds)
        elif part == "oos":
            data = {"rows": oos(embed, a.seeds)}
        elif part == "multilabel":
            data = {"rows": multilabel(embed, a.seeds)}
        else:
            raise SystemExit(f"unknown part {part!r}")
        out = {**meta, "part": part, "seconds": time.perf_counter() - t, **data}
        (RESULTS / f"text_zeroshot_{part}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"{part}: {out['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
