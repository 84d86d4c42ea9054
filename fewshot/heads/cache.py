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
The softmax temperature for ``predict_proba`` is fitted by the same leave-one-out log-loss.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fewshot._validate import as_embeddings
from fewshot.errors import InputError
from fewshot.heads.base import BaseHead, softmax

# beta = 0 stands for the limit of a wide kernel with each class's keys pooled: the cosine to the class mean
BETAS = (0.0, 1.0, 2.0, 3.5, 5.0, 7.5, 10.0, 15.0, 25.0)
# (w_prior, w_cache): prior only, the fusions, cache only
WEIGHTS = ((1.0, 0.0), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (1.0, 4.0), (0.0, 1.0))
TEMPERATURES = tuple(np.geomspace(0.02, 5.0, 25).tolist())
DEFAULT_BETA = 0.0  # one example a class: the prototype
MAX_LOO = 2000  # support examples scored in the leave-one-out search (a fixed subsample above that)


class CacheAdapterHead(BaseHead):
    """Tip-Adapter: a cache of the support examples, optionally fused with zero-shot prior scores.

    Parameters
    ----------
    beta : sharpness of the cache kernel; 0 means the cosine to each class's mean key (the wide-kernel
        limit, a prototype); None chooses it by leave-one-out on the support set.
    weights : ``(w_prior, w_cache)``; None chooses them by leave-one-out. Without a prior only the cache
        counts.
    train_epochs : 0 (default) is training-free. More is the trained mode (the Tip-Adapter-F idea): after
        the selection, the keys are trained for that many full-batch AdamW steps (``lr``, ``seed``) on the
        leave-one-out cross-entropy of the support set.

    ``fit(E, y, prior=S)`` and ``decision_function(E, prior=S)`` take the zero-shot scores ``S`` of the
    same inputs, shape (n, n_classes) in ``classes_`` order (``FewShotClassifier`` computes them from the
    label names). A head fitted with a prior needs one at prediction, and the other way round.

    Attributes
    ----------
    beta_, weights_ : the values in use; ``selection_`` : the leave-one-out accuracy of every candidate
        (empty when nothing could be scored) and what was picked.
    temperature_ : softmax temperature for ``predict_proba``.
    """

    name = "cache"
    accepts_prior: ClassVar[bool] = True
    # train_epochs > 0 is the trained mode (Tip-Adapter-F), see _train_keys

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
        self._prior_in = prior
        try:
            return super().fit(E, y, sample_weight, classes)
        finally:
            del self._prior_in

    def partial_fit(self, E: Any, y: Any, sample_weight: Any = None, prior: Any = None):
        """Add keys (examples of new classes too); the chosen beta, weights and scales are kept."""
        return super().partial_fit(E, y, sample_weight)

    def _fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.keys_, self.codes_ = E.astype(np.float32), codes.astype(np.int64)
        prior = self._prior_in
        self.uses_prior_ = prior is not None
        if prior is not None:
            prior = as_embeddings(prior, dim=len(self.classes_), what="prior scores").astype(np.float64)
            if len(prior) != len(E):
                raise InputError(f"prior scores have {len(prior)} rows for {len(E)} examples")
            self.prior_scale_ = float(prior.std()) or 1.0
        else:
            self.prior_scale_ = 1.0
        self._select(prior)
        if self.train_epochs:
            self._train_keys(prior)

    def _train_keys(self, prior: np.ndarray | None) -> None:
        """The trained mode (Tip-Adapter-F): the keys, initialised from the support embeddings, are tuned
        by full-batch AdamW on the cross-entropy of the fused scores over the support set. Each example is
        scored without its own key (the leave-one-out mask), so the keys cannot just learn to find
        themselves; beta, the weights, the scales and the temperature stay as selected."""
        import torch

        if not isinstance(self.train_epochs, int) or self.train_epochs < 0:
            raise InputError(f"train_epochs must be a non-negative integer, got {self.train_epochs!r}")
        torch.manual_seed(self.seed)
        X = torch.as_tensor(self.keys_, dtype=torch.float64)
        K = torch.nn.Parameter(X.clone())
        Y = torch.nn.functional.one_hot(torch.as_tensor(self.codes_), len(self.classes_)).to(torch.float64)
        y = torch.as_tensor(self.codes_)
        wp, wc = self.weights_
        base = torch.zeros((len(X), len(self.classes_)), dtype=torch.float64)
        if prior is not None and wp:
            base = torch.as_tensor(prior, dtype=torch.float64) * wp / self.prior_scale_
        own = torch.eye(len(X), dtype=torch.bool)
        optimiser = torch.optim.AdamW([K], lr=self.lr, weight_decay=0.0)
        for _ in range(self.train_epochs):
            Kn = torch.nn.functional.normalize(K, dim=1)
            sims = X @ Kn.T
            if self.beta_ == 0.0:
                # class means of the keys, each example's own key left out of its class's mean
                sums = Y.T @ Kn
                means = sums.unsqueeze(0) - (Kn.unsqueeze(1) * Y.unsqueeze(2))
                means = torch.nn.functional.normalize(means, dim=2)
                cache = torch.einsum("nd,ncd->nc", X, means)
            else:
                A = torch.exp(-self.beta_ * (1.0 - sims)).masked_fill(own, 0.0)
                cache = A @ Y
            logits = (base + wc * cache / self.cache_scale_) / self.temperature_
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self.keys_ = torch.nn.functional.normalize(K.detach(), dim=1).numpy().astype(np.float32)
        self.selection_["trained"] = {"epochs": self.train_epochs, "lr": self.lr, "final_loss": round(loss.item(), 4)}

    def _partial_fit(self, E: np.ndarray, codes: np.ndarray, w: np.ndarray | None) -> None:
        self.keys_ = np.vstack([self.keys_, E.astype(np.float32)])
        self.codes_ = np.concatenate([self.codes_, codes.astype(np.int64)])

    def _cache(self, Q: np.ndarray, beta: float, held_out: np.ndarray | None = None) -> np.ndarray:
        """Cache scores of queries ``Q`` (n, dim), shape (n, n_classes).

        ``held_out`` (optional, one support row index per query) leaves each query's own key out: the
        leave-one-out scores of the support set.
        """
        Q = Q.astype(np.float64)
        keys = self.keys_.astype(np.float64)
        onehot = np.eye(len(self.classes_))[self.codes_]
        if beta == 0.0:
            # the cosine to each class's mean key
            sums = onehot.T @ keys
            if held_out is None:
                return Q @ (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).T
            means = np.broadcast_to(sums, (len(Q), *sums.shape)).copy()
            means[np.arange(len(Q)), self.codes_[held_out]] -= keys[held_out]
            means /= np.maximum(np.linalg.norm(means, axis=2, keepdims=True), 1e-12)
            return np.einsum("nd,ncd->nc", Q, means)
        A = np.exp(-beta * (1.0 - Q @ keys.T))
        if held_out is not None:
            A[np.arange(len(Q)), held_out] = 0.0  # an example is not its own neighbour
        return A @ onehot

    def _loo_cache(self, beta: float, rows: np.ndarray) -> np.ndarray:
        """Cache scores of support rows ``rows`` against all other keys, shape (len(rows), n_classes)."""
        return self._cache(self.keys_[rows], beta, held_out=rows)

    def _select(self, prior: np.ndarray | None) -> None:
        n = len(self.keys_)
        counts = np.bincount(self.codes_, minlength=len(self.classes_))
        # only examples whose class keeps another key when they are held out can be scored
        scorable = np.flatnonzero(counts[self.codes_] >= 2)
        if len(scorable) > MAX_LOO:
            scorable = np.sort(np.random.default_rng(0).choice(scorable, MAX_LOO, replace=False))
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
        found: dict[tuple[float, tuple[float, float]], tuple[float, float, float, float]] = {}
        for beta in betas:
            cache = self._loo_cache(beta, scorable)
            s_cache = float(cache.std()) or 1.0
            for wp, wc in weights:
                S = wc * cache / s_cache
                if prior is not None and wp:
                    S = S + wp * prior[scorable] / self.prior_scale_
                acc = float((S.argmax(axis=1) == y).mean())
                nll, temp = _best_temperature(S, y)
                self.selection_["candidates"].append(
                    {"beta": beta, "weights": [wp, wc], "loo_accuracy": round(acc, 4), "loo_log_loss": round(nll, 4)}
                )
                found[(beta, (wp, wc))] = (acc, nll, s_cache, temp)
        best = max(found, key=lambda k: (found[k][0], -found[k][1]))
        acc = found[best][0]
        # one-standard-error rule (Breiman et al. 1984): a few dozen held-out examples cannot tell close
        # candidates apart, so the default stays unless the best beats it by more than the noise
        se = float(np.sqrt(max(acc * (1 - acc), 1e-12) / len(scorable)))
        default = (default_beta, default_weights)
        if default in found and found[default][0] >= acc - se:
            pick, why = (
                default,
                (
                    f"the default is within one standard error ({se:.3f}) of the best leave-one-out accuracy "
                    f"{acc:.4f} on {len(scorable)} support examples"
                ),
            )
        else:
            pick, why = best, f"best leave-one-out accuracy {acc:.4f} on {len(scorable)} support examples"
        self.beta_, self.weights_ = pick
        _, _, self.cache_scale_, self.temperature_ = found[pick]
        self.selection_["picked"] = {"beta": self.beta_, "weights": list(self.weights_), "why": why}

    # -- prediction ---------------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return self.temperature_

    def decision_function(self, E: Any, prior: Any = None) -> np.ndarray:
        """Fused scores, shape (n_samples, n_classes); ``prior`` as at fit (zero-shot scores, same columns)."""
        E = self._check_input(E)
        if self.uses_prior_ and prior is None:
            raise InputError("this cache adapter was fitted with zero-shot prior scores; pass prior=")
        if not self.uses_prior_ and prior is not None:
            raise InputError("this cache adapter was fitted without prior scores; do not pass prior=")
        cache = self._cache(E, self.beta_)
        wp, wc = self.weights_
        S = wc * cache / self.cache_scale_
        if prior is not None:
            prior = as_embeddings(prior, dim=len(self.classes_), what="prior scores").astype(np.float64)
            if len(prior) != len(E):
                raise InputError(f"prior scores have {len(prior)} rows for {len(E)} inputs")
            S = S + wp * prior / self.prior_scale_
        return S

    def predict_proba(self, E: Any, prior: Any = None) -> np.ndarray:
        return softmax(self.decision_function(E, prior), self.temperature_)

    def predict(self, E: Any, prior: Any = None) -> np.ndarray:
        scores = self.decision_function(E, prior)
        return self.classes_[np.argmax(scores, axis=1)]

    # -- persistence --------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        chosen = [self.beta_, *self.weights_, self.prior_scale_, self.cache_scale_, self.temperature_]
        return {
            "keys": self.keys_,
            "codes": self.codes_,
            "chosen": np.asarray(chosen, dtype=np.float64),
            "uses_prior": np.asarray([self.uses_prior_]),
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.keys_ = np.asarray(arrays["keys"], dtype=np.float32)
        self.codes_ = np.asarray(arrays["codes"], dtype=np.int64)
        beta, wp, wc, self.prior_scale_, self.cache_scale_, self.temperature_ = arrays["chosen"].tolist()
        self.beta_, self.weights_ = beta, (wp, wc)
        self.uses_prior_ = bool(arrays["uses_prior"][0])
        self.selection_ = {"picked": {"beta": beta, "weights": [wp, wc], "why": "loaded"}}


def _best_temperature(S: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The lowest mean log-loss of ``softmax(S / T)`` over a grid of T, and that T."""
    best = (np.inf, 1.0)
    for t in TEMPERATURES:
        P = softmax(S, t)
        nll = float(-np.log(np.clip(P[np.arange(len(y)), y], 1e-12, None)).mean())
        if nll < best[0]:
            best = (nll, t)
    return best
