"""Ordinary text to judge label scores against: the zero-shot tagger's "none of these".

A cosine between a text and a label means little on its own: it depends on the label's wording, the
template and the encoder, and the best fixed cut-off differs widely between label sets. The package ships
``fewshot/data/background.txt``, a couple of hundred everyday sentences on many subjects (written for this
project, Apache-2.0 like the code), embedded once per encoder and process. Against them a tagger can ask two
questions that carry over to any label set:

- is the input closer to its best label than to the ordinary sentences it most resembles? (the mean cosine
  to its ``k`` nearest background sentences)
- is the best label's score unusual for ordinary text? (its z-score against that label's scores on the
  background sentences)
"""

from __future__ import annotations

import threading
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

_CACHE: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


@cache
def background_sentences() -> tuple[str, ...]:
    """The shipped background sentences."""
    text = resources.files("fewshot.data").joinpath("background.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def background_embeddings(encoder: Any, frame: str | None = None) -> np.ndarray:
    """The background sentences embedded by ``encoder``'s text side, shape (n, dim), each read in ``frame``
    beside itself as the zero-shot classifier reads its inputs (:func:`fewshot.prompts.encode_framed`); once
    per encoder, frame and process (keyed by the encoder's identity)."""
    from fewshot.encoders import identity_fingerprint
    from fewshot.prompts import encode_framed

    key = identity_fingerprint(encoder.identity) + "|" + (frame or "")
    with _LOCK:
        found = _CACHE.get(key)
    if found is None:
        texts = list(background_sentences())
        found = encoder.encode_text(texts) if frame is None else encode_framed(encoder, texts, frame)
        with _LOCK:
            _CACHE[key] = found
    return found


def nearest_background(E: np.ndarray, B: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine of each row of ``E`` (n, dim) to its ``k`` nearest rows of ``B`` (m, dim); shape (n,)."""
    S = E @ B.T
    k = min(k, S.shape[1])
    return np.partition(S, S.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
