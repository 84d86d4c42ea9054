"""The systems users would otherwise pick, run on exactly our splits: SetFit 1.2.0 and TF-IDF + LR.

SetFit runs are slow on a CPU (minutes a fit), so each (dataset, shots, seed) result is stored in
``eval/results/setfit/`` with its predictions, and reused unless a rerun is asked for. A fit in progress
checkpoints to ``eval/cache/setfit_checkpoints/``; rerunning the same command resumes it there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from eval.datasets import TextDataset, sample_per_class
from eval.metrics import accuracy, macro_f1, mcc

RESULTS = Path(__file__).resolve().parent / "results"
SETFIT_DIR = RESULTS / "setfit"
SETFIT_DATASETS = ["sst5", "amazon_counterfactual", "cr", "emotion", "enron_spam", "ag_news"]

# Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", Table 2 (SetFit with the MPNet body);
# accuracy, except Amazon CF (Matthews correlation). Published, not measured here.
PUBLISHED_SETFIT_MPNET = {
    8: {"sst5": 43.6, "amazon_counterfactual": 40.3, "cr": 88.5, "emotion": 48.8, "enron_spam": 90.1, "ag_news": 82.9},
    64: {"sst5": 51.9, "amazon_counterfactual": 61.9, "cr": 90.4, "emotion": 76.2, "enron_spam": 96.1, "ag_news": 88.0},
}


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "mcc": mcc(y_true, y_pred, n_classes),
    }


def tfidf_lr(ds: TextDataset, support: np.ndarray, test_idx: np.ndarray) -> dict:
    """Logistic regression on word and bigram TF-IDF of the support set: the classic baseline."""
    t = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    X = vec.fit_transform([ds.train_texts[i] for i in support])
    model = LogisticRegression(C=10.0, max_iter=2000).fit(X, ds.train_labels[support])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.predict(vec.transform([ds.test_texts[i] for i in test_idx]))
    predict_s = time.perf_counter() - t
    out = scores(ds.test_labels[test_idx], pred, len(ds.label_names))
    return {**out, "fit_s": fit_s, "items_per_s": len(test_idx) / predict_s}


def setfit_path(dataset: str, shots: int, seed: int) -> Path:
    return SETFIT_DIR / f"{dataset}_n{shots}_seed{seed}.json"


def setfit_cached(dataset: str, shots: int, seed: int) -> dict | None:
    p = setfit_path(dataset, shots, seed)
    return json.loads(p.read_text()) if p.exists() else None


# A long SetFit fit (Enron at N=64: 520 steps of 256-token pairs, about 3 hours on one core here) may outlive
# the process that started it; with a checkpoint folder it saves every SAVE_STEPS steps and a rerun of the
# same (dataset, shots, seed) resumes from the last save through the Trainer's own resume_from_checkpoint,
# which restores weights, optimizer, schedule, RNG states and the position in the pair order.
SAVE_STEPS = 20
CHECKPOINTS = Path(__file__).resolve().parent / "cache" / "setfit_checkpoints"


def _fit_and_score(
    ds: TextDataset, train, seed: int, test_idx: np.ndarray, checkpoints: Path | None = None, **training_args
) -> dict:
    """Fit SetFit (bundled MiniLM body) on ``train`` and score it on ``test_idx``: the fields every stored
    SetFit result shares, the test predictions included. With ``checkpoints`` the body's training saves to
    (and resumes from) that folder, which the caller removes once the result is stored; ``fit_s`` then adds
    up the parts, each listed in ``fit_parts`` with its steps, seconds and threads. Callers set HF_HUB_OFFLINE
    before importing anything of Hugging Face's (it is read at import time)."""
    import torch
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import TrainerCallback

    from fewshot.encoders.identity import identity_fingerprint
    from fewshot.encoders.text import bundled_model_path

    parts: list[dict] = []
    resume = None
    if checkpoints is not None:
        # checkpoints of a different support set or different arguments are not this fit's: start over
        run = {"seed": seed, "training_args": training_args, "support": identity_fingerprint(train.to_dict())}
        if (checkpoints / "run.json").is_file() and json.loads((checkpoints / "run.json").read_text()) == run:
            # the newest checkpoint whose save finished (fit_parts.json is written last)
            saved = [c for c in checkpoints.glob("checkpoint-*") if (c / "fit_parts.json").is_file()]
            resume = str(max(saved, key=lambda c: int(c.name.split("-")[1]))) if saved else None
        else:
            shutil.rmtree(checkpoints, ignore_errors=True)
            checkpoints.mkdir(parents=True)
            (checkpoints / "run.json").write_text(json.dumps(run))
        if resume is not None:
            parts = json.loads((Path(resume) / "fit_parts.json").read_text())
            print(f"resuming SetFit from {resume}", flush=True)
    threads = torch.get_num_threads()
    t = time.perf_counter()
    start_step = parts[-1]["to_step"] if parts else 0

    def this_part(step: int) -> dict:
        return {"from_step": start_step, "to_step": step, "seconds": time.perf_counter() - t, "threads": threads}

    class RecordParts(TrainerCallback):
        """Writes the fit time so far into each checkpoint, so a resumed fit reports the whole of it."""

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / "fit_parts.json").write_text(json.dumps([*parts, this_part(state.global_step)]))

    with tempfile.TemporaryDirectory() as tmp:
        model = SetFitModel.from_pretrained(str(bundled_model_path()))
        if checkpoints is None:
            save = {"output_dir": tmp, "save_strategy": "no"}
        else:
            save = {"output_dir": str(checkpoints), "save_strategy": "steps", "save_steps": SAVE_STEPS}
            save["save_total_limit"] = 2  # the older one is still whole while the newer is being written
        args = TrainingArguments(seed=seed, show_progress_bar=False, **save, **training_args)
        trainer = Trainer(model=model, args=args, train_dataset=train)
        if checkpoints is not None:
            trainer.st_trainer.add_callback(RecordParts())
            # SetFit's train() calls the body's trainer without arguments; hand it the checkpoint to resume
            body_train = trainer.st_trainer.train
            trainer.st_trainer.train = lambda: body_train(resume_from_checkpoint=resume)
        trainer.train()
        parts.append(this_part(trainer.st_trainer.state.global_step))
        fit_s = sum(p["seconds"] for p in parts)
    texts = [ds.test_texts[i] for i in test_idx]
    t = time.perf_counter()
    pred = np.asarray(model.predict(texts, batch_size=64))
    predict_s = time.perf_counter() - t
    return {
        "test_size": int(len(test_idx)),
        **scores(ds.test_labels[test_idx], pred, len(ds.label_names)),
        "fit_s": fit_s,
        **({"fit_parts": parts} if checkpoints is not None else {}),
        "items_per_s": len(texts) / predict_s,
        "setfit_version": __import__("setfit").__version__,
        "body": "all-MiniLM-L6-v2 (bundled)",
        "predictions": [int(v) for v in pred],
    }


# SetFit's default pair sampling ("oversampling") takes every pair of support examples, so the number of
# pairs grows with the square of the support: 81,920 pairs (5,120 steps) for SST-5 at N=64, 122,880 for
# Emotion, 3 to 5 hours a fit on one core here. The SetFit paper trained on R=20 positive and 20 negative
# pairs per example; where the default would take more than PAIRS_OVER_PAPER times that, the run uses the
# paper's setting. That leaves every N=8 run and the binary N=64 runs (ratio 1.6) on the defaults and moves
# the multi-class N=64 runs (ratio 4.8 to 6.4) to the paper's R.
PAPER_PAIRS_PER_EXAMPLE = 20
PAIRS_OVER_PAPER = 2


def default_pair_count(labels: np.ndarray) -> int:
    """Pairs SetFit 1.2.0's default sampler makes for these labels: every pair with replacement (an
    example with itself included), positives and negatives each oversampled to the larger count."""
    counts = np.bincount(np.asarray(labels)).astype(np.int64)
    positive = int((counts * (counts + 1) // 2).sum())
    negative = int((counts.sum() ** 2 - (counts**2).sum()) // 2)
    return 2 * max(positive, negative)


def setfit_training_args(labels: np.ndarray) -> dict:
    """The TrainingArguments a few-shot SetFit run departs from its defaults with (see PAIRS_OVER_PAPER)."""
    paper = 2 * PAPER_PAIRS_PER_EXAMPLE * len(labels)
    return {"num_iterations": PAPER_PAIRS_PER_EXAMPLE} if default_pair_count(labels) > PAIRS_OVER_PAPER * paper else {}


def setfit_run(ds: TextDataset, shots: int, seed: int, test_idx: np.ndarray) -> dict:
    """Fit SetFit 1.2.0 (default TrainingArguments, the bundled MiniLM body) on our seeded support set.

    Only ``seed`` (SetFit's own training seed), the output folder and, for large multi-class supports, the
    paper's pair count (``setfit_training_args``) differ from the defaults. The result, with the arguments
    and the test predictions, is written to ``eval/results/setfit/``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset

    support = sample_per_class(ds.train_labels, shots, seed)
    labels = ds.train_labels[support]
    train = Dataset.from_dict({"text": [ds.train_texts[i] for i in support], "label": [int(v) for v in labels]})
    training_args = setfit_training_args(labels)
    checkpoints = CHECKPOINTS / f"{ds.name}_n{shots}_seed{seed}"
    result = {
        "dataset": ds.name,
        "shots": shots,
        "seed": seed,
        "support_size": int(len(support)),
        "training_args": training_args,
        **_fit_and_score(ds, train, seed, test_idx, checkpoints=checkpoints, **training_args),
    }
    SETFIT_DIR.mkdir(parents=True, exist_ok=True)
    setfit_path(ds.name, shots, seed).write_text(json.dumps(result) + "\n")
    shutil.rmtree(checkpoints)  # only now: a fit stopped while predicting resumes at its last step
    return result


TIMING = RESULTS / "setfit_timing.json"
PROBE_STEPS = (5, 20)


def setfit_total_steps(labels: np.ndarray, training_args: dict, batch_size: int = 16) -> int:
    """Optimiser steps of a full SetFit 1.2.0 fit: its pairs (every pair by default, or R positive and R
    negative pairs per example with ``num_iterations=R``) in batches of 16, one epoch."""
    R = training_args.get("num_iterations")
    pairs = default_pair_count(labels) if R is None else 2 * R * len(labels)
    return -(-pairs // batch_size)


def setfit_timing(ds: TextDataset, shots: int, seed: int) -> dict:
    """SetFit's fit time on this support set, projected from two short fits timed now.

    A full N=64 fit is 20-90 minutes here, too long to repeat beside every table, and the stored fits were
    timed under whatever else ran then. This fits the same support set with the same arguments, stopped at
    ``PROBE_STEPS[0]`` and then ``PROBE_STEPS[1]`` steps (``max_steps``), each timed whole (model load, pair
    sampling, the body's steps, the head's fit; SetFit imported beforehand): the difference gives seconds a
    step, the rest is the fixed cost, and the projection is fixed + steps x (seconds a step) for the full
    fit's step count.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import setfit  # noqa: F401  imported before the clock starts: a first import is not part of a fit
    import torch
    from datasets import Dataset

    support = sample_per_class(ds.train_labels, shots, seed)
    labels = ds.train_labels[support]
    train = Dataset.from_dict({"text": [ds.train_texts[i] for i in support], "label": [int(v) for v in labels]})
    training_args = setfit_training_args(labels)
    total = setfit_total_steps(labels, training_args)
    load = round(os.getloadavg()[0], 2)
    seconds = []
    for steps in PROBE_STEPS:
        t = time.perf_counter()
        _fit_only(train, seed, max_steps=steps, **training_args)
        seconds.append(time.perf_counter() - t)
    per_step = (seconds[1] - seconds[0]) / (PROBE_STEPS[1] - PROBE_STEPS[0])
    fixed = max(seconds[0] - PROBE_STEPS[0] * per_step, 0.0)
    return {
        "dataset": ds.name,
        "shots": shots,
        "seed": seed,
        "training_args": training_args,
        "total_steps": total,
        "probe_steps": list(PROBE_STEPS),
        "probe_seconds": seconds,
        "seconds_per_step": per_step,
        "fixed_seconds": fixed,
        "projected_fit_s": fixed + total * per_step,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load,
    }


def _fit_only(train, seed: int, **training_args) -> None:
    from setfit import SetFitModel, Trainer, TrainingArguments

    from fewshot.encoders.text import bundled_model_path

    with tempfile.TemporaryDirectory() as tmp:
        model = SetFitModel.from_pretrained(str(bundled_model_path()))
        args = TrainingArguments(
            seed=seed, show_progress_bar=False, output_dir=tmp, save_strategy="no", **training_args
        )
        Trainer(model=model, args=args, train_dataset=train).train()


def setfit_zeroshot_path(dataset: str, seed: int) -> Path:
    return SETFIT_DIR / f"{dataset}_zeroshot_seed{seed}.json"


def setfit_zeroshot_run(ds: TextDataset, seed: int, test_idx: np.ndarray) -> dict:
    """SetFit's zero-shot recipe (its how-to guide): ``get_templated_dataset(candidate_labels=names,
    sample_size=8)`` ("This sentence is {label}", 8 copies per label), then a SetFit fit on that synthetic
    set with ``TrainingArguments(batch_size=32, num_epochs=1)``, the bundled MiniLM body, our seed. The
    same pair cap as the few-shot runs (``setfit_training_args``): of the stored datasets only banking77's
    616 synthetic rows take ``num_iterations=20`` (its default sampling is 11,704 steps, about 3 hours here).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from setfit import get_templated_dataset

    train = get_templated_dataset(candidate_labels=list(ds.label_names), sample_size=8)
    training_args = {"batch_size": 32, "num_epochs": 1, **setfit_training_args(np.asarray(train["label"]))}
    result = {
        "dataset": ds.name,
        "seed": seed,
        "train_size": len(train),
        "training_args": training_args,
        **_fit_and_score(ds, train, seed, test_idx, **training_args),
    }
    SETFIT_DIR.mkdir(parents=True, exist_ok=True)
    setfit_zeroshot_path(ds.name, seed).write_text(json.dumps(result) + "\n")
    return result


def main() -> None:
    """Run (or top up) SetFit results: ``python -m eval.peers --shots 8 --seeds 3``."""
    import argparse

    from eval.datasets import load
    from eval.sampling import capped_subsample

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data")
    ap.add_argument("--datasets", nargs="+", default=SETFIT_DATASETS)
    ap.add_argument("--shots", type=int, nargs="+", default=[8])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1")
    ap.add_argument("--seed", type=int, nargs="+", help="these seeds instead (to split runs across cores)")
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--zeroshot", action="store_true", help="SetFit's templated zero-shot recipe instead")
    ap.add_argument("--timing", action="store_true", help="project fit times from short timed fits (setfit_timing)")
    a = ap.parse_args()
    seeds = a.seed if a.seed is not None else list(range(a.seeds))
    if a.timing:
        stored = json.loads(TIMING.read_text()) if TIMING.exists() else []
        for shots in a.shots:
            for seed in seeds:
                for name in a.datasets:
                    if any((r["dataset"], r["shots"], r["seed"]) == (name, shots, seed) for r in stored):
                        continue
                    r = setfit_timing(load(name, a.data), shots, seed)
                    stored.append(r)
                    TIMING.write_text(json.dumps(stored, indent=1) + "\n")
                    print(f"{name} n={shots} seed={seed}: projected {r['projected_fit_s']:.0f}s", flush=True)
        return
    if a.zeroshot:
        for seed in seeds:
            for name in a.datasets:
                if setfit_zeroshot_path(name, seed).exists() and not a.redo:
                    continue
                ds = load(name, a.data)
                r = setfit_zeroshot_run(ds, seed, capped_subsample(ds.test_labels, a.test_cap))
                print(f"{name} zero-shot seed={seed}: acc {r['accuracy']:.3f} fit {r['fit_s']:.0f}s", flush=True)
        return
    for shots in a.shots:
        for seed in seeds:
            for name in a.datasets:
                if setfit_cached(name, shots, seed) and not a.redo:
                    continue
                ds = load(name, a.data)
                r = setfit_run(ds, shots, seed, capped_subsample(ds.test_labels, a.test_cap))
                print(
                    f"{name} n={shots} seed={seed}: acc {r['accuracy']:.3f} mcc {r['mcc']:.3f} fit {r['fit_s']:.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
