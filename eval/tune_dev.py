"""The development sweep that ``tune="auto"`` was chosen on: learning curves of the contrastive tune.

    python -m eval.tune_dev                      # the development group, N=8 and N=64, seeds 0-1 (hours)
    python -m eval.tune_dev --datasets sst2 --shots 8 --seeds 1

Only development datasets (``DEV_DATASETS``; the report group of ``eval/run_finetune.py`` is never read
here). For each dataset, support size N, seed and learning rate, one tune runs for the largest number of
epochs asked for, and at each epoch checkpoint the tuned body re-encodes the support set and a capped test
split and every head is fitted on it: so one tune gives the whole curve. Rows are appended to
``eval/results/tune_dev.jsonl`` as they are measured, and a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np

from eval.datasets import load, sample_per_class
from eval.peers import scores
from eval.run_text import RESULTS, machine
from eval.sampling import capped_subsample
from fewshot import TextEncoder, ZeroShotClassifier
from fewshot.classifiers.few_shot import PRIOR_TEMPERATURE, PRIOR_TEMPLATES
from fewshot.encoders.base import weights_sha256
from fewshot.heads import AutoHead, CacheAdapterHead, LinearHead, PrototypeHead
from fewshot.labels import encode_labels
from fewshot.tuning import AUTO_TEMPERATURE, _batches, train_step

# the development group: tuning schedules and heads are chosen here and only here
DEV_DATASETS = ["sst2", "subj", "banking77", "mr", "clinc150", "20newsgroups", "goemotions_ekman", "goemotions_group"]


def dev_support_sets(names: list[str], shots: list[int], seeds: int, test_cap: int):
    """Each development dataset's seeded support sets with its capped test split: yields (dataset,
    TextDataset, test indices, N, seed, support texts, support label names), dataset by dataset."""
    for name in names:
        ds = load(name)
        test_idx = capped_subsample(ds.test_labels, test_cap)
        for n in shots:
            for seed in range(seeds):
                support = sample_per_class(ds.train_labels, n, seed)
                texts = [ds.train_texts[i] for i in support]
                labels = [ds.label_names[i] for i in ds.train_labels[support]]
                yield name, ds, test_idx, n, seed, texts, labels


def dev_encoder(names: list[str]) -> TextEncoder:
    """The bundled encoder, warmed up, once every name in ``names`` is checked to be a development dataset."""
    for name in names:
        if name not in DEV_DATASETS:
            raise SystemExit(f"{name} is not in the development group {DEV_DATASETS}")
    base = TextEncoder()
    base.encode(["warm up"])
    return base


OUT = RESULTS / "tune_dev.jsonl"


def head_scores(Es, ys, Et, yt, prior_s, prior_t, C) -> dict[str, float]:
    out = {}
    for name, head, with_prior in [
        ("prototype", PrototypeHead(), False),
        ("linear", LinearHead(), False),
        ("cache", CacheAdapterHead(), True),
        ("auto", AutoHead(), True),
    ]:
        if with_prior:
            pred = head.fit(Es, ys, prior=prior_s).predict(Et, prior=prior_t)
        else:
            pred = head.fit(Es, ys).predict(Et)
        out[name] = scores(yt, pred, C)["accuracy"]
    return out


def curve(ds, shots, seed, lr, batch_size, checkpoints, test_texts, yt, max_seq) -> list[dict]:
    import torch

    base = TextEncoder()
    support = sample_per_class(ds.train_labels, shots, seed)
    texts, ys = [ds.train_texts[i] for i in support], ds.train_labels[support]
    codes = encode_labels(ys, np.unique(ys))
    model = copy.deepcopy(base.model)
    if max_seq:
        model.max_seq_length = max_seq
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, math.ceil(len(texts) / batch_size))
    rows, done, tune_s = [], 0, 0.0
    torch.manual_seed(seed)
    for epochs in [0, *checkpoints]:
        steps = epochs * steps_per_epoch - done
        t = time.perf_counter()
        model.train()
        for batch in _batches(codes, batch_size, steps, rng):
            train_step(model, optimiser, [texts[i] for i in batch], codes[batch], AUTO_TEMPERATURE)
        model.eval()
        tune_s += time.perf_counter() - t
        done += steps
        enc = TextEncoder(model)
        if max_seq:
            model.max_seq_length = 256
        enc._sha = weights_sha256(model)
        Es, Et = enc.encode(texts), enc.encode(test_texts, batch_size=128)
        zs = ZeroShotClassifier(
            list(ds.label_names),
            encoder=enc,
            templates=PRIOR_TEMPLATES,
            temperature=PRIOR_TEMPERATURE,
            expand="none",
            frame="none",  # as the few-shot label prior builds it
            pool="mean",
        ).fit()
        acc = head_scores(Es, ys, Et, yt, zs.label_scores(Es), zs.label_scores(Et), len(ds.label_names))
        if max_seq:
            model.max_seq_length = max_seq
        rows.append(
            {
                "dataset": ds.name,
                "shots": shots,
                "seed": seed,
                "lr": lr,
                "batch_size": batch_size,
                "max_seq": max_seq,
                "epochs": epochs,
                "steps": done,
                "support": len(texts),
                "tune_s": round(tune_s, 1),
                **{f"acc_{k}": v for k, v in acc.items()},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        with OUT.open("a") as f:  # each point as it is measured: a stopped sweep keeps what it measured
            f.write(json.dumps({**rows[-1], "machine": machine(), "test_size": len(yt)}) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=DEV_DATASETS)
    ap.add_argument("--shots", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--lrs", nargs="+", type=float, default=[2e-5, 5e-5])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--checkpoints", nargs="+", type=int, default=[2, 5, 10, 20])
    ap.add_argument("--max-seq", type=int, default=0, help="tokens kept while tuning (0: the body's own)")
    ap.add_argument("--test-cap", type=int, default=1000)
    a = ap.parse_args()
    assert all(d in DEV_DATASETS for d in a.datasets), "only development datasets are swept here"
    seen = set()
    if OUT.exists():
        for line in OUT.read_text().splitlines():
            r = json.loads(line)
            seen.add((r["dataset"], r["shots"], r["seed"], r["lr"], r["batch_size"], r["max_seq"], r["epochs"]))
    for name in a.datasets:
        ds = load(name)
        test_idx = capped_subsample(ds.test_labels, a.test_cap)
        test_texts, yt = [ds.test_texts[i] for i in test_idx], ds.test_labels[test_idx]
        for shots in a.shots:
            for seed in range(a.seeds):
                for lr in a.lrs:
                    key = (name, shots, seed, lr, a.batch_size, a.max_seq)
                    if all((*key, e) in seen for e in [0, *a.checkpoints]):
                        continue
                    curve(ds, shots, seed, lr, a.batch_size, a.checkpoints, test_texts, yt, a.max_seq)


if __name__ == "__main__":
    main()
