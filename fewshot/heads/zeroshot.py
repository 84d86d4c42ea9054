"""Zero-shot class vectors from label text (the open_clip recipe for text-only classes).

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021, sec.
3.1.4: each class vector is the mean of the normalised embeddings of several prompts (templates filled with
the class name, and here also with descriptions and attributes), re-normalised.

With ``pool`` set, a class is instead scored against each of its prompts and the cosines are pooled by a soft
maximum (a log-mean-exp at temperature ``pool``): a class counts as close when some of its phrasings are,
not only when their average is.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fewshot.errors import CorruptFileError, DimensionError, InputError
from fewshot.heads.prototype import PrototypeHead
from fewshot.params import POSITIVE


class ZeroShotHead(PrototypeHead):
    """Class vectors pooled from embeddings of label prompts; cosine scores against them.

    ``fit(E, y, sample_weight)`` takes the embeddings of the prompts (one row per prompt), the class each
    prompt describes, and optionally a weight per prompt (so that, say, a class name and its description
    count equally however many templates each fills). Building the prompts from label text is the job of
    :func:`fewshot.prompts.label_prompts`; this head only sees embeddings, like every head.

    Parameters
    ----------
    temperature : softmax temperature on the cosine scores for ``predict_proba``.
    pool : None (default): a class's score is the cosine to the mean of its prompts (``centroids_``). A
        temperature: the class's prompts are kept (``prompts_``) and its score is
        ``pool * log(sum_p w_p * exp(cos_p / pool) / sum_p w_p)`` over its prompts ``p`` and their weights
        ``w_p``, a soft maximum that lies between their weighted mean cosine and the best one. With one
        prompt a class, both are the cosine.
    """

    name = "zeroshot"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"temperature": [POSITIVE], "pool": [None, POSITIVE]}

    center = False  # label vectors are compared as they are

    def __init__(self, temperature: float = 0.05, pool: float | None = None) -> None:
        self.temperature = temperature
        self.pool = pool

    def _allows_one_class(self) -> bool:
        # a single tag is meaningful for multi-label tagging with a threshold
        return True

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        super()._fit(E, codes, w)
        self.prompts_ = self.codes_ = self.prompt_weights_ = None
        if self.pool is not None:
            self.set_prompts(E, codes, w)

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        super()._partial_fit(E, codes, w)
        if self.prompts_ is not None:
            w = np.ones(len(E)) if w is None else w
            self.set_prompts(
                np.vstack([self.prompts_, E]),
                np.concatenate([self.codes_, codes]),
                np.concatenate([self.prompt_weights_, w]),
            )

    def set_prompts(self, P: np.ndarray, codes: np.ndarray, w: np.ndarray | None = None) -> None:
        """Score against the prompt vectors ``P`` (n_prompts, dim) of classes ``codes`` (indices into
        ``classes_``, each class at least once), weighted by ``w`` (default equal), in place of those given to
        ``fit``; the class means stay as they were (a label set's widened prompts, say, where the means were
        widened on their own). Kept grouped by class."""
        codes = np.asarray(codes, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        P = np.asarray(P, dtype=np.float64)[order]
        w = np.ones(len(P)) if w is None else np.asarray(w, dtype=np.float64)[order]
        self._keep_prompts(P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12), codes[order], w)

    def _keep_prompts(self, P: np.ndarray, codes: np.ndarray, w: np.ndarray) -> None:
        """Keep unit prompt vectors ``P`` grouped by class (``codes`` sorted), as they are."""
        n = len(self.classes_)
        if not (len(codes) == len(P) == len(w) > 0) or P.ndim != 2:
            raise InputError(f"{len(P)} prompts, {len(codes)} class codes and {len(w)} weights")
        if P.shape[1] != self.n_features_in_:
            raise DimensionError(f"prompt vectors of {P.shape[1]} dimensions for a head of {self.n_features_in_}")
        if not np.isfinite(P).all() or not (np.isfinite(w).all() and (w > 0).all()):
            raise InputError("prompt vectors must be finite and their weights finite and positive")
        if codes.min() < 0 or codes.max() >= n or np.any(np.diff(codes) < 0) or len(np.unique(codes)) != n:
            raise InputError(f"the prompts' class codes must cover each of the {n} classes in order, and no other")
        self.prompts_, self.codes_, self.prompt_weights_ = P, codes, w
        self._starts = np.searchsorted(codes, np.arange(n))

    def class_scores(self, E: Any) -> np.ndarray:
        """Cosine to each class mean or, with ``pool``, the soft maximum of the cosines to the class's
        prompts; shape (n_samples, n_classes)."""
        if self.pool is None or getattr(self, "prompts_", None) is None:
            return super().class_scores(E)
        E = self._check_input(E).astype(np.float64)
        S = E @ self.prompts_.T
        top = np.maximum.reduceat(S, self._starts, axis=1)  # each class's best prompt: exp() below is at most 1
        weighted = np.exp((S - top[:, self.codes_]) / self.pool) * self.prompt_weights_
        mass = np.add.reduceat(weighted, self._starts, axis=1)
        return top + self.pool * np.log(mass / np.add.reduceat(self.prompt_weights_, self._starts))

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._arrays()
        if getattr(self, "prompts_", None) is not None:
            arrays.update(prompts=self.prompts_, codes=self.codes_, prompt_weights=self.prompt_weights_)
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_arrays(arrays)
        self.prompts_ = self.codes_ = self.prompt_weights_ = None
        if self.pool is not None and "prompts" in arrays:  # (from_state has checked the pool, as any setting)
            try:
                self._keep_prompts(
                    np.asarray(arrays["prompts"], dtype=np.float64),
                    np.asarray(arrays["codes"], dtype=np.int64),
                    np.asarray(arrays["prompt_weights"], dtype=np.float64),
                )
            except (KeyError, InputError, DimensionError) as exc:
                raise CorruptFileError(f"the saved {self.name} head's prompts cannot be read ({exc})") from exc
