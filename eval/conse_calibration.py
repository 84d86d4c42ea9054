"""How far zero-shot image probabilities (ConSE) are from calibrated, and whether a temperature would mend them.

    python -m eval.conse_calibration        # about 2 minutes on 2 cores, MobileNetV2 over 3,000 images

Zero-shot image classification with the bundled models goes through ConSE in the ImageNet class space: an
image is MobileNetV2's ImageNet probabilities, a label the softmax of its text over the ImageNet class names,
and their scores are small and close together, unlike the cosines of two sentence vectors that the default
zero-shot temperature (``ZEROSHOT_TEMPERATURE``) was fitted on. On EuroSAT's train images, CIFAR-10's train
pool and CIFAR-10's test images, through the library's own path (``ZeroShotClassifier(labels,
encoder=ImageEncoder())``), this reports accuracy, expected calibration error (15 bins) and log-loss at that
default, at the temperature with the lowest log-loss on the same images (an oracle: fitted on the labels it
is scored on) and with the scores normalised to sum to one (no temperature at all).

Written to ``eval/results/conse_calibration.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np

from eval.datasets import load_images
from eval.run_images import label_text
from eval.run_text import RESULTS, machine
from eval.run_zeroshot import given_order
from eval.sampling import capped_subsample
from fewshot import ImageEncoder, ZeroShotClassifier
from fewshot import calibration as cal
from fewshot.classifiers.zero_shot import ZEROSHOT_TEMPERATURE
from fewshot.maths import softmax

SETS = (("eurosat", "train"), ("cifar10", "train"), ("cifar10", "test"))
CAP = 1000  # images of each split scored
GRID = np.geomspace(0.002, 0.5, 200)


def scores(name: str, split: str, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Class scores of the zero-shot classifier on ``split`` of ``name`` (at most CAP images, stratified) and
    their true classes."""
    ds = load_images(name, root)
    images, labels = (ds.train_images, ds.train_labels) if split == "train" else (ds.test_images, ds.test_labels)
    idx = capped_subsample(labels, CAP)
    zs = ZeroShotClassifier([label_text(n) for n in ds.label_names], encoder=ImageEncoder())
    return given_order(zs, zs.class_scores(list(images[idx]))), labels[idx]


def judged(P: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "ece": cal.expected_calibration_error(P, y),
        "nll": float(-np.log(np.clip(P[np.arange(len(y)), y], 1e-12, None)).mean()),
        "mean_top_probability": float(P.max(axis=1).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the shared data folder (default: ../shared/data)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for name, split in SETS:
        S, y = scores(name, split, a.data)
        best = float(min(GRID, key=lambda t: judged(softmax(S, t), y)["nll"]))
        rows.append(
            {
                "dataset": name,
                "split": split,
                "images": len(y),
                "accuracy": float((S.argmax(axis=1) == y).mean()),
                "default": {"temperature": ZEROSHOT_TEMPERATURE, **judged(softmax(S, ZEROSHOT_TEMPERATURE), y)},
                "oracle": {"temperature": best, **judged(softmax(S, best), y)},
                "normalised": judged(S / S.sum(axis=1, keepdims=True), y),
            }
        )
        print(f"{name} {split} done", flush=True)
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": " ".join(["python -m eval.conse_calibration"] + sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    (RESULTS / "conse_calibration.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "conse_calibration.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    lines = [
        "# Zero-shot images: how calibrated ConSE's probabilities are",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. ConSE in the ImageNet class space (bundled "
        "MobileNetV2 and MiniLM), label names only, at most 1,000 images a split (stratified). ECE: 15 "
        "equal-width bins of the top probability. The oracle temperature is fitted on the labels it is scored on.",
        "",
        "| dataset (split) | accuracy | probabilities | temperature | ECE | log-loss | mean top probability |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        for key, title in (
            ("default", "the zero-shot default"),
            ("oracle", "oracle temperature"),
            ("normalised", "scores normalised"),
        ):
            c = r[key]
            t = f"{c['temperature']:.4f}" if "temperature" in c else ""
            lines.append(
                f"| {r['dataset']} ({r['split']}) | {100 * r['accuracy']:.1f} | {title} | {t} | {c['ece']:.3f} | "
                f"{c['nll']:.3f} | {c['mean_top_probability']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
