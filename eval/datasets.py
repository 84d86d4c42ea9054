"""Loaders for the labelled datasets in ``../shared/data`` (each folder's README.txt gives the format).

The data folder is a setting: ``--data`` on the command lines, or ``FEWSHOT_DATA``; by default the
``shared/data`` folder beside the checkout. Loaders return a :class:`TextDataset` with the official
train/test split, or a seeded stratified split where the source has none (stated in ``split_note``).
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
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


def stratified_split(labels: np.ndarray, test: float | int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class is shuffled with ``seed`` and its first share goes to test.

    ``test`` is a fraction of every class, or a total number of test rows shared out in proportion.
    """
    rng = np.random.default_rng(seed)
    fraction = test if isinstance(test, float) else test / len(labels)
    train, test_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * fraction))
        test_idx.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test_idx))


def _label_text_lines(path: Path, encoding: str = "utf-8") -> tuple[list[str], np.ndarray]:
    """Lines of ``<label> <text>``; lines with a label and no text are dropped."""
    texts, labels = [], []
    # split on "\n" only: str.splitlines also breaks on characters such as U+0085 found inside MR's text
    for line in path.read_text(encoding=encoding).split("\n"):
        label, _, text = line.partition(" ")
        if text.strip():
            texts.append(text.strip())
            labels.append(int(label))
    return texts, np.asarray(labels)


def _split_dataset(name, texts, y, label_names, test, note_extra="") -> TextDataset:
    """A dataset with no official split: a seeded stratified one (``test`` = fraction or row count)."""
    tr, te = stratified_split(y, test)
    what = f"{test:.0%} of each class" if isinstance(test, float) else f"{test} rows, in class proportion,"
    note = f"no official split: {what} held out as test, seed {SPLIT_SEED}{note_extra}"
    return TextDataset(name, [texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te], label_names, note)


def load_sst2(root: Path) -> TextDataset:
    tr, ytr = _label_text_lines(root / "sst2" / "stsa.binary.train")
    te, yte = _label_text_lines(root / "sst2" / "stsa.binary.test")
    return TextDataset("sst2", tr, ytr, te, yte, ["negative", "positive"])


def load_sst5(root: Path) -> TextDataset:
    tr, ytr = _label_text_lines(root / "sst5" / "stsa.fine.train")
    te, yte = _label_text_lines(root / "sst5" / "stsa.fine.test")
    return TextDataset("sst5", tr, ytr, te, yte, ["very negative", "negative", "neutral", "positive", "very positive"])


def load_cr(root: Path) -> TextDataset:
    texts, y = _label_text_lines(root / "cr" / "custrev.all", encoding="latin-1")
    return _split_dataset("cr", texts, y, ["negative", "positive"], 0.2, " (SetFit's CR is 3012/753)")


def load_mr(root: Path) -> TextDataset:
    texts, y = _label_text_lines(root / "mr" / "rt-polarity.all", encoding="latin-1")
    return _split_dataset("mr", texts, y, ["negative", "positive"], 0.2)


def load_subj(root: Path) -> TextDataset:
    texts, y = _label_text_lines(root / "subj" / "subj.all", encoding="latin-1")
    return _split_dataset("subj", texts, y, ["subjective", "objective"], 0.2)


def load_emotion(root: Path) -> TextDataset:
    def read(split: str) -> tuple[list[str], np.ndarray]:
        lines = (root / "emotion" / f"setfit_{split}.jsonl").read_text(encoding="utf-8").split("\n")
        rows = [json.loads(x) for x in lines if x.strip()]
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
        split_note=f"only the official test split (7,600) ships here: split 50/50 per class with seed {SPLIT_SEED}",
    )


def load_amazon_counterfactual(root: Path) -> TextDataset:
    def read(split: str) -> tuple[list[str], np.ndarray]:
        with open(root / "amazon_counterfactual" / "data" / f"EN_{split}.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return [r["sentence"] for r in rows], np.asarray([int(r["is_counterfactual"]) for r in rows])

    tr, ytr = read("train")
    te, yte = read("test")
    return TextDataset("amazon_counterfactual", tr, ytr, te, yte, ["not counterfactual", "counterfactual"])


def load_banking77(root: Path) -> TextDataset:
    names = json.loads((root / "banking77" / "categories.json").read_text(encoding="utf-8"))
    index = {n: i for i, n in enumerate(names)}

    def read(split: str) -> tuple[list[str], np.ndarray]:
        with open(root / "banking77" / f"{split}.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], np.asarray([index[r["category"]] for r in rows])

    tr, ytr = read("train")
    te, yte = read("test")
    return TextDataset("banking77", tr, ytr, te, yte, [n.replace("_", " ") for n in names])


def load_clinc150(root: Path) -> TextDataset:
    """In-scope train/test of data_full; the out-of-scope queries are in ``extra`` (oos_train/val/test)."""
    raw = json.loads((root / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    names = sorted({intent for _, intent in raw["train"]})
    index = {n: i for i, n in enumerate(names)}

    def split(key: str) -> tuple[list[str], np.ndarray]:
        return [t for t, _ in raw[key]], np.asarray([index[i] for _, i in raw[key]])

    tr, ytr = split("train")
    te, yte = split("test")
    extra = {
        "val": split("val"),
        "oos_train": [t for t, _ in raw["oos_train"]],
        "oos_val": [t for t, _ in raw["oos_val"]],
        "oos_test": [t for t, _ in raw["oos_test"]],
    }
    return TextDataset("clinc150", tr, ytr, te, yte, [n.replace("_", " ") for n in names], extra=extra)


def _strip_headers(post: str) -> str:
    """The body of a Usenet post: everything after the first blank line (as sklearn's remove=('headers',))."""
    _, sep, body = post.partition("\n\n")
    return (body if sep else post).strip()


def load_20newsgroups(root: Path) -> TextDataset:
    parts: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    with tarfile.open(root / "20newsgroups" / "20news-bydate.tar.gz") as tar:
        for m in tar:
            bits = m.name.split("/")
            if not m.isfile() or len(bits) != 3:
                continue
            split = "train" if bits[0].endswith("train") else "test"
            body = _strip_headers(tar.extractfile(m).read().decode("latin-1"))
            parts[split][0].append(body or "(empty)")
            parts[split][1].append(bits[1])
    names = sorted(set(parts["train"][1]))
    index = {n: i for i, n in enumerate(names)}
    return TextDataset(
        "20newsgroups",
        parts["train"][0],
        np.asarray([index[n] for n in parts["train"][1]]),
        parts["test"][0],
        np.asarray([index[n] for n in parts["test"][1]]),
        names,
        split_note="official bydate split; headers stripped (the text after the first blank line)",
    )


def load_enron_spam(root: Path) -> TextDataset:
    found = []
    with tarfile.open(root / "enron_spam" / "enron_spam_preprocessed.tar.gz") as tar:
        for m in tar:  # archive order: a gzip stream cannot seek back cheaply
            kind = m.name.split("/")[-2] if "/" in m.name else ""
            if m.isfile() and m.name.endswith(".txt") and kind in ("ham", "spam"):
                found.append((m.name, tar.extractfile(m).read().decode("latin-1").strip() or "(empty)", kind))
    found.sort()  # a fixed order whatever order the archive has, so the seeded split is stable
    texts = [t for _, t, _ in found]
    y = np.asarray([int(k == "spam") for _, _, k in found])
    return _split_dataset("enron_spam", texts, y, ["ham", "spam"], 2000, " (as SetFit/enron_spam's 2,000 test)")


def load_goemotions(root: Path) -> TextDataset:
    """Multi-label: labels are indicator arrays of shape (n, 28)."""
    folder = root / "goemotions" / "original"
    names = [x.strip() for x in (folder / "labels.txt").read_text(encoding="utf-8").splitlines() if x.strip()]

    def read(split: str) -> tuple[list[str], np.ndarray]:
        texts, rows = [], []
        for line in (folder / f"{split}.tsv").read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            text, ids, _ = line.split("\t")
            texts.append(text)
            row = np.zeros(len(names), dtype=np.int8)
            row[[int(i) for i in ids.split(",")]] = 1
            rows.append(row)
        return texts, np.vstack(rows)

    tr, ytr = read("train")
    te, yte = read("test")
    note = "official split; multi-label (28); the validation split is in extra['dev']"
    return TextDataset("goemotions", tr, ytr, te, yte, names, split_note=note, extra={"dev": read("dev")})


def _goemotions_single(root: Path, mapping: str, what: str) -> TextDataset:
    """Single-label: the comments of one of GoEmotions' coarse mappings that carry exactly one of its labels."""
    folder = root / "goemotions" / mapping
    names = [x.strip() for x in (folder / "labels.txt").read_text(encoding="utf-8").splitlines() if x.strip()]

    def read(split: str) -> tuple[list[str], np.ndarray]:
        texts, labels = [], []
        for line in (folder / f"{split}.tsv").read_text(encoding="utf-8").split("\n"):
            if line.strip():
                text, ids, _ = line.split("\t")
                if "," not in ids:
                    texts.append(text)
                    labels.append(int(ids))
        return texts, np.array(labels)

    tr, ytr = read("train")
    te, yte = read("test")
    note = f"official split; the comments with exactly one of the {len(names)} {what} labels"
    return TextDataset(f"goemotions_{mapping}", tr, ytr, te, yte, names, split_note=note)


def load_goemotions_ekman(root: Path) -> TextDataset:
    """Single-label: GoEmotions' comments with exactly one Ekman label (six emotions and neutral)."""
    return _goemotions_single(root, "ekman", "Ekman")


def load_goemotions_group(root: Path) -> TextDataset:
    """Single-label: GoEmotions' comments with exactly one sentiment-group label (positive, negative,
    ambiguous, neutral)."""
    return _goemotions_single(root, "group", "sentiment-group")


LOADERS: dict[str, Callable[[Path], TextDataset]] = {
    "sst2": load_sst2,
    "sst5": load_sst5,
    "cr": load_cr,
    "mr": load_mr,
    "subj": load_subj,
    "emotion": load_emotion,
    "ag_news": load_ag_news,
    "amazon_counterfactual": load_amazon_counterfactual,
    "banking77": load_banking77,
    "clinc150": load_clinc150,
    "20newsgroups": load_20newsgroups,
    "enron_spam": load_enron_spam,
    "goemotions": load_goemotions,
    "goemotions_ekman": load_goemotions_ekman,
    "goemotions_group": load_goemotions_group,
}


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


# -- images ---------------------------------------------------------------------------------------------
@dataclass
class ImageDataset:
    """Images as uint8 arrays of shape (n, H, W, 3) and integer labels; ``label_names[i]`` names label i."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: list[str]
    split_note: str = "official split"


def _jpeg_folders(tar_path: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Decode every JPEG of a ``<split>/<class>/<file>.jpg`` archive, keyed by split, sorted by path."""
    from PIL import Image

    out: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar:
            bits = m.name.strip("./").split("/")
            if not m.isfile() or not m.name.lower().endswith(".jpg") or len(bits) < 3:
                continue
            with Image.open(tar.extractfile(m)) as im:
                arr = np.asarray(im.convert("RGB"))
            out.setdefault(bits[-3], []).append((m.name, bits[-2], arr))
    return {split: sorted(rows, key=lambda r: r[0]) for split, rows in out.items()}


def _image_split(rows, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    return np.stack([r[2] for r in rows]), np.asarray([index[r[1]] for r in rows])


def load_cifar10(root: Path) -> ImageDataset:
    test = _jpeg_folders(root / "cifar10" / "cifar10_test_jpg.tar.gz")["test"]
    train = _jpeg_folders(root / "cifar10" / "cifar10_train100_jpg.tar.gz")["train"]
    names = sorted({r[1] for r in test})
    (Xtr, ytr), (Xte, yte) = _image_split(train, names), _image_split(test, names)
    return ImageDataset("cifar10", Xtr, ytr, Xte, yte, names, "test: official 10,000; train: first 100 of each class")


def load_eurosat(root: Path) -> ImageDataset:
    parts = _jpeg_folders(root / "eurosat" / "eurosat_subset_jpg.tar.gz")
    names = sorted({r[1] for r in parts["train"]})
    (Xtr, ytr), (Xte, yte) = _image_split(parts["train"], names), _image_split(parts["test"], names)
    return ImageDataset("eurosat", Xtr, ytr, Xte, yte, names, "subset: 100 a class of the seed-42 train and test")


def load_mnist(root: Path) -> ImageDataset:
    """MNIST test set only (10,000): split 50/50 per class with the fixed seed; digits become RGB."""
    import gzip

    raw = gzip.decompress((root / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    lab = gzip.decompress((root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    if int.from_bytes(raw[:4], "big") != 0x803 or int.from_bytes(lab[:4], "big") != 0x801:
        raise ValueError("MNIST files do not start with the IDX magic numbers")
    n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
    y = np.frombuffer(lab, dtype=np.uint8, offset=8).astype(np.int64)
    images = np.repeat(images[..., None], 3, axis=3)
    tr, te = stratified_split(y, 0.5)
    note = f"only the official test set ships here: split 50/50 per class with seed {SPLIT_SEED}"
    return ImageDataset("mnist", images[tr], y[tr], images[te], y[te], [str(d) for d in range(10)], note)


IMAGE_LOADERS: dict[str, Callable[[Path], ImageDataset]] = {
    "cifar10": load_cifar10,
    "eurosat": load_eurosat,
    "mnist": load_mnist,
}


def load_images(name: str, root: str | Path | None = None) -> ImageDataset:
    if name not in IMAGE_LOADERS:
        raise KeyError(f"unknown image dataset {name!r}; known: {', '.join(sorted(IMAGE_LOADERS))}")
    return IMAGE_LOADERS[name](data_dir(root))
