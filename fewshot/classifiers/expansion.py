"""Label names widened with the encoder's own vocabulary: zero-shot text classification with no corpus.

A label name is one short phrase, and a sentence about the label often shares little of its wording ("joy"
against "what a wonderful surprise"). Each label vector is moved half-way towards the mean of the
:data:`EXPANSION_WORDS` words of the encoder's tokenizer vocabulary whose embeddings are closest to the
label's name, each word's closeness first lowered by :data:`OTHER_LABEL_PENALTY` times its closeness to the
nearest other label's name (so that "positive" is not added to "negative"). It needs nothing but the label
names: no corpus, no labelled data.

It is left out where it does not fit (:func:`skip_reason`): where a label has a description (the user's own
words beat the neighbourhood of a name), or where one label's name holds another's ("counterfactual" and
"not counterfactual", "card payment" and "card payment fee": the neighbours of such names are the same
words), and for encoders without a word vocabulary (images, CLIP).

The vocabulary's embeddings are computed once per encoder (about 21,000 words, 12 s for the bundled MiniLM
on 2 CPU cores) and kept under ``$FEWSHOT_HOME/vocab/`` (see :mod:`fewshot.encoders.derived`), so later fits
on the machine read them in milliseconds. ``eval/zeroshot_templates.py`` measures the settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from typing import Any

import numpy as np

from fewshot.maths import l2_normalize

EXPAND_METHODS = ("auto", "none")
EXPANSION_WORDS = 20
EXPANSION_WEIGHT = 0.5
OTHER_LABEL_PENALTY = 0.5
MIN_VOCABULARY = 1000  # fewer whole words than this: a tokenizer of word pieces or characters, not expanded
_WORD = re.compile(r"(?:\u2581|\u0120)?([a-z]{3,})")  # a whole word, with a SentencePiece or byte-BPE start mark

_CACHE: dict[str, tuple[list[str], np.ndarray] | None] = {}  # encoder fingerprint -> its words
_LOCK = threading.Lock()


def vocabulary_words(vocab: dict[str, int] | None) -> list[str]:
    """The whole lower-case words of three letters or more in a tokenizer vocabulary (token -> id), in id
    order (roughly the most frequent first), each once."""
    if not vocab:
        return []
    found: dict[str, int] = {}
    for token, i in vocab.items():
        m = _WORD.fullmatch(token)
        if m and found.get(m.group(1), i + 1) > i:
            found[m.group(1)] = i
    return sorted(found, key=found.__getitem__)


def skip_reason(labels: dict[Any, list[str]], encoder: Any) -> str | None:
    """Why the label names in ``labels`` (name -> descriptions) are not expanded for ``encoder``, or None."""
    if encoder.modality != "text":
        return "the encoder reads images"
    if len(labels) < 2:
        return "one label"
    if any(labels.values()):
        return "labels have descriptions"
    names = [str(n).strip().lower() for n in labels]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a in b or b in a:
                return "one label's name holds another's"
    return None


def word_vectors(encoder: Any) -> tuple[list[str], np.ndarray] | None:
    """The encoder's vocabulary words and their unit embeddings (float16), or None when it has too few.

    Computed once per encoder and machine: kept in this process, and under ``$FEWSHOT_HOME/vocab/`` (a file
    that cannot be written there is only a cost, never an error)."""
    from fewshot.encoders.identity import identity_fingerprint

    fingerprint = identity_fingerprint(encoder.identity)
    with _LOCK:
        if fingerprint not in _CACHE:
            _CACHE[fingerprint] = _word_vectors(encoder, fingerprint)
        return _CACHE[fingerprint]


def _word_vectors(encoder: Any, fingerprint: str) -> tuple[list[str], np.ndarray] | None:
    words = vocabulary_words(encoder.vocabulary())
    if len(words) < MIN_VOCABULARY:
        return None
    digest = hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()[:12]  # a new tokenizer: a new file
    key = f"{fingerprint}-{digest}"
    W = _read(key, len(words), encoder.dim)
    if W is None:
        W = l2_normalize(encoder.encode_text(words)).astype(np.float16)
        _write(key, W)
    return words, W


def _path(key: str) -> Any:
    from fewshot.encoders.derived import fewshot_home

    return fewshot_home() / "vocab" / f"{key}.npy"


def _read(key: str, rows: int, dim: int) -> np.ndarray | None:
    try:
        W = np.load(_path(key), allow_pickle=False)
    except (OSError, ValueError):  # absent, unreadable or damaged: computed again
        return None
    if W.shape != (rows, dim) or W.dtype != np.float16 or not np.isfinite(W).all():
        return None
    return W


def _write(key: str, W: np.ndarray) -> None:
    path = _path(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, W, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written costs the embedding next time, nothing more
        with contextlib.suppress(OSError):
            tmp.unlink()


def expand(V: np.ndarray, names: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Label vectors ``V`` (labels, dim) moved by :data:`EXPANSION_WEIGHT` towards the mean of each label's
    :data:`EXPANSION_WORDS` rows of ``W`` (unit word vectors) closest to its name (``names``: the names'
    embeddings) less :data:`OTHER_LABEL_PENALTY` times their closeness to the nearest other label's name;
    unit rows."""
    V, names = l2_normalize(np.asarray(V, dtype=np.float32)), l2_normalize(np.asarray(names, dtype=np.float32))
    S = names @ W.T.astype(np.float32)
    if len(S) < 2:
        raise ValueError("expansion compares each label with the others: it needs two labels or more")
    second, first = np.partition(S, -2, axis=0)[-2:]
    other = np.where(np.arange(len(S))[:, None] == S.argmax(axis=0), second, first)  # the best of the others
    top = np.argsort(-(S - OTHER_LABEL_PENALTY * other), axis=1, kind="stable")[:, :EXPANSION_WORDS]
    N = l2_normalize(W[top].astype(np.float32).mean(axis=1))
    return l2_normalize((1 - EXPANSION_WEIGHT) * V + EXPANSION_WEIGHT * N)
