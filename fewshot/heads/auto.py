"""``head="auto"``: choose a head by cross-validation on the support set alone, and say why."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from fewshot.errors import CorruptFileError, InputError
from fewshot.heads.base import BaseHead, changed_params, describe_head
from fewshot.params import SEED, Check, Interval

# the candidates tried by default, simplest first (ties go to the earlier one): names from the head
# registry, or instances for a head with settings of its own
DEFAULT_CANDIDATES: tuple[Any, ...] = ("prototype", ("prototype", {"center": True}), "knn", "linear", "cache")


def _candidate_list(v: Any) -> bool:
    from fewshot.heads.registry import HEADS

    items = list(v)
    return bool(items) and all(
        isinstance(c, BaseHead)
        or (isinstance(c, str) and c in HEADS and c not in ("auto", "zeroshot"))
        or (isinstance(c, (tuple, list)) and len(c) == 2 and c[0] in HEADS and isinstance(c[1], dict))
        for c in items
    )


def within_one_standard_error(scores: dict[str, float], best: str, prefer: str, n: int) -> tuple[bool, float]:
    """Whether ``prefer``'s accuracy is within one standard error of ``best``'s, both measured on the same
    ``n`` examples, and that standard error: ``sqrt(2 p (1 - p) / n)`` with ``p`` the mean of the two (the
    error of two independent accuracies; two heads scored on the same examples agree on many of them, so
    this errs on the side of keeping ``prefer``)."""
    p = (scores[best] + scores[prefer]) / 2
    margin = float(np.sqrt(2 * p * (1 - p) / n))
    return scores[best] - scores[prefer] <= margin, margin


class AutoHead(BaseHead):
    """Fits every candidate head in stratified k-fold cross-validation on the support set, keeps the one
    with the best (weighted) mean accuracy (ties go to the earlier, simpler candidate), and refits it on
    all examples. Given ``prefer`` at fit, that candidate is kept unless another beats it by more than one
    standard error (:func:`within_one_standard_error`).

    Parameters
    ----------
    candidates : the heads to try: names (``"prototype"``, ``"knn"``, ``"linear"``, ``"cache"``),
        ``(name, params)`` pairs, or head instances; None tries :data:`DEFAULT_CANDIDATES`.
    folds : at most this many folds; fewer when the smallest class has fewer examples. With one example
        in some class there is nothing to hold out and the first candidate is taken.
    seed : seeds the fold assignment.

    Attributes
    ----------
    head_ : the chosen head, fitted on all examples (on class codes ``0..n-1``; ``classes_`` here map
        them back to the labels). ``selection_``: the cross-validated accuracy of every candidate, the
        pick and the reason. ``choice_``: the pick's description.
    """

    name = "auto"
    accepts_prior: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "candidates": [None, Check(_candidate_list, "a non-empty list of head names, (name, params) pairs or heads")],
        "folds": [Interval(numbers.Integral, 2, None)],
        "seed": [SEED],
    }

    def __init__(self, candidates: list[Any] | None = None, folds: int = 5, seed: int = 0) -> None:
        self.candidates = candidates
        self.folds = folds
        self.seed = seed

    def fit(
        self,
        E: Any,
        y: Any,
        sample_weight: Any = None,
        classes: Any = None,
        prior: Any = None,
        held_out: tuple[dict[str, float], str] | None = None,
        prefer: str | None = None,
    ):
        """Fit on embeddings ``E`` (n, dim) and labels ``y``; ``prior`` (n, n_classes), the zero-shot scores
        of the examples in ``classes_`` order, reaches the candidates that take one.

        ``held_out``: the candidates' accuracies measured elsewhere and how (``({name: accuracy}, how)``,
        names as :func:`describe_head` gives them), used instead of cross-validating on ``E``. A classifier
        whose body was tuned on these very examples passes the accuracies of bodies tuned without the
        held-out ones, since on ``E`` itself every candidate looks perfect.

        ``prefer``: a candidate's name (as :func:`describe_head` gives it) kept unless another's accuracy
        beats it by more than one standard error, ``sqrt(2 p (1 - p) / n)`` with ``p`` the mean of the two
        accuracies and ``n`` the examples: a one-standard-error rule, for accuracies measured on too few
        held-out examples to separate close candidates. ``selection_`` then records it and the margin.
        With a class of one example nothing is scored and the first candidate is taken as without it.
        """
        self._prior_in = None if prior is None else np.asarray(prior, dtype=np.float64)
        self._held_out_in = held_out
        self._prefer_in = prefer
        try:
            return super().fit(E, y, sample_weight, classes)
        finally:
            del self._prior_in, self._held_out_in, self._prefer_in

    def _heads(self) -> list[BaseHead]:
        from fewshot.heads.registry import make_head

        out = []
        for c in self.candidates or DEFAULT_CANDIDATES:
            if isinstance(c, (tuple, list)):  # (name, params); a list is how JSON (the CLI, a save) writes it
                out.append(make_head(c[0], **c[1]))
            else:
                out.append(clone(c) if isinstance(c, BaseHead) else make_head(c))
        return out

    @staticmethod
    def _fit_one(head: BaseHead, E: np.ndarray, codes: np.ndarray, w, prior: np.ndarray | None) -> BaseHead:
        head = clone(head)
        if head.accepts_prior:
            return head.fit(E, codes, sample_weight=w, prior=prior)
        return head.fit(E, codes, sample_weight=w)

    @staticmethod
    def _kw(head: BaseHead, prior: np.ndarray | None) -> dict[str, Any]:
        return {"prior": prior} if head.accepts_prior and getattr(head, "uses_prior_", False) else {}

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        prior = self._prior_in
        if prior is not None and prior.shape != (len(E), len(self.classes_)):
            raise InputError(f"prior scores must have shape ({len(E)}, {len(self.classes_)}), got {prior.shape}")
        heads = self._heads()
        names = [describe_head(h) for h in heads]
        if len(set(names)) != len(names):
            raise InputError(f"candidates repeat a head: {names}")
        prefer = getattr(self, "_prefer_in", None)
        if prefer is not None and prefer not in names:
            raise InputError(f"prefer names {prefer!r}, which is not among the candidates {names}")
        folds = min(self.folds, int(np.bincount(codes).min()))
        weights = np.ones(len(codes)) if w is None else w
        scores: dict[str, float] = {}
        held_out = getattr(self, "_held_out_in", None)
        if held_out is not None:
            scores, how = held_out
            missing = sorted(set(names) - set(scores))
            if missing:
                raise InputError(f"held-out accuracies lack the candidates {missing}")
            best = max(range(len(heads)), key=lambda i: (scores[names[i]], -i))
            why = f"best accuracy {how} ({scores[names[best]]:.4f})"
        elif folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            splits = list(splitter.split(E, codes))
            for head, name in zip(heads, names):
                hits = 0.0
                for tr, va in splits:
                    p_tr = None if prior is None else prior[tr]
                    fitted = self._fit_one(head, E[tr], codes[tr], None if w is None else w[tr], p_tr)
                    kw = self._kw(fitted, None if prior is None else prior[va])
                    right = fitted.predict(E[va], **kw) == codes[va]
                    hits += float((right * weights[va]).sum())
                scores[name] = hits / float(weights.sum())
            best = max(range(len(heads)), key=lambda i: (scores[names[i]], -i))
            why = f"best {folds}-fold cross-validated accuracy on the support set ({scores[names[best]]:.4f})"
        else:
            best = 0
            why = "a class has a single example, so nothing can be held out: the first candidate"
        selection: dict[str, Any] = {}
        if prefer is not None and scores:
            kept, margin = within_one_standard_error(scores, names[best], prefer, len(codes))
            selection = {"prefer": prefer, "margin": round(margin, 4)}
            if kept and names[best] != prefer:
                why = (
                    f"{prefer} is preferred: its {scores[prefer]:.4f} is within one standard error ({margin:.4f}) "
                    f"of {names[best]}'s {scores[names[best]]:.4f}; {why}"
                )
            best = names.index(prefer) if kept else best
        self.selection_ = {
            "scores": {k: round(v, 4) for k, v in scores.items()},
            "picked": names[best],
            "why": why,
            **selection,
        }
        self.head_ = self._fit_one(heads[best], E, codes, w, prior)
        self.choice_ = names[best]

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.head_.partial_fit(E, codes, sample_weight=w)

    def class_scores(self, E: Any, prior: Any = None) -> np.ndarray:
        """The chosen head's class scores, shape (n_samples, n_classes)."""
        E = self._check_input(E)
        return self.head_.class_scores(E, **self._kw(self.head_, prior))

    def decision_function(self, E: Any, prior: Any = None) -> np.ndarray:
        S = self.class_scores(E, prior)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict_proba(self, E: Any, prior: Any = None) -> np.ndarray:
        E = self._check_input(E)
        return self.head_.predict_proba(E, **self._kw(self.head_, prior))

    def predict(self, E: Any, prior: Any = None) -> np.ndarray:
        S = self.class_scores(E, prior)  # checks the head is fitted first
        return self.classes_[np.argmax(S, axis=1)]

    def log_proba(self, S: np.ndarray) -> np.ndarray:
        return self.head_.log_proba(S)

    def held_out_scores(self, E: Any, y: Any, folds: int = 5, seed: int = 0, **fit_kw: Any) -> np.ndarray | None:
        """The chosen head's held-out scores (the choice itself is not redone inside each fold)."""
        from fewshot._validate import as_labels
        from fewshot.labels import encode_labels

        E = self._check_input(E)
        codes = encode_labels(as_labels(y, len(E)), self.classes_)
        kw = fit_kw if getattr(self.head_, "uses_prior_", False) else {}
        return self.head_.held_out_scores(E, codes, folds, seed, **kw)

    @property
    def temperature(self) -> float:
        return self.head_.temperature

    @property
    def score_bounds(self) -> tuple[float, float] | None:  # type: ignore[override]
        return self.head_.score_bounds

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().get_state()
        inner_config, inner_arrays = self.head_.get_state()
        config["inner"] = inner_config
        config["selection"] = self.selection_
        return config, {f"inner__{k}": v for k, v in inner_arrays.items()}

    def _saved_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        if params["candidates"] is not None:  # JSON-able: [name, the parameters it sets away from defaults]
            params["candidates"] = [[h.name, changed_params(h)] for h in self._heads()]
        return params

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AutoHead:
        from fewshot.heads.registry import head_from_state

        params = dict(config["params"])
        if params.get("candidates") is not None and not _candidate_list(params["candidates"]):
            params["candidates"] = None  # descriptions for people (an older file): the choice is made anyway
        try:
            head = cls(**params)
            head.classes_ = np.asarray(config["classes"])
            head.n_features_in_ = int(config["n_features_in"])
            inner = {k[len("inner__") :]: v for k, v in arrays.items() if k.startswith("inner__")}
            head.head_ = head_from_state(config["inner"], inner)
            head.selection_ = config.get("selection", {})
            head.choice_ = head.selection_.get("picked", head.head_.name)
        except KeyError as exc:
            raise CorruptFileError(f"the saved auto head lacks {exc}") from exc
        head._check_loaded()
        return head

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass
