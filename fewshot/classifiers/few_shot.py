"""``FewShotClassifier``: an encoder (the body) joined to a head, fitted on a handful of labelled examples."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import clone

from fewshot import calibration as cal
from fewshot._validate import as_labels, finite_number, json_label, label_key, warn_conflicting_labels
from fewshot.classifiers.base import FIT_FAILED, CalibratedClassifier, default_encoder, require_fitted
from fewshot.classifiers.persistence import load_model, prefixed, save_model, untuned_start
from fewshot.classifiers.zero_shot import ZeroShotClassifier
from fewshot.encoders import Encoder, TextEncoder, same_encoder
from fewshot.encoders.image_inputs import image_folder
from fewshot.errors import CorruptFileError, InputError, warn_user, warns_once
from fewshot.heads import FEW_SHOT_HEADS, AutoHead, BaseHead, KNNHead, make_head
from fewshot.heads.base import check_sample_weight, describe_head
from fewshot.heads.registry import check_head
from fewshot.labels import check_label_type, encode_labels
from fewshot.maths import log_softmax
from fewshot.params import Check, Options, validate_params

PRIOR = "prior__"  # prefix of the zero-shot prior's arrays inside a classifier's arrays.npz
LEXICAL = "lexical__"  # prefix of the lexical channel's arrays
LEXICAL_FOLDS = 5  # folds of the lexical channel's held-out scores on a frozen body (fewer for a small class)
PRIOR_TEMPLATES = "plain"  # the template the cache adapter's label prior fills the label names into
PRIOR_TEMPERATURE = 0.05
TUNE_FOLDS = 2  # halves of the examples, each scored by a body tuned on the other (see _cross_fitted)
CROSS_FITTED = f"on {TUNE_FOLDS} held-out folds of the support set, each scored by a body tuned without it"
UNTUNED_HELD_OUT = "held-out support on the untuned body (too few examples a class to cross-fit the tune)"
# on a tuned body, head="auto" keeps this candidate unless another beats it on the held-out folds by more
# than one standard error: the cache adapter, chosen on the development datasets (eval/select_dev.py)
TUNED_PREFERRED = "cache"


ABSTAIN = [None, Options(("auto",)), Check(finite_number, "a number (a score threshold)")]


class FewShotClassifier(CalibratedClassifier):
    """Classify raw inputs from a handful of labelled examples.

    Parameters
    ----------
    encoder : a fewshot encoder; None means the bundled text model (all-MiniLM-L6-v2, offline), loaded
        once per process however many classifiers use it.
    head : ``"prototype"`` (nearest class mean, the default), ``"knn"``, ``"linear"``, ``"cache"``
        (Tip-Adapter: a cache of the examples fused with zero-shot scores of the label names), ``"auto"``
        (the best of those by cross-validation on the examples; ``head_.selection_`` says why), or a head
        instance (cloned at fit; the instance you pass is never changed).
    head_params : keyword arguments for the head, e.g. ``{"k": 5}`` for ``"knn"``.
    label_prior : for heads that take one (``"cache"``, ``"auto"``): score the label names zero-shot and let
        the head weigh that against the examples. ``"auto"`` (default) does so when every label is text
        that is not a number; images get their label scores through ConSE (or CLIP's text tower).
    tune : contrastive tuning of a text encoder on the examples before the head is fitted
        (:func:`fewshot.tuning.contrastive_tune`): False (default, the encoder stays frozen), ``"auto"`` or
        True (a schedule that follows the support set, :func:`fewshot.tuning.auto_schedule`: how many steps,
        the batch and the learning rate from the number of examples; two classes with fewer than 16
        examples a class on average train only the top third of the body's layers), or a dict of its keyword arguments
        (``{"steps": 30, "seed": 0}``; settings left out are the schedule's). ``head="auto"``'s choice and
        the calibration then come from two more tunes, each on half of the examples and scoring the other
        half (a tuned body's own examples say nothing about new inputs), which about doubles the fit time;
        ``"auto"`` keeps the cache adapter (when it is a candidate, as by default) unless another head beats
        it there by more than one standard error (half a support set rarely separates close heads; on the
        development datasets this did better than the best score alone at 8 examples a class). When some
        class has a single example, or no class has four, they fall back to the examples themselves. The
        tuned body is saved with the classifier, and its identity records what it was tuned from.
    calibrate : temperature-scale the probabilities (default True): one scalar fitted on held-out scores
        of the examples themselves (leave-one-out for class means, k-fold for other heads), so that a
        0.8 means right 8 times in 10. Needs two examples in every class; otherwise left at 1.
        :meth:`fit_calibration` refits it (and the abstention threshold) on a labelled validation split.
    abstain : "none of these". None (default): always answer. ``"auto"``: abstain when the best class
        scores below the threshold that 5% of the examples' own held-out scores fall under
        (:data:`fewshot.calibration.ABSTAIN_QUANTILE`); after a tune, held-out scores of bodies tuned
        without them, or, with too few examples a class to tune on half of them, of the untuned body.
        A number: that threshold on the head's class score
        (:meth:`class_scores`; a cosine for the prototype head, a vote share for kNN; one outside that
        range is refused, as every input, or none, would abstain).
    abstain_label : what ``predict`` returns for an abstention (default None; the CLI writes it as an
        empty label).
    lexical : ``"auto"`` (default): for a text encoder, a lexical channel beside the head, TF-IDF features
        of the words and word pairs with a logistic regression (:mod:`fewshot.lexical`), pooled with the
        head's log-probabilities at a weight chosen on held-out scores of the examples (0 unless the pool
        gets at least two more of them right than the head alone, and then the classifier is exactly the
        head alone). With the channel in use, :meth:`class_scores` are the pooled log-probabilities. With
        ``abstain`` set the head is used alone: its own scores (a cosine for the prototype head) say when
        nothing fits, where the pool's relative probabilities do not (a threshold from the examples'
        held-out scores caught 19% of CLINC150's out-of-scope queries on the pool, 75% on the head's
        cosines). Images and other inputs without words keep the head alone too. True is the same as
        ``"auto"``; False: always the head alone. A fitted channel keeps the examples' texts (saved with the
        model) so that :meth:`add_examples` can refit its regression on all of them.

    Attributes
    ----------
    classes_ : array of shape (n_classes,), the labels, sorted; ``predict_proba`` columns follow it.
    head_ : the fitted head. ``encoder_`` : the encoder in use (the tuned copy when ``tune`` is set).
    temperature_ : the calibration temperature (1.0 when not calibrated); ``calibration_`` says how it was
        fitted and the calibration error before and after on the held-out scores.
    threshold_ : the abstention threshold in use, or None.
    tuning_ : with ``tune``, the settings the tune ran with, which of them the schedule chose (``"auto"``),
        and the numbers of examples and classes it saw; None for a frozen body.
    lexical_ : the held-out accuracy of every weight and the one picked, with ``"why"`` when the channel is
        not used (no weight beat the head alone by two held-out examples; or, with no held-out scores to
        choose on, only ``{"picked": 0.0, "why": ...}``); None with ``lexical=False`` or inputs that are not
        text.
        ``lexical_channel_`` : the channel in use, or None.

    Examples
    --------
    >>> clf = FewShotClassifier().fit(["great film", "awful plot"], ["pos", "neg"])  # doctest: +SKIP
    >>> clf.predict(["what a movie"])  # doctest: +SKIP
    array(['pos'], dtype=object)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "encoder": [None, Encoder],
        "head": [Options(FEW_SHOT_HEADS), BaseHead],
        "head_params": [None, dict],
        "label_prior": [Options((True, False, "auto"))],
        "tune": [bool, None, dict, Options(("auto",))],
        "calibrate": [bool],
        "abstain": ABSTAIN,
        "lexical": [Options((False, True, "auto"))],
    }

    def __init__(
        self,
        encoder: Encoder | None = None,
        head: str | BaseHead = "prototype",
        head_params: dict | None = None,
        label_prior: bool | str = "auto",
        tune: bool | str | dict | None = False,
        calibrate: bool = True,
        abstain: float | str | None = None,
        abstain_label: Any = None,
        lexical: bool | str = "auto",
    ):
        self.encoder = encoder
        self.head = head
        self.head_params = head_params
        self.label_prior = label_prior
        self.tune = tune
        self.calibrate = calibrate
        self.abstain = abstain
        self.abstain_label = abstain_label
        self.lexical = lexical

    @property
    def encoder_(self) -> Encoder:
        """The encoder in use: the tuned copy after a fit with ``tune``, else ``encoder`` (or the default)."""
        enc = self.__dict__.get("_encoder")
        if enc is None:
            enc = self.__dict__.setdefault("_encoder", default_encoder(self.encoder))
        return enc

    def _fitted_head(self) -> BaseHead:
        head = require_fitted(self)
        if self._params_changed():
            raise self._params_changed_error()
        return head

    def embed(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``X``, array of shape (n_samples, dim)."""
        return self.encoder_.encode(X, show_progress=show_progress)

    # -- fitting ------------------------------------------------------------------------------------
    @warns_once
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, show_progress: bool = False) -> FewShotClassifier:
        """Fit on examples ``X`` (texts, or inputs of the encoder's modality) with labels ``y``.

        For an image encoder, ``X`` may also be a folder with one subfolder of images per class (the
        subfolder names are the labels) and ``y`` left out. ``sample_weight`` (shape (n_samples,)) makes
        each example count that many times in the head and the lexical channel's regression; tuning and
        calibration see every example once.
        """
        validate_params(self)
        abstain = cal.as_threshold(self.abstain)
        base = default_encoder(self.encoder)
        X, y = _folder_or_examples(X, y, base)
        items = base.validate(X)
        y = as_labels(y, len(items))
        self._check_abstain_label(np.unique(y).tolist())
        if len(np.unique(y)) > 1 and all(isinstance(x, str) for x in items) and len(set(items)) == 1:
            raise InputError(
                f"all {len(items)} examples are the same text ({items[0][:60]!r}) under {len(np.unique(y))} labels, "
                "so no class can be told from another; give each class examples of its own"
            )
        warn_conflicting_labels(items, y)
        weight = check_sample_weight(sample_weight, len(items))
        if weight is not None:
            classes, codes = np.unique(y, return_inverse=True)
            empty = classes[np.bincount(codes, weights=weight, minlength=len(classes)) == 0]
            if len(empty):  # a zero prototype, or a class the regression never sees, would still be answered
                raise InputError(
                    f"class {empty[0].item()!r} has weight 0 on every example, so nothing can be learnt of it; "
                    "drop its examples, or give some of them weight"
                )
        head = make_head(clone(self.head) if isinstance(self.head, BaseHead) else self.head, **(self.head_params or {}))
        check_head(head)
        if isinstance(abstain, float) and not isinstance(head, AutoHead):
            check_threshold(head, abstain)  # before any work; auto's head is known once it is chosen
        if self.tune not in (None, False) and not isinstance(base, TextEncoder):
            raise InputError("tune= needs a TextEncoder (a sentence-transformers body) as the encoder")
        tuning = self._tuning(len(items), len(np.unique(y)), base)
        no_lexical = self._without_lexical(base, items, abstain)  # why the channel is not used, or None
        with self._rw.write():
            self.__dict__.pop("_fitted_with", None)  # this fit replaces the parameters a previous one used
            try:
                encoder, held_out = base, None
                if tuning is not None:
                    from fewshot.tuning import contrastive_tune

                    # a tuned body's own examples say nothing about new inputs: held-out scores come from the
                    # cross-fitted halves for auto's choice, the calibration and the lexical channel's weight
                    if isinstance(head, AutoHead) or self.calibrate or abstain == "auto" or no_lexical is None:
                        held_out = self._cross_fitted(base, items, y, head, tuning, show_progress)
                    encoder = contrastive_tune(base, items, y, show_progress=show_progress, **_tune_settings(tuning))
                self._encoder, self.tuning_ = encoder, tuning
                E = encoder.encode(items, show_progress=show_progress)
                if len(np.unique(y)) > 1 and not np.ptp(E, axis=0).any():
                    raise InputError(
                        f"all {len(items)} examples embed to one vector, so no class can be told from another: "
                        f"{encoder.describe_source()} likely has no token for their characters (MiniLM reads every "
                        "emoji as the same unknown token); give examples with words, or an encoder that reads them"
                    )
                self.prior_ = self._make_prior(head, np.unique(y).tolist(), y)
                kw = self._prior_kw(items, E)
                S = None
                if held_out is not None:
                    folds, accuracy = held_out
                    if isinstance(head, AutoHead):
                        kw["held_out"] = (accuracy, CROSS_FITTED)
                        kw["prefer"] = TUNED_PREFERRED if TUNED_PREFERRED in accuracy else None
                    self.head_ = head.fit(E, y, sample_weight=sample_weight, **kw)
                    kw.pop("held_out", None)
                    kw.pop("prefer", None)
                    chosen = self.head_.head_ if isinstance(head, AutoHead) else self.head_
                    S = _fold_scores(chosen, folds, len(items))
                else:
                    if tuning is not None and isinstance(head, AutoHead):
                        # too few examples to cross-fit the tune: auto's folds see examples the body was tuned
                        # on, where every head looks perfect, so the tuned body's rule decides (keep the cache)
                        names = [describe_head(h) for h in head._heads()]
                        kw["prefer"] = TUNED_PREFERRED if TUNED_PREFERRED in names else None
                    self.head_ = head.fit(E, y, sample_weight=sample_weight, **kw)
                    kw.pop("prefer", None)
                self.lexical_, self.lexical_channel_ = None, None
                how = None if held_out is None else f"held-out support ({CROSS_FITTED})"
                if no_lexical is None and tuning is not None and held_out is None:
                    # the tuned body's own examples would be the held-out scores: every weight looks perfect
                    self.lexical_ = {"picked": 0.0, "why": "too few examples a class to hold some out of the tune"}
                elif no_lexical is None:
                    S, how = self._fit_lexical(items, y, E, kw, S, held_out, how, weight)
                elif no_lexical:
                    self.lexical_ = {"picked": 0.0, "why": no_lexical}
                calibrating = self.calibrate or abstain == "auto"
                if calibrating and tuning is not None and held_out is None and self.lexical_channel_ is None:
                    # too few examples to cross-fit the tune: the tuned body's own examples would look
                    # perfect (an abstention threshold near 1); the untuned body's held-out scores do not
                    S, how = self._untuned_held_out(base, items, y), UNTUNED_HELD_OUT
                self._calibrate_on_support(E, y, kw, abstain, held_out_scores=S, how=how)
                self._mark_fitted()
            except BaseException:
                # a failed fit leaves a half-made state: nothing may score with it until a fit succeeds
                self._fitted_with = (FIT_FAILED, False)
                raise
        return self

    def _without_lexical(self, base: Encoder, items: list[Any], abstain: Any) -> str | None:
        """Why this fit leaves the lexical channel out: "" when it is off or the inputs have no words, a
        reason to record when it could apply but does not, None when it is used."""
        if not self.lexical or base.modality != "text" or not all(isinstance(x, str) for x in items):
            return ""
        if abstain is not None:
            # the pool's probabilities are relative: a threshold on them misses what fits no class (on
            # CLINC150's out-of-scope queries, eval/run_zeroshot.py --part oos)
            return "abstention thresholds work on the head's own scores"
        return None

    def _fit_lexical(
        self,
        items: list[str],
        y: np.ndarray,
        E: np.ndarray,
        kw: dict,
        S: np.ndarray | None,
        held_out: Any,
        how: Any,
        sample_weight: np.ndarray | None,
    ) -> tuple[np.ndarray | None, str | None]:
        """Choose the lexical channel's weight on held-out scores of the examples and fit it if the weight is
        above 0. The held-out scores are the cross-fitted ones on a tuned body (the lexical model is fitted
        on the same folds), else the head's own and :data:`LEXICAL_FOLDS` folds for the lexical model.
        Returns the held-out scores calibration should use (pooled when the channel is on) and how they were
        made."""
        from sklearn.model_selection import StratifiedKFold

        from fewshot.lexical import LexicalChannel, LexicalModel, choose, held_out_log_proba, pool, terms

        if not any(terms(text) for text in items):
            self.lexical_ = {"picked": 0.0, "why": "the examples have no words"}
            return S, how
        codes = encode_labels(y, self.head_.classes_)  # the head's columns, as its held-out scores have them
        n_classes = len(self.head_.classes_)
        if held_out is not None:
            folds = [(fold[0], fold[1]) for fold in held_out[0]]
        else:
            k = min(LEXICAL_FOLDS, int(np.bincount(codes, minlength=n_classes).min()))
            if k < 2:
                self.lexical_ = {"picked": 0.0, "why": "a class has a single example: nothing to hold out"}
                return S, how
            folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(np.zeros(len(codes)), codes))
            S = self.head_.held_out_scores(E, y, **kw)
            how = "held-out support"
        if S is None:
            self.lexical_ = {"picked": 0.0, "why": "the head gave no held-out scores"}
            return S, how
        head_logp = self.head_.log_proba(S)
        lexical_logp = held_out_log_proba(items, codes, n_classes, folds, sample_weight)
        weight, t_head, t_lexical, self.lexical_ = choose(head_logp, lexical_logp, codes)
        if weight == 0.0:
            return S, how
        model = LexicalModel().fit(items, codes, n_classes, sample_weight=sample_weight)
        self.lexical_channel_ = LexicalChannel(model, weight, t_head, t_lexical, list(items), codes, sample_weight)
        return pool(head_logp, lexical_logp, weight, t_head, t_lexical), f"{how}, pooled with the lexical channel"

    def _untuned_held_out(self, base: TextEncoder, items: list[Any], y: np.ndarray) -> np.ndarray | None:
        """Held-out scores of the examples under the untuned body ``base`` (the fitted head's kind, and the
        label prior made with that body), for calibration when the tune cannot be cross-fitted. New inputs
        score higher under the tuned body than these, so a threshold from them errs towards answering."""
        E0 = base.encode(items)
        kw = {}
        if getattr(self, "prior_", None) is not None:
            kw = {"prior": _label_prior(self.head_.classes_.tolist(), base).label_scores(E0)}
        return self.head_.held_out_scores(E0, y, **kw)

    def _cross_fitted(
        self, base: TextEncoder, items: list[Any], y: np.ndarray, head: BaseHead, tuning: dict, show_progress: bool
    ) -> tuple[list[tuple], dict[str, float]] | None:
        """Folds of the examples, each embedded by a body tuned without it, and every candidate head's
        accuracy on them.

        A body tuned on the examples maps each of them close to its class, so scores of the examples under
        it say nothing about new inputs: every candidate of ``head="auto"`` looks perfect and a temperature
        fitted on them is far too confident. Here the examples are split in ``TUNE_FOLDS`` stratified
        parts; for each, a body is tuned on the rest (the same settings, steps in proportion to its share)
        and the candidates fitted on the rest score the held-out part. Returns ([(train, test, E_train,
        E_test, prior_train, prior_test)] per fold, {candidate: accuracy}), or None when a class has too few
        examples to split.
        """
        from sklearn.model_selection import StratifiedKFold

        from fewshot.tuning import contrastive_tune, on_torch

        classes = np.unique(y)
        codes = encode_labels(y, classes)
        counts = np.bincount(codes)
        if counts.min() < TUNE_FOLDS or counts.max() < 2 * TUNE_FOLDS:
            return None  # each fold must hold every class and leave a class with a pair to tune on
        candidates = head._heads() if isinstance(head, AutoHead) else [head]
        names = [describe_head(c) for c in candidates]
        hits = dict.fromkeys(names, 0)
        wants_prior = any(c.accepts_prior for c in candidates) and self._wants_prior(y)
        splitter = StratifiedKFold(n_splits=TUNE_FOLDS, shuffle=True, random_state=tuning.get("seed", 0))
        folds = []
        for train, test in splitter.split(np.zeros(len(codes)), codes):
            part = [items[i] for i in train]
            settings = _tune_settings(tuning)  # as many passes over its share as the full tune makes
            settings["steps"] = max(1, math.ceil(tuning["steps"] * len(train) / len(items)))
            settings["batch_size"] = min(tuning["batch_size"], len(train))
            body = on_torch(contrastive_tune(base, part, y[train], show_progress=show_progress, **settings))
            E_train, E_test = body.encode(part), body.encode([items[i] for i in test])
            P_train = P_test = None
            if wants_prior:
                prior = _label_prior(classes.tolist(), body)
                P_train, P_test = prior.label_scores(E_train), prior.label_scores(E_test)
            folds.append((train, test, codes, E_train, E_test, P_train, P_test))
            for candidate, name in zip(candidates, names):
                fitted = AutoHead._fit_one(candidate, E_train, codes[train], None, P_train)
                hits[name] += int((fitted.predict(E_test, **AutoHead._kw(fitted, P_test)) == codes[test]).sum())
        return folds, {name: round(h / len(items), 4) for name, h in hits.items()}

    def _tuning(self, n_examples: int, n_classes: int, base: Any) -> dict[str, Any] | None:
        """The settings of the tune ``tune`` asks for: the given ones, the rest from the auto schedule."""
        if self.tune is None or self.tune is False:
            return None
        from fewshot.tuning import (
            AUTO_LR,
            FULL_LR,
            auto_schedule,
            check_tune_settings,
            contrastive_tune,
            transformer_layers,
        )

        given = {} if self.tune is True or self.tune == "auto" else dict(self.tune)
        allowed = set(inspect.signature(contrastive_tune).parameters) - {"encoder", "texts", "labels", "show_progress"}
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise InputError(f"tune has unknown settings {unknown}; it takes {', '.join(sorted(allowed))}")
        check_tune_settings(given, "tune setting ")  # before any tune starts, cross-fitted ones included
        found = transformer_layers(base.model)
        chosen = {**auto_schedule(n_examples, n_classes, None if found is None else len(found[2])), "seed": 0}
        if "layers" in given and "lr" not in given:  # the schedule's rate is for the layers it would train
            chosen["lr"] = FULL_LR if given["layers"] is None else AUTO_LR
        auto = sorted(k for k in chosen if k not in given)
        return {**chosen, **given, "auto": auto, "examples": n_examples, "classes": n_classes}

    def _make_prior(self, head: BaseHead, labels: list[Any], y: np.ndarray) -> ZeroShotClassifier | None:
        if not (head.accepts_prior and self._wants_prior(y)):
            return None
        return _label_prior(labels, self.encoder_)

    def _calibrate_on_support(
        self,
        E: np.ndarray,
        y: np.ndarray,
        kw: dict,
        abstain: float | str | None,
        held_out_scores: np.ndarray | None = None,
        how: str | None = None,
    ) -> None:
        """Temperature and abstention threshold from held-out scores of the examples (never test data):
        ``held_out_scores`` when given (made as ``how`` says), else the head's own folds."""
        self.temperature_, self.threshold_ = 1.0, None
        self.calibration_: dict[str, Any] = {"method": "none"}
        needs_scores = self.calibrate or abstain == "auto"
        S = held_out_scores
        if S is None and needs_scores:
            S = self.head_.held_out_scores(E, y, **kw)
        codes = encode_labels(y, self.head_.classes_)  # S has the head's columns
        if self.calibrate and S is not None:
            self._fit_temperature(S, codes, how or "held-out support")
        elif self.calibrate:
            self.calibration_ = {"method": "none", "why": "a class has a single example: nothing to hold out"}
            if abstain != "auto":  # (which refuses this below)
                counts = np.bincount(codes, minlength=len(self.head_.classes_))
                lone = self.head_.classes_[counts < 2].tolist()
                named = ", ".join(map(repr, lone[:3])) + (f" and {len(lone) - 3} more" if len(lone) > 3 else "")
                which = f"class {named} has" if len(lone) == 1 else f"classes {named} have"
                warn_user(
                    f"the probabilities are not calibrated: {which} a single example, so nothing can be held out; "
                    "give each class two, or call fit_calibration(X_val, y_val) with a validation split"
                )
        if abstain == "auto":
            if S is None:
                raise InputError(
                    "abstain='auto' sets its threshold from held-out examples and needs at least 2 examples in "
                    "every class; give a number, or call fit_calibration(X_val, y_val) with a validation split"
                )
            self.threshold_ = cal.quantile_threshold(S, codes)
        elif abstain is not None:
            check_threshold(self.head_, float(abstain))
            self.threshold_ = float(abstain)

    def _wants_prior(self, y: np.ndarray) -> bool:
        if self.label_prior != "auto":
            return bool(self.label_prior)

        def is_word(v: Any) -> bool:
            if not isinstance(v, str):
                return False
            try:
                float(v)
            except ValueError:
                return True
            return False

        return all(is_word(v) for v in np.unique(y).tolist())

    def _prior_kw(self, items: list[Any], E: np.ndarray) -> dict[str, Any]:
        """Extra inputs of the head: the zero-shot prior scores, for a head fitted with them.

        When the prior shares the classifier's encoder (text, CLIP) it scores the embeddings ``E`` already
        computed; only a prior in another space (ConSE for a plain image backbone) encodes ``items`` itself.
        """
        prior = getattr(self, "prior_", None)
        if prior is None:
            return {}
        if prior.encoder_ is self.encoder_:
            return {"prior": prior.label_scores(E)}
        return {"prior": prior.label_scores(prior.encoder_.encode(items))}  # the head's columns, not sorted

    @warns_once
    def add_examples(self, X: Any, y: Any, sample_weight: Any = None) -> FewShotClassifier:
        """Add labelled examples, including examples of new classes, without refitting from scratch.

        Only the new examples are encoded. New classes join ``classes_`` in their sorted places (the columns
        of the classes after them shift one place right). The calibration temperature and the abstention
        threshold stay as fitted; ``fit`` or :meth:`fit_calibration` refreshes them. ``sample_weight`` weighs
        the new examples as in :meth:`fit` (the lexical channel's regression, refitted on every example,
        counts earlier ones as they were given). Predictions from other threads wait for the update and never
        see half of it.
        """
        if not hasattr(self, "head_"):
            return self.fit(X, y, sample_weight=sample_weight)
        items = self.encoder_.validate(X)
        y = as_labels(y, len(items))
        weight = check_sample_weight(sample_weight, len(items))
        E = self.embed(items)  # outside the lock: encoding is the slow part and changes nothing
        with self._rw.write():
            old = self.head_.classes_  # the head's column order, which new classes join at the end
            check_label_type(y, old)
            if old.dtype.kind in "iu" and y.dtype.kind == "f":
                y = y.astype(old.dtype)  # whole floats (a pandas column after dropna) join integer classes as such
            prior = getattr(self, "prior_", None)
            new_classes = [c for c in np.unique(y).tolist() if c not in set(old.tolist())]
            self._check_abstain_label(new_classes)
            known = {label_key(c): c for c in old.tolist() if isinstance(c, str)}
            for c in new_classes:
                if isinstance(c, str) and label_key(c) in known:
                    warn_user(
                        f"the new label {c!r} differs from the class {known[label_key(c)]!r} only in case or "
                        "spaces: it becomes a class of its own, though an uncased encoder reads them alike"
                    )
                    break
            if prior is not None and new_classes:
                # new classes: their label names join the prior, in the head's column order
                prior = _label_prior(old.tolist() + new_classes, self.encoder_)
            knn = _knn_of(self.head_)
            before = getattr(knn, "k_", None)
            self.head_.partial_fit(E, y, sample_weight=weight)
            if knn is not None and before is not None and knn.k_ < before:
                counts = np.bincount(knn.codes_)
                held = np.flatnonzero(counts)
                smallest = self.head_.classes_.tolist()[int(held[np.argmin(counts[held])])]
                warn_user(
                    f"the kNN vote now uses {knn.k_} neighbour(s), not {before}: class {smallest!r} has only "
                    f"{knn.k_} example(s), and k never exceeds the smallest class; add more of its examples"
                )
            self.prior_ = prior
            channel = getattr(self, "lexical_channel_", None)
            if channel is not None:
                codes = encode_labels(y, self.head_.classes_)
                self.lexical_channel_ = channel.add(items, codes, len(self.head_.classes_), weight)
        return self

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        self._fitted_head()
        items = self.encoder_.validate(X)
        E = self.embed(items, show_progress)
        return E, self._prior_kw(items, E)

    def _head_scores(self, X: Any, show_progress: bool) -> np.ndarray:
        channel = getattr(self, "lexical_channel_", None)
        if channel is None:
            return super()._head_scores(X, show_progress)
        head = self._fitted_head()
        items = self.encoder_.validate(X)  # once: the texts feed both channels
        E = self.embed(items, show_progress)
        head_logp = head.log_proba(head.class_scores(E, **self._prior_kw(items, E)))
        pooled = channel.pool(head_logp, items)
        blank = ~E.any(axis=1)  # a text a static model has no token for: its words say nothing either
        if blank.any():  # the head's scores alone (every class alike for the prototype head), not class sizes
            pooled[blank] = log_softmax(head_logp[blank] / channel.head_temperature, 1.0)
        return pooled

    def _log_proba(self, S: np.ndarray) -> np.ndarray:
        if getattr(self, "lexical_channel_", None) is not None:
            return S  # the pooled scores are log-probabilities already
        return super()._log_proba(S)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to a folder (JSON manifest + numpy arrays, no pickle), atomically.

        Saving over the folder this classifier was loaded from (or last saved to) is refused if another
        writer has saved there since (:class:`~fewshot.errors.ConcurrentWriteError`): no update is lost. A
        folder that holds another saved model (one this classifier neither came from nor saved to) is
        replaced only with ``overwrite=True`` (otherwise :class:`~fewshot.errors.SaveExistsError`, checked
        under the folder's lock).
        """
        with self._rw.read():
            head = self._fitted_head()
            extra = {
                "label_prior": self.label_prior,
                "tune": self.tune,
                "tuning": getattr(self, "tuning_", None),
                "calibrate": self.calibrate,
                "abstain": cal.as_threshold(self.abstain),
                "abstain_label": json_label(self.abstain_label) if self.abstain_label is not None else None,
                "calibration": self._calibration_state(),
                "lexical": self.lexical,
                "lexical_selection": getattr(self, "lexical_", None),
                # the parameters as given, so that a loaded copy (and its clone) has the same ones
                "given_encoder": "default" if self.encoder is None else "given",
            }
            given = _given_head_params(self.head, self.head_params)
            if given is not None:
                extra["given_head_params"] = given[0]
            arrays: dict[str, np.ndarray] = {}
            channel = getattr(self, "lexical_channel_", None)
            if channel is not None:
                config, lexical_arrays = channel.get_state()
                extra["lexical_channel"] = config
                arrays.update({LEXICAL + k: v for k, v in lexical_arrays.items()})
            prior = getattr(self, "prior_", None)
            if prior is not None:
                prior_config, prior_arrays = prior.head_.get_state()
                extra["prior"] = {
                    "encoder": prior.encoder_.identity,
                    "head": prior_config,
                    "templates": prior.templates,
                }
                arrays.update({PRIOR + k: v for k, v in prior_arrays.items()})
            manifest = save_model(
                path,
                "classifier",
                self.encoder_,
                head,
                extra,
                arrays,
                expect_save_id=_expected(self, path),
                overwrite=overwrite,
            )
        self._saved_at = (str(Path(path).resolve()), manifest["save_id"])
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> FewShotClassifier:
        """Load a saved classifier. ``encoder`` defaults to the recorded one and must match it."""
        given = encoder
        manifest, arrays, encoder, head = load_model(path, "classifier", encoder, reserved_prefixes=(PRIOR, LEXICAL))
        # a model that tuned its body keeps, as its encoder parameter, the body it started from (as in
        # memory), so that fitting it again (or a clone) tunes from there rather than tuning the tuned body
        start = untuned_start(encoder) if manifest.get("tune", False) not in (None, False) else encoder  # {} tunes
        if given is None and manifest.get("given_encoder") == "default":
            start = None  # fitted with the default encoder, which the parameter names as None
        # as given; else (a head given as an instance, values JSON cannot hold) the fitted head's own settings
        head_params = manifest["given_head_params"] if "given_head_params" in manifest else head._saved_params()
        try:
            self = cls(
                encoder=start,
                head=head.name,
                head_params=head_params,
                label_prior=manifest.get("label_prior", "auto"),
                tune=manifest.get("tune", False),
                calibrate=manifest.get("calibrate", True),
                abstain=manifest.get("abstain"),
                abstain_label=manifest.get("abstain_label"),
                lexical=manifest.get("lexical", False),  # a file without the key predates the channel
            )
            validate_params(self)  # a value the constructor would refuse (a manifest edited by hand)
        except (TypeError, InputError) as exc:
            raise CorruptFileError(f"{path}: the saved settings cannot be read ({exc})") from exc
        self._encoder, self.head_ = encoder, head
        self.tuning_ = manifest.get("tuning")
        self._set_calibration_state(manifest.get("calibration"), path)
        self.prior_ = None
        if "prior" in manifest:
            try:
                self.prior_ = _load_prior(manifest["prior"], prefixed(arrays, PRIOR), encoder)
            except CorruptFileError as exc:
                raise CorruptFileError(f"{path}: the zero-shot prior: {exc}") from exc
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptFileError(f"{path}: the saved zero-shot prior cannot be read ({exc})") from exc
            if [json_label(c) for c in self.prior_.head_.classes_] != [json_label(c) for c in head.classes_]:
                raise CorruptFileError(f"{path}: the saved zero-shot prior's labels are not the head's classes")
        self.lexical_, self.lexical_channel_ = manifest.get("lexical_selection"), None
        if "lexical_channel" in manifest:
            from fewshot.lexical import LexicalChannel

            try:
                saved = prefixed(arrays, LEXICAL)
                self.lexical_channel_ = LexicalChannel.from_state(manifest["lexical_channel"], saved)
            except CorruptFileError as exc:
                raise CorruptFileError(f"{path}: {exc}") from exc
            if self.lexical_channel_.model.coef_.shape[0] != len(head.classes_):
                raise CorruptFileError(f"{path}: the lexical channel's classes do not match the head's")
        self._saved_at = (str(Path(path).resolve()), manifest["save_id"])
        self._mark_fitted()
        return self


ABSTAIN_AUTO_HINT = ", or abstain='auto' to set one from the examples"


def check_threshold(
    head: BaseHead, threshold: float, given: str = "abstain={:g}", alternative: str = ABSTAIN_AUTO_HINT
) -> None:
    """Refuse an abstention threshold outside the head's class scores, where every input, or none, abstains;
    the message names the threshold as ``given`` (a format string) and ends with ``alternative``."""
    bounds = head.score_bounds
    if bounds is not None and not bounds[0] <= threshold <= bounds[1]:
        lo, hi = bounds
        name = f"{head.choice_} head (head='auto' chose it)" if isinstance(head, AutoHead) else f"{head.name} head"
        raise InputError(
            f"{given.format(threshold)} is outside the class scores of the {name} ({lo:g} to {hi:g}), so "
            f"{'every input would abstain' if threshold > hi else 'no input could abstain'}; give a threshold in "
            f"that range{alternative}"
        )


def _fold_scores(head: BaseHead, folds: list[tuple], n: int) -> np.ndarray:
    """Held-out class scores of every example from copies of the fitted ``head`` (its settings chosen on
    all examples held fixed, as in its own ``held_out_scores``) fitted on the other folds' embeddings."""
    S = np.zeros((n, len(head.classes_)))
    template = head._held_out_template()
    for train, test, codes, E_train, E_test, P_train, P_test in folds:
        fitted = AutoHead._fit_one(template, E_train, codes[train], None, P_train)
        S[test] = fitted.class_scores(E_test, **AutoHead._kw(fitted, P_test))
    return S


def _knn_of(head: BaseHead) -> Any:
    """The kNN head that votes for ``head`` (itself, or the one ``auto`` picked), or None."""
    inner = getattr(head, "head_", head) if isinstance(head, AutoHead) else head
    return inner if isinstance(inner, KNNHead) else None


def _label_prior(labels: list[Any], encoder: Any) -> ZeroShotClassifier:
    """The zero-shot scores of the class names that heads such as the cache adapter weigh in. Classes with
    examples may share a label vector (names that differ only in case, to an uncased encoder): their examples
    tell them apart, so the prior allows it where a zero-shot classifier refuses it."""
    prior = ZeroShotClassifier(  # one prompt a class, scored against the embeddings the few-shot head sees
        labels,
        encoder=encoder,
        templates=PRIOR_TEMPLATES,
        temperature=PRIOR_TEMPERATURE,
        expand="none",
        frame="none",
        pool="mean",
    )
    prior._same_label_vectors_ok = True
    prior._scores_only = True  # no background statistics: it is never asked to tag
    return prior.fit()


def _given_head_params(head: Any, head_params: Any) -> tuple[Any] | None:
    """``(head_params,)`` as JSON holds them (tuples as lists), when the head was given by name and they can be
    written; else None, and a loaded copy takes the fitted head's own settings (a head instance carries its
    settings itself)."""
    if not isinstance(head, str):
        return None
    try:
        written = json.loads(json.dumps(head_params))
    except (TypeError, ValueError):
        return None

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v

    return (written,) if written == plain(head_params) else None


def _tune_settings(tuning: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of contrastive_tune in a recorded tuning."""
    return {k: v for k, v in tuning.items() if k not in ("auto", "examples", "classes")}


def _expected(estimator: Any, path: str | Path) -> str | None:
    """The save_id an estimator last saw in ``path`` (loaded from or saved there), or None."""
    saved = estimator.__dict__.get("_saved_at")
    if saved is not None and saved[0] == str(Path(path).resolve()):
        return saved[1]
    return None


def _load_prior(saved: dict[str, Any], arrays: dict[str, np.ndarray], encoder: Encoder) -> ZeroShotClassifier:
    """The zero-shot prior of a saved classifier; it shares the classifier's encoder where it can."""
    from fewshot.encoders import check_same_encoder, encoder_from_identity
    from fewshot.heads import head_from_state

    identity = saved["encoder"]
    if same_encoder(identity, encoder.identity):
        prior_encoder = encoder
    elif identity.get("family") == "conse" and same_encoder(identity["image"], encoder.identity):
        prior_encoder = encoder_from_identity(identity)
        prior_encoder.image = encoder  # one backbone for both, one forward pass
    else:
        prior_encoder = encoder_from_identity(identity)
    check_same_encoder(identity, prior_encoder, "the zero-shot prior")
    head = head_from_state(saved["head"], arrays)
    return ZeroShotClassifier.from_label_head(
        head, encoder=prior_encoder, templates=saved.get("templates"), temperature=head.temperature
    )


def _folder_or_examples(X: Any, y: Any, encoder: Encoder) -> tuple[Any, Any]:
    folder = encoder.modality == "image" and isinstance(X, (str, Path)) and Path(X).is_dir()
    if y is not None:
        if folder:
            raise InputError(
                f"{X} is a folder, whose subfolders give the labels: call fit({str(X)!r}) without y, or give "
                "image files with y"
            )
        return X, y
    if folder:
        return image_folder(X)
    encoder.validate(X)  # a bad X is the first thing to report
    raise InputError("y (the labels) is missing; give one label per example")
