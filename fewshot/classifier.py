"""The user-facing classifiers: an encoder (the body) joined to a head, fitted on raw inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from fewshot import calibration as cal
from fewshot._bundle import read_bundle, write_bundle
from fewshot._validate import as_labels, json_label
from fewshot.encoders import (
    ConSEEncoder,
    Encoder,
    TextEncoder,
    check_same_encoder,
    encoder_from_identity,
    same_encoder,
)
from fewshot.encoders.images import image_folder
from fewshot.errors import CorruptFileError, InputError, NotFittedError
from fewshot.heads import BaseHead, ZeroShotHead, head_from_state, make_head
from fewshot.heads.base import l2_normalize, softmax
from fewshot.prompts import label_prompts, parse_labels, resolve_templates


def _encoder(encoder: Encoder | None) -> Encoder:
    if encoder is None:
        return TextEncoder()
    if not isinstance(encoder, Encoder):
        raise InputError(f"encoder must be a fewshot Encoder (e.g. TextEncoder()), got {type(encoder).__name__}")
    return encoder


PRIOR = "prior__"  # prefix of the zero-shot prior's arrays inside a classifier's arrays.npz
LABELS = "labels__"  # prefix of a corpus-adapted zero-shot classifier's label-text head arrays
SHIFT = "shift__"  # the corpus mean a corpus-adapted zero-shot classifier centres on
PRIOR_TEMPLATES = "plain"  # the cache adapter's label prior (measured with it: eval/results/text_tuning_*.json)

# zero-shot defaults, each measured (eval/results/text_zeroshot_*.json). The temperature: the lowest
# log-loss with the default templates on the labelled train splits of six datasets outside the headline
# table (0.0555; it was 0.049 with the plain template, so the earlier 0.05 was close).
ZEROSHOT_TEMPERATURE = 0.055
TAG_THRESHOLD = 0.2  # GoEmotions validation split: best micro-F1 at 0.210 (12.6 against 12.4 at 0.2 on test)
SELF_TRAIN_MIN_PER_LABEL = 10  # corpus items per label before "auto" self-trains
SELF_TRAIN_SHARE = 0.25  # share of an even split of the corpus each label keeps
SELF_TRAIN_MIN_KEEP = 8
BODY = "body.safetensors"  # the weights of a tuned encoder


def _save_model(
    path: str | Path,
    kind: str,
    encoder: Encoder,
    head: BaseHead,
    extra: dict[str, Any],
    prior: ZeroShotClassifier | None = None,
    more_arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    config, arrays = head.get_state()
    arrays = {**arrays, **(more_arrays or {})}
    meta = {"encoder": encoder.identity, "head": config, **extra}
    if prior is not None:
        prior_config, prior_arrays = prior.head_.get_state()
        meta["prior"] = {"encoder": prior.encoder_.identity, "head": prior_config, "templates": prior.templates}
        arrays = {**arrays, **{PRIOR + k: v for k, v in prior_arrays.items()}}
    files = {"arrays.npz": lambda p: np.savez(p, **arrays)}
    if getattr(encoder, "tuned_from", None) is not None:
        # a tuned body travels with the model: its weights as safetensors (no pickle), the rest is the
        # recorded starting model
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}  # type: ignore[attr-defined]
        files[BODY] = lambda p: save_file(state, str(p))
    write_bundle(path, kind, meta, files)
    return Path(path)


def _load_tuned_body(identity: dict[str, Any], body: Path) -> Encoder:
    """Rebuild a contrastively tuned text encoder: the recorded starting model plus the saved weights."""
    import copy

    from safetensors.torch import load_file

    start = encoder_from_identity({k: v for k, v in identity.items() if k not in ("tuned_from", "tuning")})
    model = copy.deepcopy(start.model)  # type: ignore[attr-defined]
    model.load_state_dict(load_file(str(body)))
    tuned = TextEncoder(model, normalize=bool(identity.get("normalize", True)))
    tuned.source, tuned.tuned_from, tuned.tuning = identity.get("model"), identity["tuned_from"], identity.get("tuning")
    return tuned


def _load_prior(saved: dict[str, Any], arrays: dict[str, np.ndarray], encoder: Encoder) -> ZeroShotClassifier:
    """The zero-shot prior of a saved classifier; it shares the classifier's encoder where it can."""
    identity = saved["encoder"]
    if same_encoder(identity, encoder.identity):
        prior_encoder = encoder
    elif identity.get("kind") == "conse" and same_encoder(identity["image"], encoder.identity):
        prior_encoder = encoder_from_identity(identity)
        prior_encoder.image = encoder  # type: ignore[attr-defined]  # one backbone for both, one forward pass
    else:
        prior_encoder = encoder_from_identity(identity)
    check_same_encoder(identity, prior_encoder, "the zero-shot prior")
    head = head_from_state(saved["head"], {k[len(PRIOR) :]: v for k, v in arrays.items() if k.startswith(PRIOR)})
    zs = ZeroShotClassifier(head.classes_.tolist(), encoder=prior_encoder, templates=saved.get("templates"))
    zs._encoder, zs.head_, zs.label_head_, zs.shift_ = prior_encoder, head, head, None
    zs.temperature_, zs.threshold_ = 1.0, None
    return zs


def _load_model(path: str | Path, kind: str, encoder: Encoder | None) -> tuple[dict[str, Any], Encoder, BaseHead]:
    manifest, files = read_bundle(path, kind)
    try:
        with np.load(files["arrays.npz"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        own = {k: v for k, v in arrays.items() if not k.startswith((PRIOR, LABELS, SHIFT))}
        head = head_from_state(manifest["head"], own)
        manifest["_arrays"] = arrays
        identity = manifest["encoder"]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise CorruptFileError(f"{path}: the saved model cannot be read ({type(exc).__name__}: {exc})") from exc
    if encoder is None:
        if identity.get("tuned_from") is not None:
            if BODY not in files:
                raise CorruptFileError(f"{path}: the model was tuned, but its body weights are missing")
            encoder = _load_tuned_body(identity, files[BODY])
        else:
            encoder = encoder_from_identity(identity)
    check_same_encoder(identity, encoder, f"the model at {path}")
    if encoder.dim != head.n_features_in_:
        raise CorruptFileError(
            f"{path}: the head expects dimension {head.n_features_in_}, the encoder gives {encoder.dim}"
        )
    return manifest, encoder, head


def _folder_or_examples(X: Any, y: Any, encoder: Encoder) -> tuple[Any, Any]:
    if y is not None:
        return X, y
    if encoder.modality == "image" and isinstance(X, (str, Path)) and Path(X).is_dir():
        return image_folder(X)
    encoder.validate(X)  # a bad X is the first thing to report
    raise InputError("y (the labels) is missing; give one label per example")


class _Calibrated:
    """Calibrated probabilities and abstention, shared by the few-shot and zero-shot classifiers.

    The classifier provides ``_head_inputs`` (what its head scores), ``_head``, ``classes_``, ``encoder_``
    and the ``calibrate``, ``abstain`` and ``abstain_label`` settings; it sets ``temperature_`` and
    ``threshold_`` when fitted.
    """

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        """What the head scores: the embeddings of ``X`` and any extra inputs (the label prior)."""
        raise NotImplementedError

    def decision_function(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Head scores, array of shape (n_samples, n_classes), columns in ``classes_`` order (cosine
        similarities for the prototype and zero-shot heads)."""
        E, kw = self._head_inputs(X, show_progress)
        return self._head().decision_function(E, **kw)

    def predict_proba(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Calibrated class probabilities, array of shape (n_samples, n_classes), columns in ``classes_``
        order. An abstaining classifier still gives every class a probability here."""
        E, kw = self._head_inputs(X, show_progress)
        return self._temper(self._head().predict_proba(E, **kw))

    def predict(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Predicted labels, array of shape (n_samples,); with abstention on, an object array in which
        ``abstain_label`` marks the inputs whose best score falls below ``threshold_``."""
        return self._labels(self.decision_function(X, show_progress))

    def predict_with_proba(self, X: Any, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_proba`` from one encoding pass."""
        E, kw = self._head_inputs(X, show_progress)
        head = self._head()
        return self._labels(head.decision_function(E, **kw)), self._temper(head.predict_proba(E, **kw))

    def _temper(self, P: np.ndarray) -> np.ndarray:
        T = getattr(self, "temperature_", 1.0)
        return P if T == 1.0 else softmax(np.log(np.clip(P, 1e-12, None)), T)

    def _labels(self, S: np.ndarray) -> np.ndarray:
        labels = self.classes_[np.argmax(S, axis=1)]
        threshold = getattr(self, "threshold_", None)
        if threshold is None:
            return labels
        out = labels.astype(object)
        out[S.max(axis=1) < threshold] = self.abstain_label
        return out

    def _fit_temperature(self, S: np.ndarray, codes: np.ndarray, method: str) -> None:
        logp = cal.log_proba(self.head_, S)
        T = cal.fit_temperature(logp, codes)
        self.temperature_ = T
        self.calibration_ = {
            "method": method,
            "n": int(len(codes)),
            "ece_before": cal.expected_calibration_error(softmax(logp), codes),
            "ece_after": cal.expected_calibration_error(softmax(logp, T), codes),
        }

    def fit_calibration(self, X: Any, y: Any, show_progress: bool = False) -> Any:
        """Refit the temperature and the abstention threshold on a labelled validation split.

        Rows labelled ``abstain_label`` are out-of-scope examples: with some present, the threshold is the
        one with the best validation accuracy (an abstention is right exactly on them); without, and with
        ``abstain`` set, it is the low quantile of the true class's scores, as from the support set.
        """
        self._head()
        items = self.encoder_.validate(X)
        y = np.asarray(list(y), dtype=object) if not isinstance(y, np.ndarray) else y.astype(object)
        if len(y) != len(items):
            raise InputError(f"X has {len(items)} items but y has {len(y)} labels")
        oos = np.asarray([self._is_abstain(v) for v in y.tolist()], dtype=bool)
        known = {str(c) for c in self.classes_.tolist()}
        unknown = sorted({str(v) for v, o in zip(y.tolist(), oos) if not o and str(v) not in known})
        if unknown:
            raise InputError(f"labels the model never saw: {', '.join(unknown[:5])}")
        if oos.all():
            raise InputError("every validation row is out of scope; the temperature needs in-scope rows")
        S = self.decision_function(items, show_progress)
        index = {str(c): i for i, c in enumerate(self.classes_.tolist())}
        codes = np.asarray([index[str(v)] if not o else -1 for v, o in zip(y.tolist(), oos)])
        if self.calibrate:
            self._fit_temperature(S[~oos], codes[~oos], "validation split")
        best = S.max(axis=1)
        if oos.any():
            correct = S.argmax(axis=1) == codes
            self.threshold_ = cal.best_threshold(best, correct, oos)
        elif self.abstain is not None:
            self.threshold_ = cal.quantile_threshold(S[~oos], codes[~oos])
        return self

    def _is_abstain(self, v: Any) -> bool:
        if self.abstain_label is None:
            return v is None or (isinstance(v, float) and np.isnan(v))
        return v == self.abstain_label

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on ``X`` against ``y``. Labels the model never saw are refused, not counted as misses:
        they usually mean a mismatched label column (``"Positive"`` against ``"positive"``). With abstention
        on, rows labelled ``abstain_label`` (None by default) are right when the model abstains on them."""
        self._head()
        items = self.encoder_.validate(X)
        abstaining = getattr(self, "threshold_", None) is not None
        if abstaining:
            y = np.asarray(list(y), dtype=object)
            if len(y) != len(items):
                raise InputError(f"y has {len(y)} labels for {len(items)} examples")
            oos = np.asarray([self._is_abstain(v) for v in y.tolist()], dtype=bool)
        else:
            y = as_labels(y, len(items))
            oos = np.zeros(len(y), dtype=bool)
        unknown = sorted({str(v) for v, o in zip(y.tolist(), oos) if not o} - {str(c) for c in self.classes_.tolist()})
        if unknown:
            raise InputError(
                f"labels the model never saw: {', '.join(unknown[:5])}; "
                f"it knows {', '.join(map(str, self.classes_[:10]))}"
            )
        pred = self.predict(items)
        hits = [self._is_abstain(p) if o else (not self._is_abstain(p) and p == t) for p, t, o in zip(pred, y, oos)]
        return float(np.average(np.asarray(hits, dtype=float), weights=sample_weight))

    def _calibration_state(self) -> dict[str, Any]:
        return {
            "temperature": getattr(self, "temperature_", 1.0),
            "threshold": getattr(self, "threshold_", None),
            **getattr(self, "calibration_", {"method": "none"}),
        }

    def _set_calibration_state(self, saved: dict[str, Any] | None, path: Any) -> None:
        saved = dict(saved or {})
        try:
            self.temperature_ = float(saved.pop("temperature", 1.0))
            threshold = saved.pop("threshold", None)
            self.threshold_ = None if threshold is None else float(threshold)
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path}: the saved calibration cannot be read ({exc})") from exc
        self.calibration_ = saved or {"method": "none"}


class FewShotClassifier(_Calibrated, ClassifierMixin, BaseEstimator):
    """Classify raw inputs from a handful of labelled examples.

    Parameters
    ----------
    encoder : a fewshot encoder; None means the bundled text model (all-MiniLM-L6-v2, offline).
    head : ``"prototype"`` (nearest class mean, the default), ``"knn"``, ``"linear"``, ``"cache"``
        (Tip-Adapter: a cache of the examples fused with zero-shot scores of the label names), ``"auto"``
        (the best of those by cross-validation on the examples; ``head_.selection_`` says why), or a head
        instance.
    head_params : keyword arguments for the head, e.g. ``{"k": 5}`` for ``"knn"``.
    label_prior : for heads that take one (``"cache"``): score the label names zero-shot and let the head
        weigh that against the examples. ``"auto"`` (default) does so when every label is text that is
        not a number; images get their label scores through ConSE (or CLIP's text tower).
    tune : contrastive tuning of a text encoder on the examples before the head is fitted
        (:func:`fewshot.tuning.contrastive_tune`): False (default, the encoder stays frozen), True (the
        default settings), or a dict of its keyword arguments (``{"steps": 30, "seed": 0}``). The tuned
        body is saved with the classifier, and its identity records what it was tuned from.
    calibrate : temperature-scale the probabilities (default True): one scalar fitted on held-out scores
        of the examples themselves (leave-one-out for class means, k-fold for other heads), so that a
        0.8 means right 8 times in 10. Needs two examples in every class; otherwise left at 1.
        :meth:`fit_calibration` refits it (and the abstention threshold) on a labelled validation split.
    abstain : "none of these". None (default): always answer. ``"auto"``: abstain when the best class
        scores below the threshold that 5% of the examples' own held-out scores fall under
        (:data:`fewshot.calibration.ABSTAIN_QUANTILE`). A number: that threshold on the head's score
        (``decision_function``; a cosine for the prototype head).
    abstain_label : what ``predict`` returns for an abstention (default None; the CLI writes it as an
        empty label).

    Attributes
    ----------
    classes_ : array of shape (n_classes,), the labels; ``predict_proba`` columns follow it.
    head_ : the fitted head.
    temperature_ : the calibration temperature (1.0 when not calibrated); ``calibration_`` says how it was
        fitted and the calibration error before and after on the held-out scores.
    threshold_ : the abstention threshold in use, or None.

    Examples
    --------
    >>> clf = FewShotClassifier().fit(["great film", "awful plot"], ["pos", "neg"])  # doctest: +SKIP
    >>> clf.predict(["what a movie"])  # doctest: +SKIP
    array(['pos'], dtype='<U3')
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        head: str | BaseHead = "prototype",
        head_params: dict | None = None,
        label_prior: bool | str = "auto",
        tune: bool | dict | None = False,
        calibrate: bool = True,
        abstain: float | str | None = None,
        abstain_label: Any = None,
    ):
        self.encoder = encoder
        self.head = head
        self.head_params = head_params
        self.label_prior = label_prior
        self.tune = tune
        self.calibrate = calibrate
        self.abstain = abstain
        self.abstain_label = abstain_label

    @property
    def encoder_(self) -> Encoder:
        if getattr(self, "_encoder", None) is None:
            self._encoder = _encoder(self.encoder)
        return self._encoder

    @property
    def classes_(self) -> np.ndarray:
        return self._head().classes_

    def _head(self) -> BaseHead:
        if not hasattr(self, "head_"):
            raise NotFittedError("this FewShotClassifier is not fitted yet; call fit(X, y) first")
        return self.head_

    def embed(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``X``, array of shape (n_samples, dim)."""
        return self.encoder_.encode(X, show_progress=show_progress)

    def fit(self, X: Any, y: Any = None, show_progress: bool = False) -> FewShotClassifier:
        """Fit on examples ``X`` (texts, or inputs of the encoder's modality) with labels ``y``.

        For an image encoder, ``X`` may also be a folder with one subfolder of images per class (the
        subfolder names are the labels) and ``y`` left out.
        """
        base = _encoder(self.encoder)
        X, y = _folder_or_examples(X, y, base)
        items = base.validate(X)
        y = as_labels(y, len(items))
        # a head instance is cloned first: fitting never mutates the object the user passed in
        head = clone(self.head) if isinstance(self.head, BaseHead) else self.head
        head = make_head(head, **(self.head_params or {}))
        abstain = cal.as_threshold(self.abstain)
        self._encoder = base
        if self.tune:
            from fewshot.tuning import contrastive_tune

            params = {} if self.tune is True else dict(self.tune)
            if not isinstance(base, TextEncoder):
                raise InputError("tune= needs a TextEncoder (a sentence-transformers body) as the encoder")
            self._encoder = contrastive_tune(base, items, y, show_progress=show_progress, **params)
        E = self.embed(items, show_progress)
        self.prior_ = None
        kw: dict[str, Any] = {}
        if getattr(head, "accepts_prior", False) and self._wants_prior(y):
            self.prior_ = ZeroShotClassifier(
                np.unique(y).tolist(), encoder=self.encoder_, templates=PRIOR_TEMPLATES, temperature=0.05
            ).fit()
            kw = self._scores_kw(items, E)
        self.head_ = head.fit(E, y, **kw)
        self._calibrate_on_support(E, y, kw, abstain)
        return self

    def _codes(self, y: np.ndarray) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        return np.asarray([index[v] for v in y.tolist()], dtype=np.int64)

    def _calibrate_on_support(self, E: np.ndarray, y: np.ndarray, kw: dict, abstain: float | str | None) -> None:
        """Temperature and abstention threshold from held-out scores of the examples (never test data)."""
        self.temperature_, self.threshold_ = 1.0, None
        self.calibration_: dict[str, Any] = {"method": "none"}
        needs_scores = self.calibrate or abstain == "auto"
        codes = self._codes(y)
        S = cal.held_out_scores(self.head_, E, codes, fit_kw=kw) if needs_scores else None
        if self.calibrate and S is not None:
            self._fit_temperature(S, codes, "held-out support")
        elif self.calibrate:
            self.calibration_ = {"method": "none", "why": "a class has a single example: nothing to hold out"}
        if abstain == "auto":
            if S is None:
                raise InputError(
                    "abstain='auto' sets its threshold from held-out examples and needs at least 2 examples in "
                    "every class; give a number, or call fit_calibration(X_val, y_val) with a validation split"
                )
            self.threshold_ = cal.quantile_threshold(S, codes)
        elif abstain is not None:
            self.threshold_ = float(abstain)

    def _wants_prior(self, y: np.ndarray) -> bool:
        if self.label_prior not in (True, False, "auto"):
            raise InputError(f"label_prior must be True, False or 'auto', got {self.label_prior!r}")
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

    def _scores_kw(self, items: list[Any], E: np.ndarray) -> dict[str, Any]:
        """Extra inputs of the head: the zero-shot prior scores, for a cache adapter fitted with them.

        When the prior shares the classifier's encoder (text, CLIP) it scores the embeddings ``E`` already
        computed; only a prior in another space (ConSE for a plain image backbone) encodes ``items`` itself.
        """
        prior = getattr(self, "prior_", None)
        if prior is None:
            return {}
        if prior.encoder_ is self.encoder_:
            return {"prior": prior.head_.decision_function(E)}
        return {"prior": prior.decision_function(items)}

    def add_examples(self, X: Any, y: Any) -> FewShotClassifier:
        """Add labelled examples, including examples of new classes, without refitting from scratch.

        Only the new examples are encoded. New classes are appended to ``classes_``. The calibration
        temperature and the abstention threshold stay as fitted; ``fit`` or :meth:`fit_calibration` refreshes
        them.
        """
        if not hasattr(self, "head_"):
            return self.fit(X, y)
        items = self.encoder_.validate(X)
        y = as_labels(y, len(items))
        self.head_.partial_fit(self.embed(items), y)
        if getattr(self, "prior_", None) is not None and len(self.head_.classes_) != len(self.prior_.classes_):
            # new classes: their label names join the prior, in the head's column order
            self.prior_ = ZeroShotClassifier(
                self.head_.classes_.tolist(), encoder=self.encoder_, templates=PRIOR_TEMPLATES, temperature=0.05
            ).fit()
        return self

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        self._head()
        items = self.encoder_.validate(X)
        E = self.embed(items, show_progress)
        return E, self._scores_kw(items, E)

    def save(self, path: str | Path) -> Path:
        """Save to a folder (JSON manifest + numpy arrays, no pickle), atomically."""
        extra = {
            "label_prior": self.label_prior,
            "tune": self.tune,
            "calibrate": self.calibrate,
            "abstain": self.abstain,
            "abstain_label": json_label(self.abstain_label) if self.abstain_label is not None else None,
            "calibration": self._calibration_state(),
        }
        return _save_model(path, "classifier", self.encoder_, self._head(), extra, getattr(self, "prior_", None))

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> FewShotClassifier:
        """Load a saved classifier. ``encoder`` defaults to the recorded one and must match it."""
        manifest, encoder, head = _load_model(path, "classifier", encoder)
        self = cls(
            encoder=encoder,
            head=head.name,
            head_params=head.get_params(),
            label_prior=manifest.get("label_prior", "auto"),
            tune=manifest.get("tune", False),
            calibrate=manifest.get("calibrate", True),
            abstain=manifest.get("abstain"),
            abstain_label=manifest.get("abstain_label"),
        )
        self._encoder, self.head_ = encoder, head
        self._set_calibration_state(manifest.get("calibration"), path)
        self.prior_ = None
        if "prior" in manifest:
            try:
                self.prior_ = _load_prior(manifest["prior"], manifest["_arrays"], encoder)
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptFileError(f"{path}: the saved zero-shot prior cannot be read ({exc})") from exc
        return self


class ZeroShotClassifier(_Calibrated, ClassifierMixin, BaseEstimator):
    """Classify and tag inputs from label text alone: no examples needed.

    Parameters
    ----------
    labels : a list of names (``["sports", "politics"]``), a dict name -> description, a dict name ->
        list of attributes, or a list of ``"name: attribute, attribute"`` strings (see
        :func:`fewshot.prompts.parse_labels`). Several phrasings of one label are pooled into one vector.
    encoder : a fewshot encoder; None means the bundled text model. For images: a :class:`ClipEncoder`
        (labels and images in CLIP's shared space), a :class:`ConSEEncoder`, or a plain
        :class:`ImageEncoder`, which is wrapped in a ConSEEncoder with the bundled text model.
    templates : a template set name from ``fewshot/templates/text.json`` (``image.json`` for image
        encoders), a list of templates with ``{}``, or None for the default set (the six-template
        "ensemble" for text, "a photo of a {}." for images).
    temperature : softmax temperature on the cosine scores for ``predict_proba``. The default,
        :data:`ZEROSHOT_TEMPERATURE`, is the temperature with the lowest log-loss on the training splits of
        six datasets outside the headline table (eval/results/text_calibration.json); with a labelled
        validation split, :meth:`fit_calibration` fits one for your data.
    adapt : what ``fit(X)`` does with unlabelled inputs ``X`` of the task (your corpus): ``"auto"``
        (default) self-trains when ``X`` has at least :data:`SELF_TRAIN_MIN_PER_LABEL` items per label,
        ``"selftrain"`` always, ``"center"`` only centres, ``"none"`` ignores ``X``. Self-training centres
        every embedding on the corpus mean, labels the corpus by the label vectors, and replaces each label
        vector by the mean of its most confident quarter of the corpus (one round). Corpus centring alone
        is measured but not used by itself: it lost accuracy on emotion (eval/RESULTS.md).
    abstain : "none of these". None (default): always answer. A number: abstain when the best label's
        score (a cosine) is below it. ``"auto"``: the 5% quantile of the best scores of the corpus given
        to ``fit(X)`` (the corpus is taken to be mostly in scope); without a corpus there is no data to
        set it from, so "auto" asks for one. :meth:`fit_calibration` sets it from a labelled validation
        split whose out-of-scope rows carry ``abstain_label``.
    abstain_label : what ``predict`` returns for an abstention (default None; the CLI writes "").
    calibrate : whether :meth:`fit_calibration` refits the temperature (default True).

    The label prompts are encoded once, on first use.
    """

    def __init__(
        self,
        labels: Any,
        encoder: Encoder | None = None,
        templates: str | list[str] | None = None,
        temperature: float | None = None,
        adapt: str = "auto",
        abstain: float | str | None = None,
        abstain_label: Any = None,
        calibrate: bool = True,
    ):
        self.labels = labels
        self.encoder = encoder
        self.templates = templates
        self.temperature = temperature
        self.adapt = adapt
        self.abstain = abstain
        self.abstain_label = abstain_label
        self.calibrate = calibrate

    @property
    def encoder_(self) -> Encoder:
        if getattr(self, "_encoder", None) is None:
            encoder = _encoder(self.encoder)
            if encoder.modality == "image" and not encoder.supports_text:
                encoder = ConSEEncoder(image=encoder)  # type: ignore[arg-type]
            self._encoder = encoder
        return self._encoder

    def fit(self, X: Any = None, y: Any = None, show_progress: bool = False) -> ZeroShotClassifier:
        """Build the label vectors from the label text; with ``X`` (unlabelled inputs of the task, never
        test data you score against), adapt them to it as ``adapt`` says. ``y`` is ignored."""
        if self.adapt not in ("auto", "selftrain", "center", "none"):
            raise InputError(f"adapt must be 'auto', 'selftrain', 'center' or 'none', got {self.adapt!r}")
        abstain = cal.as_threshold(self.abstain)
        if abstain == "auto" and X is None:
            raise InputError(
                "abstain='auto' sets the threshold from your unlabelled inputs: pass them to fit(X), give a "
                "number, or call fit_calibration(X_val, y_val) with a validation split"
            )
        parsed = parse_labels(self.labels)
        encoder = self.encoder_
        texts, owners, weights = label_prompts(parsed, resolve_templates(self.templates, encoder.modality))
        temperature = ZEROSHOT_TEMPERATURE if self.temperature is None else float(self.temperature)
        # classes_ keep the order the user gave the labels in
        self.label_head_ = ZeroShotHead(temperature=temperature).fit(
            encoder.encode_text(texts), owners, sample_weight=weights, classes=list(parsed)
        )
        self.head_, self.shift_ = self.label_head_, None
        self.adaptation_: dict[str, Any] = {"method": "none"}
        self.temperature_, self.threshold_, self.calibration_ = 1.0, None, {"method": "default temperature"}
        # the corpus is encoded once, for the adaptation and the "auto" threshold alike
        uses_corpus = X is not None and (self.adapt != "none" or abstain == "auto")
        C = encoder.encode(encoder.validate(X), show_progress=show_progress) if uses_corpus else None
        if C is not None and self.adapt != "none":
            self._adapt(C)
        if abstain == "auto":
            best = self.head_.decision_function(self._shifted(C)).max(axis=1)
            self.threshold_ = float(np.quantile(best, cal.ABSTAIN_QUANTILE))
        elif abstain is not None:
            self.threshold_ = float(abstain)
        return self

    def _adapt(self, C: np.ndarray) -> None:
        """Centre on the corpus and (for self-training) move each label vector to its confident items."""
        n, k = len(C), len(self.classes_)
        selftrain = self.adapt == "selftrain" or (self.adapt == "auto" and n >= SELF_TRAIN_MIN_PER_LABEL * k)
        if self.adapt == "auto" and not selftrain:
            self.adaptation_ = {
                "method": "none",
                "why": f"{n} corpus items for {k} labels; self-training needs {SELF_TRAIN_MIN_PER_LABEL} a label",
            }
            return
        self.shift_ = C.astype(np.float64).mean(axis=0)
        Cc = self._shifted(C)
        V = l2_normalize(self.label_head_.centroids_ - self.shift_)
        if not selftrain:  # centring only
            self.head_ = ZeroShotHead(temperature=self.label_head_.temperature).fit(
                V, self.classes_, classes=self.classes_
            )
            self.adaptation_ = {"method": "center", "corpus": n}
            return
        S = Cc @ V.T
        pred = S.argmax(axis=1)
        # confidence = how unusually high an item scores for its label, against the corpus (column z-score):
        # labels whose text sits close to everything do not take the whole corpus
        z = (S - S.mean(axis=0)) / np.maximum(S.std(axis=0), 1e-12)
        key = z[np.arange(n), pred]
        m = max(SELF_TRAIN_MIN_KEEP, int(SELF_TRAIN_SHARE * n / k))
        protos, kept = [], []
        for c in range(k):
            idx = np.flatnonzero(pred == c)
            top = idx[np.argsort(-key[idx], kind="stable")[:m]]
            protos.append(Cc[top].mean(axis=0) if len(top) else V[c])
            kept.append(int(len(top)))
        self.head_ = ZeroShotHead(temperature=self.label_head_.temperature).fit(
            l2_normalize(np.asarray(protos)), self.classes_, classes=self.classes_
        )
        self.adaptation_ = {"method": "selftrain", "corpus": n, "kept_per_label": kept}

    def _shifted(self, E: np.ndarray) -> np.ndarray:
        if self.shift_ is None:
            return E
        return l2_normalize(np.asarray(E, dtype=np.float64) - self.shift_).astype(np.float32)

    def _head(self) -> ZeroShotHead:
        if not hasattr(self, "head_"):
            self.fit()
        return self.head_

    @property
    def classes_(self) -> np.ndarray:
        return self._head().classes_

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        self._head()
        return self._shifted(self.encoder_.encode(X, show_progress=show_progress)), {}

    def tag(
        self, X: Any, threshold: float | None = None, top_k: int | None = None, show_progress: bool = False
    ) -> list[list[tuple[Any, float]]]:
        """Multi-label tags: for each input, the labels whose cosine similarity reaches ``threshold``.

        Each label is scored on its own against its text (the label vectors before any corpus
        adaptation, which is a single-label technique), so an input can get several tags, or none.

        Parameters
        ----------
        threshold : minimum cosine similarity for a tag; None (default) means :data:`TAG_THRESHOLD`, the
            threshold with the best micro-F1 on GoEmotions' validation split for the bundled MiniLM and the
            default templates. An input that matches no label gets an empty list ("none of these").
        top_k : keep at most this many tags per input (None: no limit).

        Returns
        -------
        One list per input of ``(label, score)`` pairs, best first.
        """
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        if threshold is None:
            threshold = TAG_THRESHOLD
        self._head()
        S = self.label_head_.decision_function(self.encoder_.encode(X, show_progress=show_progress))
        classes = self.classes_.tolist()
        out = []
        for row in S:
            order = np.argsort(-row, kind="stable")
            if top_k is not None:
                order = order[:top_k]
            out.append([(classes[j], float(row[j])) for j in order if row[j] >= threshold])
        return out

    def save(self, path: str | Path) -> Path:
        """Save the label vectors, any corpus adaptation and the settings to a folder (no pickle), atomically."""
        head = self._head()
        labels = self.labels if isinstance(self.labels, dict) else list(self.labels)
        extra: dict[str, Any] = {
            "labels": {str(json_label(k)): v for k, v in parse_labels(labels).items()},
            "templates": self.templates,
            "adapt": self.adapt,
            "abstain": self.abstain,
            "abstain_label": json_label(self.abstain_label) if self.abstain_label is not None else None,
            "calibrate": self.calibrate,
            "adaptation": self.adaptation_,
            "calibration": self._calibration_state(),
        }
        more: dict[str, np.ndarray] = {}
        if head is not self.label_head_:
            config, arrays = self.label_head_.get_state()
            extra["label_head"] = config
            more = {LABELS + k: v for k, v in arrays.items()}
            more[SHIFT] = self.shift_
        return _save_model(path, "zeroshot", self.encoder_, head, extra, more_arrays=more)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> ZeroShotClassifier:
        manifest, encoder, head = _load_model(path, "zeroshot", encoder)
        self = cls(
            manifest["labels"],
            encoder=encoder,
            templates=manifest["templates"],
            temperature=head.temperature,
            adapt=manifest.get("adapt", "auto"),
            abstain=manifest.get("abstain"),
            abstain_label=manifest.get("abstain_label"),
            calibrate=manifest.get("calibrate", True),
        )
        self._encoder, self.head_, self.label_head_, self.shift_ = encoder, head, head, None
        arrays = manifest["_arrays"]
        try:
            if "label_head" in manifest:
                self.label_head_ = head_from_state(
                    manifest["label_head"], {k[len(LABELS) :]: v for k, v in arrays.items() if k.startswith(LABELS)}
                )
                self.shift_ = np.asarray(arrays[SHIFT], dtype=np.float64)
                if self.shift_.shape != (head.n_features_in_,):
                    raise ValueError(f"corpus mean of shape {self.shift_.shape}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path}: the saved corpus adaptation cannot be read ({exc})") from exc
        self.adaptation_ = manifest.get("adaptation") or {"method": "none"}
        self._set_calibration_state(manifest.get("calibration"), path)
        return self
