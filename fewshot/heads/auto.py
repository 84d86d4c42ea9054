"""``head="auto"``: choose a head by cross-validation on the support set alone, and say why."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.model_selection import StratifiedKFold

from fewshot.errors import CorruptFileError
from fewshot.heads.base import BaseHead
from fewshot.heads.cache import CacheAdapterHead
from fewshot.heads.knn import KNNHead
from fewshot.heads.linear import LinearHead
from fewshot.heads.prototype import PrototypeHead

CANDIDATES: dict[str, Any] = {
    "prototype": lambda: PrototypeHead(),
    "prototype-centred": lambda: PrototypeHead(center=True),
    "knn": lambda: KNNHead(),
    "linear": lambda: LinearHead(),
    "cache": lambda: CacheAdapterHead(),
}


class AutoHead(BaseHead):
    """Fits every candidate head in stratified k-fold cross-validation on the support set, keeps the one
    with the best mean accuracy (ties go to the earlier, simpler candidate), and refits it on all examples.

    Parameters
    ----------
    candidates : names from ``CANDIDATES`` (prototype, prototype-centred, knn, linear, cache); None: all.
    folds : at most this many folds; fewer when the smallest class has fewer examples. With one example
        in some class there is nothing to hold out and the first candidate is taken.
    seed : seeds the fold assignment.

    Attributes
    ----------
    head_ : the chosen head, fitted on all examples. ``selection_``: the cross-validated accuracy of every
        candidate, the pick and the reason.
    """

    name = "auto"
    accepts_prior: ClassVar[bool] = True

    def __init__(self, candidates: list[str] | None = None, folds: int = 5, seed: int = 0) -> None:
        self.candidates = candidates
        self.folds = folds
        self.seed = seed

    def fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None, prior: Any = None):
        self._prior_in = None if prior is None else np.asarray(prior, dtype=np.float64)
        try:
            return super().fit(E, y, sample_weight, classes)
        finally:
            del self._prior_in

    def _names(self) -> list[str]:
        names = list(CANDIDATES) if self.candidates is None else list(self.candidates)
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown or not names:
            from fewshot.errors import InputError

            raise InputError(f"unknown candidate heads {unknown}; choose from {', '.join(CANDIDATES)}")
        return names

    def _fit_one(self, name: str, E: np.ndarray, codes: np.ndarray, prior: np.ndarray | None) -> BaseHead:
        head = CANDIDATES[name]()
        if isinstance(head, CacheAdapterHead):
            return head.fit(E, codes, prior=prior)
        return head.fit(E, codes)

    @staticmethod
    def _predict(head: BaseHead, E: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        if isinstance(head, CacheAdapterHead):
            return head.predict(E, prior=prior if head.uses_prior_ else None)
        return head.predict(E)

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        prior = self._prior_in
        names = self._names()
        folds = min(self.folds, int(np.bincount(codes).min()))
        scores: dict[str, float] = {}
        if folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for name in names:
                hits = 0
                for tr, va in splitter.split(E, codes):
                    p_tr = None if prior is None else prior[tr]
                    head = self._fit_one(name, E[tr], codes[tr], p_tr)
                    hits += int((self._predict(head, E[va], None if prior is None else prior[va]) == codes[va]).sum())
                scores[name] = hits / len(codes)
            best = max(names, key=lambda n: (scores[n], -names.index(n)))
            why = f"best {folds}-fold cross-validated accuracy on the support set ({scores[best]:.4f})"
        else:
            best = names[0]
            why = "a class has a single example, so nothing can be held out: the first candidate"
        self.selection_ = {"scores": {k: round(v, 4) for k, v in scores.items()}, "picked": best, "why": why}
        self.head_ = self._fit_one(best, E, codes, prior)
        self.choice_ = best

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.head_.partial_fit(E, codes)

    def partial_fit(self, E: Any, y: Any, sample_weight: Any = None, prior: Any = None):
        return super().partial_fit(E, y, sample_weight)

    # the chosen head works on codes (0..n-1); classes_ here map them back to the user's labels
    def decision_function(self, E: Any, prior: Any = None) -> np.ndarray:
        E = self._check_input(E)
        if isinstance(self.head_, CacheAdapterHead):
            return self.head_.decision_function(E, prior=prior if self.head_.uses_prior_ else None)
        return self.head_.decision_function(E)

    def predict_proba(self, E: Any, prior: Any = None) -> np.ndarray:
        E = self._check_input(E)
        if isinstance(self.head_, CacheAdapterHead):
            return self.head_.predict_proba(E, prior=prior if self.head_.uses_prior_ else None)
        return self.head_.predict_proba(E)

    def predict(self, E: Any, prior: Any = None) -> np.ndarray:
        scores = self.decision_function(E, prior)
        return self.classes_[np.argmax(scores, axis=1)]

    @property
    def temperature(self) -> float:
        return self.head_.temperature

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().get_state()
        inner_config, inner_arrays = self.head_.get_state()
        config["inner"] = inner_config
        config["selection"] = self.selection_
        return config, {f"inner__{k}": v for k, v in inner_arrays.items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AutoHead:
        from fewshot.heads import head_from_state

        head = super().from_state(config, arrays)
        try:
            inner = {k[len("inner__") :]: v for k, v in arrays.items() if k.startswith("inner__")}
            head.head_ = head_from_state(config["inner"], inner)
            head.selection_ = config.get("selection", {})
            head.choice_ = head.selection_.get("picked", head.head_.name)
        except KeyError as exc:
            raise CorruptFileError(f"the saved auto head lacks {exc}") from exc
        return head

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass
