"""Label names widened with the encoder's own vocabulary: zero-shot text classification with no corpus.

A label name is one short phrase, and a sentence about the label often shares little of its wording ("joy"
against "what a wonderful surprise"). Each label vector is moved half-way towards the mean of the
:data:`EXPANSION_WORDS` words of the encoder's tokenizer vocabulary whose embeddings are closest to the
label's name, each word's closeness first lowered by :data:`OTHER_LABEL_PENALTY` times its closeness to the
nearest other label's name (so that "positive" is not added to "negative"). It needs nothing but the label
names: no corpus, no labelled data.

It is left out where it does not fit (:func:`skip_reason`): where a label has a description (the user's own
words beat the neighbourhood of a name); where one label's name holds another's words ("counterfactual" and
"not counterfactual", "card payment" and "card payment fee": the neighbours of such names are the same
words); where a label's name has no word the tokenizer knows whole (a name in another language, a code, a
number: its neighbours would be chance); and for encoders without a word vocabulary (images, CLIP).
``expansion_`` on the classifier lists the words each label took.

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
import warnings
import zipfile
from typing import Any

import numpy as np

from fewshot.maths import l2_normalize

EXPAND_METHODS = ("auto", "none")
EXPANSION_WORDS = 20
EXPANSION_WEIGHT = 0.5
OTHER_LABEL_PENALTY = 0.5
MIN_VOCABULARY = 1000  # fewer whole words than this: a tokenizer of word pieces or characters, not expanded
COMPUTE_WAIT = 600.0  # seconds a process waits for another computing the same vocabulary before doing it too
_WORD = re.compile(r"[a-z]{3,}")
_STARTS = ("\u2581", "\u0120")  # SentencePiece's and byte-level BPE's marks of a token that starts a word
_NAME_WORDS = re.compile(r"[^\W\d_]+|\d+")  # a label name's words ("card_payment_fee": card, payment, fee)

_CACHE: dict[str, tuple[list[str], np.ndarray] | None] = {}  # encoder fingerprint -> its words and vectors
_LOCKS: dict[str, threading.Lock] = {}  # one an encoder: a warm encoder does not wait for another's vocabulary
_LOCK = threading.Lock()  # guards _LOCKS


def vocabulary_words(vocab: dict[str, int] | None) -> list[str]:
    """The whole lower-case words of three letters or more in a tokenizer vocabulary (token -> id), in id
    order (roughly the most frequent first), each once. Where the tokenizer marks the tokens that start a
    word (SentencePiece, byte-level BPE), only those count; otherwise (WordPiece) a token without its ``##``
    continuation mark is a word."""
    if not vocab:
        return []
    marked = sum(t.startswith(_STARTS) for t in vocab) > len(vocab) // 10
    found: dict[str, int] = {}
    for token, i in vocab.items():
        if marked:
            if not token.startswith(_STARTS):
                continue
            token = token[1:]
        if _WORD.fullmatch(token) and found.get(token, i + 1) > i:
            found[token] = i
    return sorted(found, key=found.__getitem__)


def name_words(name: Any) -> list[str]:
    """The words of a label name, lower-cased (letters and digits apart; underscores and punctuation split)."""
    return _NAME_WORDS.findall(str(name).lower())


def skip_reason(labels: dict[Any, list[str]], encoder: Any) -> str | None:
    """Why the label names in ``labels`` (name -> descriptions) are not expanded for ``encoder``, or None
    (the vocabulary is checked by :func:`unknown_name`)."""
    if encoder.modality != "text":
        return "the encoder reads images"
    if len(labels) < 2:
        return "one label"
    if any(labels.values()):
        return "labels have descriptions"
    words = {str(n): name_words(n) for n in labels}
    for a, wa in words.items():
        for b, wb in words.items():
            if a != b and wa and any(wb[j : j + len(wa)] == wa for j in range(len(wb) - len(wa) + 1)):
                return f"one label's name holds another's ({a!r} in {b!r})"
    return None


def unknown_name(labels: dict[Any, list[str]], vocabulary: set[str]) -> str | None:
    """Why the label names in ``labels`` are not expanded with the words ``vocabulary``: a name with no word in
    it (another language, a code, a number), whose neighbours would be chance; or None."""
    for name in labels:
        if not any(w in vocabulary for w in name_words(name)):
            return f"the label {str(name)!r} has no word the tokenizer knows whole"
    return None


def word_vectors(encoder: Any) -> tuple[list[str], np.ndarray] | None:
    """The encoder's vocabulary words and their unit embeddings (float16), or None when it has too few.

    Computed once per encoder and machine: kept in this process, and under ``$FEWSHOT_HOME/vocab/`` (a file
    that cannot be written there is only a cost, with a warning, never an error); processes starting cold
    together compute them once, under that folder's lock."""
    from fewshot.encoders.identity import identity_fingerprint

    fingerprint = identity_fingerprint(encoder.identity)
    if fingerprint in _CACHE:
        return _CACHE[fingerprint]
    with _LOCK:
        lock = _LOCKS.setdefault(fingerprint, threading.Lock())
    with lock:
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
        W = _computed_once(key, words, encoder)
    return words, W


def _computed_once(key: str, words: list[str], encoder: Any) -> np.ndarray:
    """The word vectors embedded and kept, under the cache folder's lock: two processes starting cold (the
    workers of a service) embed them once, and the second reads the first's file. Without the lock (a folder
    that cannot be written, or a wait past :data:`COMPUTE_WAIT`) each embeds its own."""
    from fewshot.errors import LockTimeoutError
    from fewshot.storage.lock import FolderLock

    lock = FolderLock(_path(key).parent, timeout=COMPUTE_WAIT)
    with contextlib.suppress(OSError, LockTimeoutError):
        lock.acquire()
    try:
        W = _read(key, len(words), encoder.dim) if lock.held else None  # written while this one waited
        if W is None:
            # on the encoder itself, not the service's shared model calls: a one-time bulk job that should not
            # hold up other requests' calls, nor be dropped when the request that started it times out (it
            # finishes, and is kept, for the next one)
            own = getattr(encoder, "unshared", None)
            W = l2_normalize((own() if callable(own) else encoder).encode_text(words)).astype(np.float16)
            _write(key, W)
        return W
    finally:
        lock.release()


def _path(key: str) -> Any:
    from fewshot.encoders.derived import fewshot_home

    return fewshot_home() / "vocab" / f"{key}.npz"


def _read(key: str, rows: int, dim: int) -> np.ndarray | None:
    """The kept vectors, or None when absent or not whole: a file cut short, or one whose bytes changed
    (their SHA-256, kept beside them, no longer matches), is computed again."""
    try:
        with np.load(_path(key), allow_pickle=False) as saved:
            W, digest = saved["vectors"], saved["sha256"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # absent, empty, cut short, not ours
        return None
    if W.shape != (rows, dim) or W.dtype != np.float16 or digest.tobytes() != hashlib.sha256(W.tobytes()).digest():
        return None
    from fewshot.encoders.derived import mark_used

    mark_used(_path(key))  # so that `fewshot cache prune` keeps the files in use
    return W


def _write(key: str, W: np.ndarray) -> None:
    path = _path(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            digest = np.frombuffer(hashlib.sha256(W.tobytes()).digest(), dtype=np.uint8)
            np.savez(f, vectors=W, sha256=digest)
        os.replace(tmp, path)
        path.with_suffix(".npy").unlink(missing_ok=True)  # the unchecked form this file replaces
    except OSError as exc:  # a cache that cannot be written costs the embedding next time, nothing more
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(
            f"cannot keep the zero-shot label expansion's word vectors in {path.parent} ({exc.strerror or exc}): "
            "they are embedded again in each new process; set FEWSHOT_HOME to a folder this process may write",
            RuntimeWarning,
            stacklevel=5,
        )


def nearest_words(names: np.ndarray, W: np.ndarray) -> np.ndarray:
    """For each label name (``names``: their embeddings, two or more), the indices of the
    :data:`EXPANSION_WORDS` rows of ``W`` (unit word vectors) closest to it less :data:`OTHER_LABEL_PENALTY`
    times their closeness to the nearest other label's name; shape (labels, EXPANSION_WORDS)."""
    S = l2_normalize(np.asarray(names, dtype=np.float32)) @ W.T.astype(np.float32)
    if len(S) < 2:
        raise ValueError("expansion compares each label with the others: it needs two labels or more")
    second, first = np.partition(S, -2, axis=0)[-2:]
    other = np.where(np.arange(len(S))[:, None] == S.argmax(axis=0), second, first)  # the best of the others
    return np.argsort(-(S - OTHER_LABEL_PENALTY * other), axis=1, kind="stable")[:, :EXPANSION_WORDS]


def expand(V: np.ndarray, W: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Label vectors ``V`` (labels, dim) moved by :data:`EXPANSION_WEIGHT` towards the mean of their words
    ``top`` (:func:`nearest_words`, rows of ``W``); unit rows."""
    N = l2_normalize(W[top].astype(np.float32).mean(axis=1))
    return l2_normalize((1 - EXPANSION_WEIGHT) * l2_normalize(np.asarray(V, dtype=np.float32)) + EXPANSION_WEIGHT * N)
