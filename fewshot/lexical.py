"""A lexical channel beside the embedding: TF-IDF word and word-pair features with a logistic regression.

A sentence embedding keeps what a text is about and throws away much of how it is worded, while some tasks
turn on the words themselves (counterfactual phrasings such as "I wish it had", product codes, a newsgroup's
jargon). :class:`LexicalModel` scores texts from their words alone; ``FewShotClassifier(lexical="auto")``
pools its log-probabilities with the head's (:class:`LexicalChannel`), with a weight chosen on held-out
scores of the support set (:func:`choose`), so it is used only where the support set says it helps.

Everything fitted is plain data: the vocabulary (a list of terms), the inverse document frequencies and the
regression's coefficients, saved as JSON and arrays. The features are computed here, not by a fitted
scikit-learn vectorizer, so a loaded model needs nothing unpickled and gives the same features.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError, InputError
from fewshot.maths import log_softmax

TOKEN = re.compile(r"(?u)\b\w+\b")  # words of one character count too ("I", "a": counterfactuals use them)
NGRAMS = (1, 2)
C = 10.0  # inverse L2 strength of the regression: weak, as there are far more features than examples
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)  # the lexical share of the pooled log-probabilities that may be chosen
# held-out examples by which a weight must beat the head alone: a win by one example is the smallest noise
# there is. On the development group (84 stored fits, frozen and tuned, 8 and 64 a class; eval/lexical_rule.py)
# the channel gained +0.90 points over the head alone with it, +0.85 with any win and +0.87 with three; its
# worst dataset lost 0.2 points with it and 0.8 with any win
MIN_GAIN = 2
MAX_ITER = 1000


def terms(text: str) -> list[str]:
    """The lower-cased words of ``text`` and its pairs of adjacent words."""
    words = TOKEN.findall(text.lower())
    out = list(words) if 1 in NGRAMS else []
    if 2 in NGRAMS:
        out += [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return out


class LexicalModel:
    """TF-IDF features (sublinear term frequency, smoothed idf, unit rows) and logistic regressions of each
    class against the rest over ``n_classes`` integer codes (liblinear's dual solver: with far more features
    than examples it is about ten times faster than one multinomial fit, at the same accuracy on the
    development datasets); the log-probabilities are the softmax of the regressions' scores.

    Attributes (after :meth:`fit`): ``vocabulary_`` (terms, in feature order), ``idf_``, ``coef_`` (n_classes,
    n_features), ``intercept_`` (n_classes,).
    """

    def fit(
        self, texts: list[str], codes: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None
    ) -> LexicalModel:
        """Fit on ``texts`` with integer class ``codes``; ``sample_weight`` weighs each example in the
        regressions (the vocabulary and idf count each text once)."""
        from sklearn.linear_model import LogisticRegression

        codes = np.asarray(codes, dtype=np.int64)
        present = np.unique(codes)
        if len(present) < 2:
            raise InputError("the lexical channel needs examples of at least two classes")
        docs = [set(terms(t)) for t in texts]
        df: dict[str, int] = {}
        for doc in docs:
            for term in doc:
                df[term] = df.get(term, 0) + 1
        self.vocabulary_ = sorted(df)
        self._index = {term: i for i, term in enumerate(self.vocabulary_)}
        n = len(texts)
        self.idf_ = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in self.vocabulary_])
        X = self.features(texts)
        coef = np.zeros((n_classes, X.shape[1]))
        intercept = np.full(n_classes, -1e4)  # a class without examples here is never predicted
        fitted = present if len(present) > 2 else present[1:]  # one against the rest (two classes: one fit)
        if X.shape[1] == 0:  # not a word in any text: every present class scores the same
            intercept[present] = 0.0
            fitted = []
        for k in fitted:
            lr = LogisticRegression(C=C, solver="liblinear", dual=True, max_iter=MAX_ITER, random_state=0).fit(
                X, codes == k, sample_weight=sample_weight
            )
            coef[k], intercept[k] = lr.coef_[0], lr.intercept_[0]
        if len(present) == 2 and X.shape[1]:  # the two classes' scores on either side of 0
            k0, k1 = present
            coef[k1], intercept[k1] = coef[k1] / 2, intercept[k1] / 2
            coef[k0], intercept[k0] = -coef[k1], -intercept[k1]
        self.coef_, self.intercept_ = coef, intercept
        return self

    def features(self, texts: list[str]) -> Any:
        """The TF-IDF matrix of ``texts`` (scipy CSR, unit rows; terms outside the vocabulary are dropped)."""
        from scipy.sparse import csr_matrix

        index = self.__dict__.get("_index")
        if index is None:
            index = self._index = {term: i for i, term in enumerate(self.vocabulary_)}
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            counts: dict[int, int] = {}
            for term in terms(text):
                j = index.get(term)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            js = np.fromiter(counts, dtype=np.int64, count=len(counts))
            w = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf_[js]
            rows += [r] * len(js)
            cols += js.tolist()
            vals += (w / np.linalg.norm(w)).tolist()
        return csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.vocabulary_)))

    def log_proba(self, texts: list[str]) -> np.ndarray:
        """Log-probabilities of every class for ``texts``, shape (n, n_classes)."""
        return log_softmax(self.features(texts) @ self.coef_.T + self.intercept_, 1.0)

    # -- persistence --------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"vocabulary": self.vocabulary_, "ngrams": list(NGRAMS)}, {
            "idf": self.idf_,
            "coef": self.coef_,
            "intercept": self.intercept_,
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> LexicalModel:
        self = cls()
        try:
            self.vocabulary_ = [str(t) for t in config["vocabulary"]]
            self.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
            self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
            self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"the saved lexical channel cannot be read ({exc})") from exc
        n = len(self.vocabulary_)
        if self.idf_.shape != (n,) or self.coef_.ndim != 2 or self.coef_.shape[1] != n:
            raise CorruptFileError(
                f"the saved lexical channel is inconsistent: {n} terms, idf {self.idf_.shape}, "
                f"coefficients {self.coef_.shape}"
            )
        if self.intercept_.shape != (self.coef_.shape[0],):
            raise CorruptFileError("the saved lexical channel's intercepts do not match its classes")
        return self


def held_out_log_proba(
    texts: list[str], codes: np.ndarray, n_classes: int, folds: list[tuple], sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """Log-probabilities of every example from a model fitted on the other folds (``folds``: (train, test)
    index pairs covering every example once)."""
    out = np.zeros((len(texts), n_classes))
    for train, test in folds:
        w = None if sample_weight is None else sample_weight[train]
        model = LexicalModel().fit([texts[i] for i in train], codes[train], n_classes, sample_weight=w)
        out[test] = model.log_proba([texts[i] for i in test])
    return out


class LexicalChannel:
    """A fitted :class:`LexicalModel` and how its log-probabilities are pooled with a head's.

    Each channel's log-probabilities are first put on a common footing by a temperature fitted on its
    held-out scores of the support set (``head_temperature``, ``lexical_temperature``); the pool is then
    ``(1 - weight)`` of the head's and ``weight`` of the lexical channel's, renormalised (a log-linear pool).
    The channel keeps the examples' texts, class codes and weights (None: each counts once), so examples
    added later refit the regression on all of them (the weight and temperatures stay as chosen).
    """

    def __init__(
        self,
        model: LexicalModel,
        weight: float,
        head_temperature: float,
        lexical_temperature: float,
        texts: list[str],
        codes: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ):
        self.model = model
        self.weight = float(weight)
        self.head_temperature = float(head_temperature)
        self.lexical_temperature = float(lexical_temperature)
        self.texts = list(texts)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

    def pool(self, head_logp: np.ndarray, texts: list[str]) -> np.ndarray:
        """Pooled log-probabilities of ``texts`` given the head's log-probabilities of them."""
        lexical_logp = self.model.log_proba(texts)
        return pool(head_logp, lexical_logp, self.weight, self.head_temperature, self.lexical_temperature)

    def add(
        self, texts: list[str], codes: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None
    ) -> LexicalChannel:
        """A channel refitted with more examples (codes of new classes after the old ones; weights of 1 for
        the side, old or new, that has none)."""
        new = len(texts)
        texts = self.texts + list(texts)
        codes = np.concatenate([self.codes, np.asarray(codes, dtype=np.int64)])
        weight = None
        if self.sample_weight is not None or sample_weight is not None:
            old = self.sample_weight if self.sample_weight is not None else np.ones(len(self.codes))
            weight = np.concatenate([old, np.ones(new) if sample_weight is None else np.asarray(sample_weight, float)])
        model = LexicalModel().fit(texts, codes, n_classes, sample_weight=weight)
        settings = (self.weight, self.head_temperature, self.lexical_temperature)
        return LexicalChannel(model, *settings, texts, codes, weight)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = self.model.get_state()
        config = {
            **config,
            "weight": self.weight,
            "head_temperature": self.head_temperature,
            "lexical_temperature": self.lexical_temperature,
            "texts": self.texts,
        }
        weights = {} if self.sample_weight is None else {"sample_weight": self.sample_weight}
        return config, {**arrays, "codes": self.codes, **weights}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> LexicalChannel:
        try:
            settings = [float(config[k]) for k in ("weight", "head_temperature", "lexical_temperature")]
            texts = [str(t) for t in config["texts"]]
            codes = np.asarray(arrays["codes"], dtype=np.int64)
            weight = arrays.get("sample_weight")
            weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"the saved lexical channel cannot be read ({exc})") from exc
        if len(texts) != len(codes) or (weight is not None and weight.shape != codes.shape):
            raise CorruptFileError(
                f"the saved lexical channel has {len(texts)} texts, {len(codes)} labels"
                + ("" if weight is None else f" and {len(weight)} weights")
            )
        return cls(LexicalModel.from_state(config, arrays), *settings, texts, codes, weight)


def pool(head_logp: np.ndarray, lexical_logp: np.ndarray, weight: float, t_head: float, t_lexical: float):
    """The log-linear pool of two channels' log-probabilities, each at its own temperature, renormalised."""
    return log_softmax((1.0 - weight) * head_logp / t_head + weight * lexical_logp / t_lexical, 1.0)


def choose(
    head_logp: np.ndarray, lexical_logp: np.ndarray, codes: np.ndarray, weights: tuple[float, ...] | None = None
) -> tuple[float, float, float, dict]:
    """From held-out log-probabilities of the support set: each channel's temperature, then the weight of
    ``weights`` (default :data:`WEIGHTS`) whose pool has the best held-out accuracy (ties to the smaller
    weight), kept only if it gets at least :data:`MIN_GAIN` more held-out examples right than the head alone
    (weight 0, when ``weights`` has it). Returns (weight, head temperature, lexical temperature, a record of
    every weight's accuracy)."""
    from fewshot.calibration import calibrate_temperature

    weights = WEIGHTS if weights is None else tuple(weights)
    t_head = calibrate_temperature(head_logp, codes)[0]
    t_lexical = calibrate_temperature(lexical_logp, codes)[0]

    def right(w: float) -> int:
        return int(np.sum(pool(head_logp, lexical_logp, w, t_head, t_lexical).argmax(axis=1) == codes))

    hits = {w: right(w) for w in weights}
    best = max(weights, key=lambda w: (hits[w], -w))
    record = {"weights": {str(w): round(h / len(codes), 4) for w, h in hits.items()}, "n": int(len(codes))}
    if 0.0 in hits and best != 0.0 and hits[best] - hits[0.0] < MIN_GAIN:
        won = hits[best] - hits[0.0]
        record["why"] = f"weight {best} gets {won} more held-out example(s) right than the head alone, under {MIN_GAIN}"
        best = 0.0
    elif best == 0.0:
        record["why"] = "no weight gets more held-out examples right than the head alone"
    record["picked"] = best
    return best, t_head, t_lexical, record
