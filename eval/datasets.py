"""Loaders for the labelled datasets in ``../shared/data`` (each folder's README.txt gives the format).

The data folder is a setting: ``--data`` on the command lines, or ``FEWSHOT_DATA``; by default the
``shared/data`` folder beside the checkout. Loaders return a :class:`TextDataset` with the official
train/test split, or a seeded stratified split where the source has none (stated in ``split_note``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SPLIT_SEED = 1234  # the seed of every split made here, so each is the same on every machine


def data_dir(path: str | Path | None = None) -> Path:
    """The datasets folder: ``path``, else ``$FEWSHOT_DATA``, else ``../shared/data`` beside the repo."""
    p = Path(path or os.environ.get("FEWSHOT_DATA") or REPO.parent / "shared" / "data")
    if not p.is_dir():
        raise FileNotFoundError(f"datasets folder {p} not found; pass --data or set FEWSHOT_DATA")
    return p


@dataclass
class TextDataset:
    """Texts and integer labels for train and test; ``label_names[i]`` names label ``i``."""

    name: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: list[str]
    split_note: str = "official split"
    extra: dict = field(default_factory=dict)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class is shuffled with ``seed`` and its last ``test_fraction`` is test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _label_text_lines(path: Path, encoding: str = "utf-8") -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for line in path.read_text(encoding=encoding).splitlines():
        label, _, text = line.partition(" ")
        if text.strip():
            texts.append(text.strip())
            labels.append(int(label))
    return texts, np.asarray(labels)


def load_sst2(root: Path) -> TextDataset:
    tr, ytr = _label_text_lines(root / "sst2" / "stsa.binary.train")
    te, yte = _label_text_lines(root / "sst2" / "stsa.binary.test")
    return TextDataset("sst2", tr, ytr, te, yte, ["negative", "positive"])


def load_emotion(root: Path) -> TextDataset:
    def read(split: str) -> tuple[list[str], np.ndarray]:
        rows = [json.loads(x) for x in (root / "emotion" / f"setfit_{split}.jsonl").read_text().splitlines() if x.strip()]
        return [r["text"] for r in rows], np.asarray([int(r["label"]) for r in rows])

    tr, ytr = read("train")
    te, yte = read("test")
    return TextDataset("emotion", tr, ytr, te, yte, ["sadness", "joy", "love", "anger", "fear", "surprise"])


def load_ag_news(root: Path) -> TextDataset:
    texts, labels = [], []
    with open(root / "ag_news" / "test.csv", newline="", encoding="utf-8") as f:
        for cls, title, desc in csv.reader(f):
            texts.append(f"{title} {desc}".replace("\\", " ").strip())
            labels.append(int(cls) - 1)
    y = np.asarray(labels)
    tr, te = stratified_split(y, 0.5)
    return TextDataset(
        "ag_news",
        [texts[i] for i in tr],
        y[tr],
        [texts[i] for i in te],
        y[te],
        ["World", "Sports", "Business", "Sci/Tech"],
        split_note=f"only the official test split ships here: split 50/50 per class with seed {SPLIT_SEED}",
    )


LOADERS: dict[str, Callable[[Path], TextDataset]] = {"sst2": load_sst2, "emotion": load_emotion, "ag_news": load_ag_news}


def load(name: str, root: str | Path | None = None) -> TextDataset:
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](data_dir(root))


def sample_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` examples of every class (all of a class that has fewer), drawn with ``seed``.

    The same (labels, n, seed) always gives the same indices, so every method sees the same support set.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))
