"""A training-free cache adapter over the support set, fused with zero-shot scores (Tip-Adapter).

Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification", ECCV 2022. The
support embeddings are the keys of a cache whose values are one-hot labels; a query's cache score for a
class is ``sum_i exp(-beta * (1 - cos(query, key_i)))`` over that class's keys, and the final score adds
the zero-shot score of the label text (the "prior") when there is one:

    score = w_prior * prior / s_prior + w_cache * cache / s_cache

``s_prior`` and ``s_cache`` are the spreads of the two terms on the support set, so the weights are on a
common scale whatever the encoder. The paper tunes its alpha and beta on a validation set; here they are
chosen on the support set alone, by leave-one-out: every support example is scored against the others
(its own key removed; the prior never saw it), and the best accuracy wins, ties going to the lower
leave-one-out log-loss, unless the default is within one standard error of it (a few dozen held-out
examples cannot separate close candidates). The default is the class-mean cache (beta = 0) with the prior
given an equal weight if it beats chance on the support (one-sided binomial test at 5%), else none. A
support set where every class has a single example cannot be scored by leave-one-out (its held-out example
has no key of its own class left); then the default is taken.
The softmax temperature for ``predict_proba`` is fitted by the same leave-one-out log-loss. Sample weights
scale each key's vote (and its share of its class mean) and weigh the leave-one-out accuracy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone

from fewshot._validate import as_embeddings
from fewshot.errors import InputError
from fewshot.heads.base import BaseHead
from fewshot.maths import fit_temperature, log_softmax, loo_mean_cosines, nll, unit_rows
from fewshot.params import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, SEED, Check

# beta = 0 stands for the limit of a wide kernel with each class's keys pooled: the cosine to the class mean
BETAS = (0.0, 1.0, 2.0, 3.5, 5.0, 7.5, 10.0, 15.0, 25.0)
# (w_prior, w_cache): prior only, the fusions, cache only
WEIGHTS = ((1.0, 0.0), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (1.0, 4.0), (0.0, 1.0))
DEFAULT_BETA = 0.0  # one example a class: the prototype
MAX_LOO = 2000  # support examples scored in the leave-one-out search (a seeded subsample above that)


def _weight_pair(v: Any) -> bool:
    return len(v) == 2 and all(float(x) >= 0 for x in v) and any(float(x) > 0 for x in v)


class CacheAdapterHead(BaseHead):
    """Tip-Adapter: a cache of the support examples, optionally fused with zero-shot prior scores.

    Parameters
    ----------
    beta : sharpness of the cache kernel; 0 means the cosine to each class's mean key (the wide-kernel
        limit, a prototype); None chooses it by leave-one-out on the support set.
    weights : ``(w_prior, w_cache)``; None chooses them by leave-one-out. Without a prior only the cache
        counts.
    train_epochs : 0 (default) is training-free. More is the trained mode (the Tip-Adapter-F idea): after
        the selection, the keys are trained for that many full-batch AdamW steps (``lr``) on the
        leave-one-out cross-entropy of the support set.
    seed : seeds the subsample of support examples scored by leave-one-out when there are more than
        :data:`MAX_LOO`.

    ``fit(E, y, prior=S)`` and ``class_scores(E, prior=S)`` take the zero-shot scores ``S`` of the same
    inputs, shape (n, n_classes) in ``classes_`` order (``FewShotClassifier`` computes them from the label
    names). A head fitted with a prior needs one at prediction, and the other way round.

    Attributes
    ----------
    beta_, weights_ : the values in use; ``selection_`` : the leave-one-out accuracy of every candidate
        (empty when nothing could be scored) and what was picked.
    temperature_ : softmax temperature for ``predict_proba``.
    """

    name = "cache"
    accepts_prior: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "beta": [None, NON_NEGATIVE],
        "weights": [None, Check(_weight_pair, "a pair (w_prior, w_cache) of non-negative numbers, not both 0")],
        "train_epochs": [NON_NEGATIVE_INT],
        "lr": [POSITIVE],
        "seed": [SEED],
    }

    def __init__(
        self,
        beta: float | None = None,
        weights: tuple[float, float] | None = None,
        train_epochs: int = 0,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.beta = beta
        self.weights = weights
        self.train_epochs = train_epochs
        self.lr = lr
        self.seed = seed

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None, prior: Any = None):
        """Fit on embeddings ``E`` (n, dim) and labels ``y``; ``prior`` (n, n_classes) as described above."""
        self._prior_in = prior
        try:
            return super().fit(E, y, sample_weight, classes)
        finally:
            del self._prior_in

    def partial_fit(self, E: Any, y: Any, sample_weight: Any = None, classes: Any = None, prior: Any = None):
        """Add keys (examples of new classes too); the chosen beta, weights and scales are kept."""
        if not hasattr(self, "classes_"):
            return self.fit(E, y, sample_weight, classes=classes, prior=prior)
        return super().partial_fit(E, y, sample_weight, classes)

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.keys_, self.codes_ = E.astype(np.float32), codes.astype(np.int64)
        self.key_weights_ = np.ones(len(E)) if w is None else w
        prior = self._prior_in
        self.uses_prior_ = prior is not None
        if prior is not None:
            prior = self._check_prior(prior, len(E))
            self.prior_scale_ = float(prior.std()) or 1.0
        else:
            self.prior_scale_ = 1.0
        self._select(prior)
        if self.train_epochs:
            self._train_keys(prior)

    def _check_prior(self, prior: Any, n: int) -> np.ndarray:
        prior = as_embeddings(prior, dim=len(self.classes_), what="prior scores").astype(np.float64)
        if len(prior) != n:
            raise InputError(f"prior scores have {len(prior)} rows for {n} inputs")
        return prior

    def _onehot(self, weighted: bool = True) -> np.ndarray:
        onehot = np.eye(len(self.classes_))[self.codes_]
        return onehot * self.key_weights_[:, None] if weighted else onehot

    def _train_keys(self, prior: np.ndarray | None) -> None:
        """The trained mode (Tip-Adapter-F): the keys, initialised from the support embeddings, are tuned
        by full-batch AdamW on the cross-entropy of the fused scores over the support set. Each example is
        scored without its own key (the leave-one-out mask), so the keys cannot just learn to find
        themselves; beta, the weights, the scales and the temperature stay as selected. Full-batch steps
        from fixed keys involve no random choice."""
        import torch

        X = torch.as_tensor(self.keys_, dtype=torch.float64)
        K = torch.nn.Parameter(X.clone())
        onehot = torch.as_tensor(self._onehot(weighted=False))
        kw = torch.as_tensor(self.key_weights_)
        codes = torch.as_tensor(self.codes_)
        wp, wc = self.weights_
        base = torch.zeros((len(X), len(self.classes_)), dtype=torch.float64)
        if prior is not None and wp:
            base = torch.as_tensor(prior, dtype=torch.float64) * wp / self.prior_scale_
        own = torch.eye(len(X), dtype=torch.bool)
        optimiser = torch.optim.AdamW([K], lr=self.lr, weight_decay=0.0)
        for _ in range(self.train_epochs):
            Kn = unit_rows(K)
            if self.beta_ == 0.0:
                cache = loo_mean_cosines(X, Kn, onehot, codes, kw)
            else:
                A = torch.exp(-self.beta_ * (1.0 - X @ Kn.T)).masked_fill(own, 0.0)
                cache = A @ (onehot * kw[:, None])
            logits = (base + wc * cache / self.cache_scale_) / self.temperature_
            loss = torch.nn.functional.cross_entropy(logits, codes, reduction="none")
            loss = (loss * kw).sum() / kw.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self.keys_ = unit_rows(K.detach()).numpy().astype(np.float32)
        self.selection_["trained"] = {"epochs": self.train_epochs, "lr": self.lr, "final_loss": round(loss.item(), 4)}

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.keys_ = np.vstack([self.keys_, E.astype(np.float32)])
        self.codes_ = np.concatenate([self.codes_, codes.astype(np.int64)])
        self.key_weights_ = np.concatenate([self.key_weights_, np.ones(len(E)) if w is None else w])

    def _cache(self, Q: np.ndarray, beta: float) -> np.ndarray:
        """Cache scores of queries ``Q`` (n, dim), shape (n, n_classes)."""
        Q = Q.astype(np.float64)
        keys = self.keys_.astype(np.float64)
        if beta == 0.0:  # the cosine to each class's (weighted) mean key
            return Q @ unit_rows(self._onehot().T @ keys).T
        return np.exp(-beta * (1.0 - Q @ keys.T)) @ self._onehot()

    def _loo_cache(self, beta: float, rows: np.ndarray) -> np.ndarray:
        """Cache scores of support rows ``rows`` with their own key left out, shape (len(rows), n_classes)."""
        keys = self.keys_.astype(np.float64)
        if beta == 0.0:
            S = loo_mean_cosines(keys, keys, self._onehot(weighted=False), self.codes_, self.key_weights_)
            return S[rows]
        A = np.exp(-beta * (1.0 - keys[rows] @ keys.T))
        A[np.arange(len(rows)), rows] = 0.0  # an example is not its own neighbour
        return A @ self._onehot()

    def _select(self, prior: np.ndarray | None) -> None:
        n = len(self.keys_)
        counts = np.bincount(self.codes_, minlength=len(self.classes_))
        # only examples whose class keeps another key when they are held out can be scored
        scorable = np.flatnonzero(counts[self.codes_] >= 2)
        if len(scorable) > MAX_LOO:
            scorable = np.sort(np.random.default_rng(self.seed).choice(scorable, MAX_LOO, replace=False))
        betas = BETAS if self.beta is None else (float(self.beta),)
        if prior is None:
            weights = ((0.0, 1.0),)
        elif self.weights is None:
            weights = WEIGHTS
        else:
            weights = (tuple(float(v) for v in self.weights),)
        self.selection_: dict[str, Any] = {"scored_examples": int(len(scorable)), "candidates": []}
        # the default, used when the support cannot tell candidates apart: the class-mean cache, and the
        # prior with an equal say only if it beats chance on the support (it never saw those examples)
        default_beta = float(self.beta) if self.beta is not None else DEFAULT_BETA
        if len(weights) == 1:
            default_weights = weights[0]
        else:
            from scipy.stats import binomtest

            hits = int((prior.argmax(axis=1) == self.codes_).sum())
            p = binomtest(hits, n, 1.0 / len(self.classes_), alternative="greater").pvalue
            default_weights = (1.0, 1.0) if p < 0.05 else (0.0, 1.0)
            self.selection_["prior_support_hits"] = f"{hits}/{n}, p={p:.3g} against chance"
        if len(scorable) == 0:
            # one example a class: the cache cannot be scored, so the default stands
            self.beta_, self.weights_ = default_beta, default_weights
            rows = np.arange(min(n, MAX_LOO))
            self.cache_scale_ = float(self._loo_cache(self.beta_, rows).std()) or 1.0
            self.temperature_ = 1.0
            self.selection_["picked"] = {"beta": self.beta_, "weights": list(self.weights_), "why": "defaults"}
            return
        y = self.codes_[scorable]
        w = self.key_weights_[scorable]
        found: dict[tuple[float, tuple[float, float]], tuple[float, float, float, float]] = {}
        for beta in betas:
            cache = self._loo_cache(beta, scorable)
            s_cache = float(cache.std()) or 1.0
            for wp, wc in weights:
                S = wc * cache / s_cache
                if prior is not None and wp:
                    S = S + wp * prior[scorable] / self.prior_scale_
                acc = float(np.average(S.argmax(axis=1) == y, weights=w))
                temp = fit_temperature(S, y)
                loss = nll(S, y, temp)
                self.selection_["candidates"].append(
                    {"beta": beta, "weights": [wp, wc], "loo_accuracy": round(acc, 4), "loo_log_loss": round(loss, 4)}
                )
                found[(beta, (wp, wc))] = (acc, loss, s_cache, temp)
        best = max(found, key=lambda k: (found[k][0], -found[k][1]))
        acc = found[best][0]
        # one-standard-error rule (Breiman et al. 1984): a few dozen held-out examples cannot tell close
        # candidates apart, so the default stays unless the best beats it by more than the noise
        se = float(np.sqrt(max(acc * (1 - acc), 1e-12) / len(scorable)))
        default = (default_beta, default_weights)
        if default in found and found[default][0] >= acc - se:
            pick = default
            why = (
                f"the default is within one standard error ({se:.3f}) of the best leave-one-out accuracy "
                f"{acc:.4f} on {len(scorable)} support examples"
            )
        else:
            pick, why = best, f"best leave-one-out accuracy {acc:.4f} on {len(scorable)} support examples"
        self.beta_, self.weights_ = pick
        _, _, self.cache_scale_, self.temperature_ = found[pick]
        self.selection_["picked"] = {"beta": self.beta_, "weights": list(self.weights_), "why": why}

    def _held_out_template(self) -> BaseHead:
        # the folds keep the beta and weights chosen on all examples: chosen again in each fold they differ
        # (a fold's cache alone against the full fit's prior plus four times the cache), and scores on
        # another scale would set the abstention threshold and the temperature for a head that is not this one
        return clone(self).set_params(beta=self.beta_, weights=tuple(self.weights_) if self.uses_prior_ else None)

    # -- prediction ---------------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return self.temperature_

    def class_scores(self, E: Any, prior: Any = None) -> np.ndarray:
        """Fused scores, shape (n_samples, n_classes); ``prior`` as at fit (zero-shot scores, same columns)."""
        E = self._check_input(E)
        if self.uses_prior_ and prior is None:
            raise InputError("this cache adapter was fitted with zero-shot prior scores; pass prior=")
        if not self.uses_prior_ and prior is not None:
            raise InputError("this cache adapter was fitted without prior scores; do not pass prior=")
        wp, wc = self.weights_
        S = wc * self._cache(E, self.beta_) / self.cache_scale_
        if prior is not None:
            S = S + wp * self._check_prior(prior, len(E)) / self.prior_scale_
        return S

    def decision_function(self, E: Any, prior: Any = None) -> np.ndarray:
        S = self.class_scores(E, prior)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict_proba(self, E: Any, prior: Any = None) -> np.ndarray:
        return np.exp(log_softmax(self.class_scores(E, prior), self.temperature_))

    def predict(self, E: Any, prior: Any = None) -> np.ndarray:
        S = self.class_scores(E, prior)  # checks the head is fitted first
        return self.classes_[np.argmax(S, axis=1)]

    # -- persistence --------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        chosen = [self.beta_, *self.weights_, self.prior_scale_, self.cache_scale_, self.temperature_]
        return {
            "keys": self.keys_,
            "codes": self.codes_,
            "key_weights": self.key_weights_,
            "chosen": np.asarray(chosen, dtype=np.float64),
            "uses_prior": np.asarray([self.uses_prior_]),
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.keys_ = np.asarray(arrays["keys"], dtype=np.float32)
        self.codes_ = np.asarray(arrays["codes"], dtype=np.int64)
        self.key_weights_ = np.asarray(arrays.get("key_weights", np.ones(len(self.codes_))), dtype=np.float64)
        beta, wp, wc, self.prior_scale_, self.cache_scale_, self.temperature_ = arrays["chosen"].tolist()
        self.beta_, self.weights_ = beta, (wp, wc)
        self.uses_prior_ = bool(arrays["uses_prior"][0])
        self.selection_ = {"picked": {"beta": beta, "weights": [wp, wc], "why": "loaded"}}
