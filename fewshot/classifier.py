"""The user-facing classifiers: an encoder (the body) joined to a head, fitted on raw inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

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
from fewshot.prompts import label_prompts, parse_labels, resolve_templates


def _encoder(encoder: Encoder | None) -> Encoder:
    if encoder is None:
        return TextEncoder()
    if not isinstance(encoder, Encoder):
        raise InputError(f"encoder must be a fewshot Encoder (e.g. TextEncoder()), got {type(encoder).__name__}")
    return encoder


PRIOR = "prior__"  # prefix of the zero-shot prior's arrays inside a classifier's arrays.npz
BODY = "body.safetensors"  # the weights of a tuned encoder


def _save_model(
    path: str | Path,
    kind: str,
    encoder: Encoder,
    head: BaseHead,
    extra: dict[str, Any],
    prior: ZeroShotClassifier | None = None,
) -> Path:
    config, arrays = head.get_state()
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
    zs._encoder, zs.head_ = prior_encoder, head
    return zs


def _load_model(path: str | Path, kind: str, encoder: Encoder | None) -> tuple[dict[str, Any], Encoder, BaseHead]:
    manifest, files = read_bundle(path, kind)
    try:
        with np.load(files["arrays.npz"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        head = head_from_state(manifest["head"], {k: v for k, v in arrays.items() if not k.startswith(PRIOR)})
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


class FewShotClassifier(ClassifierMixin, BaseEstimator):
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

    Attributes
    ----------
    classes_ : array of shape (n_classes,), the labels; ``predict_proba`` columns follow it.
    head_ : the fitted head.

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
    ):
        self.encoder = encoder
        self.head = head
        self.head_params = head_params
        self.label_prior = label_prior
        self.tune = tune

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
        self._encoder = base
        if self.tune:
            from fewshot.tuning import contrastive_tune

            params = {} if self.tune is True else dict(self.tune)
            if not isinstance(base, TextEncoder):
                raise InputError("tune= needs a TextEncoder (a sentence-transformers body) as the encoder")
            self._encoder = contrastive_tune(base, items, y, show_progress=show_progress, **params)
        E = self.embed(items, show_progress)
        self.prior_ = None
        if getattr(head, "accepts_prior", False) and self._wants_prior(y):
            self.prior_ = ZeroShotClassifier(np.unique(y).tolist(), encoder=self.encoder_).fit()
            self.head_ = head.fit(E, y, **self._scores_kw(items, E))
        else:
            self.head_ = head.fit(E, y)
        return self

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

        Only the new examples are encoded. New classes are appended to ``classes_``.
        """
        if not hasattr(self, "head_"):
            return self.fit(X, y)
        items = self.encoder_.validate(X)
        y = as_labels(y, len(items))
        self.head_.partial_fit(self.embed(items), y)
        if getattr(self, "prior_", None) is not None and len(self.head_.classes_) != len(self.prior_.classes_):
            # new classes: their label names join the prior, in the head's column order
            self.prior_ = ZeroShotClassifier(self.head_.classes_.tolist(), encoder=self.encoder_).fit()
        return self

    def _run(self, method: str, X: Any, show_progress: bool) -> np.ndarray:
        head = self._head()
        items = self.encoder_.validate(X)
        E = self.embed(items, show_progress)
        return getattr(head, method)(E, **self._scores_kw(items, E))

    def decision_function(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Head scores, array of shape (n_samples, n_classes)."""
        return self._run("decision_function", X, show_progress)

    def predict_proba(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Class probabilities, array of shape (n_samples, n_classes), columns in ``classes_`` order."""
        return self._run("predict_proba", X, show_progress)

    def predict(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Predicted labels, array of shape (n_samples,)."""
        return self._run("predict", X, show_progress)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on ``X`` against ``y``. Labels the model never saw are refused, not counted as misses:
        they usually mean a mismatched label column (``"Positive"`` against ``"positive"``)."""
        items = self.encoder_.validate(X)
        y = as_labels(y, len(items))
        unknown = sorted({str(v) for v in y.tolist()} - {str(c) for c in self.classes_.tolist()})
        if unknown:
            raise InputError(
                f"labels the model never saw: {', '.join(unknown[:5])}; "
                f"it knows {', '.join(map(str, self.classes_[:10]))}"
            )
        return float(np.average(self.predict(items) == y, weights=sample_weight))

    def save(self, path: str | Path) -> Path:
        """Save to a folder (JSON manifest + numpy arrays, no pickle), atomically."""
        extra = {"label_prior": self.label_prior, "tune": self.tune}
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
        )
        self._encoder, self.head_ = encoder, head
        self.prior_ = None
        if "prior" in manifest:
            try:
                self.prior_ = _load_prior(manifest["prior"], manifest["_arrays"], encoder)
            except (KeyError, TypeError, ValueError) as exc:
                raise CorruptFileError(f"{path}: the saved zero-shot prior cannot be read ({exc})") from exc
        return self


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Classify and tag inputs from label text alone: no examples needed.

    Parameters
    ----------
    labels : a list of names (``["sports", "politics"]``), a dict name -> description, a dict name ->
        list of attributes, or a list of ``"name: attribute, attribute"`` strings (see
        :func:`fewshot.prompts.parse_labels`).
    encoder : a fewshot encoder; None means the bundled text model. For images: a :class:`ClipEncoder`
        (labels and images in CLIP's shared space), a :class:`ConSEEncoder`, or a plain
        :class:`ImageEncoder`, which is wrapped in a ConSEEncoder with the bundled text model.
    templates : a template set name from ``fewshot/templates/text.json`` (``image.json`` for image
        encoders), a list of templates with ``{}``, or None for the default set ("plain": "This sentence
        is {}." for text, "a photo of a {}." for images).
    temperature : softmax temperature for ``predict_proba``.

    The label prompts are encoded once, on first use.
    """

    def __init__(
        self,
        labels: Any,
        encoder: Encoder | None = None,
        templates: str | list[str] | None = None,
        temperature: float = 0.05,
    ):
        self.labels = labels
        self.encoder = encoder
        self.templates = templates
        self.temperature = temperature

    @property
    def encoder_(self) -> Encoder:
        if getattr(self, "_encoder", None) is None:
            encoder = _encoder(self.encoder)
            if encoder.modality == "image" and not encoder.supports_text:
                encoder = ConSEEncoder(image=encoder)  # type: ignore[arg-type]
            self._encoder = encoder
        return self._encoder

    def fit(self, X: Any = None, y: Any = None) -> ZeroShotClassifier:
        """Build the class vectors from the label text (``X`` and ``y`` are ignored: there is no training)."""
        parsed = parse_labels(self.labels)
        encoder = self.encoder_
        texts, owners, weights = label_prompts(parsed, resolve_templates(self.templates, encoder.modality))
        head = ZeroShotHead(temperature=self.temperature)
        # classes_ keep the order the user gave the labels in
        self.head_ = head.fit(encoder.encode_text(texts), owners, sample_weight=weights, classes=list(parsed))
        return self

    def _head(self) -> ZeroShotHead:
        if not hasattr(self, "head_"):
            self.fit()
        return self.head_

    @property
    def classes_(self) -> np.ndarray:
        return self._head().classes_

    def decision_function(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Cosine similarity of each input to each label, array of shape (n_samples, n_labels)."""
        head = self._head()
        return head.decision_function(self.encoder_.encode(X, show_progress=show_progress))

    def predict_proba(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """Softmax over labels, array of shape (n_samples, n_labels)."""
        head = self._head()
        return head.predict_proba(self.encoder_.encode(X, show_progress=show_progress))

    def predict(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """The best-matching label for each input, array of shape (n_samples,)."""
        head = self._head()
        return head.predict(self.encoder_.encode(X, show_progress=show_progress))

    def tag(
        self, X: Any, threshold: float | None = 0.2, top_k: int | None = None, show_progress: bool = False
    ) -> list[list[tuple[Any, float]]]:
        """Multi-label tags: for each input, the labels whose cosine similarity reaches ``threshold``.

        Parameters
        ----------
        threshold : minimum cosine similarity for a tag (None: no minimum). The default 0.2 suits the
            bundled MiniLM, whose related texts and labels score about 0.2-0.5 and unrelated ones under
            0.18. An input that matches no label gets an empty list ("none of these").
        top_k : keep at most this many tags per input (None: no limit).

        Returns
        -------
        One list per input of ``(label, score)`` pairs, best first.
        """
        if threshold is None and top_k is None:
            raise InputError("give a threshold, a top_k, or both")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        S = self.decision_function(X, show_progress)
        classes = self.classes_.tolist()
        out = []
        for row in S:
            order = np.argsort(-row, kind="stable")
            if top_k is not None:
                order = order[:top_k]
            out.append([(classes[j], float(row[j])) for j in order if threshold is None or row[j] >= threshold])
        return out

    def save(self, path: str | Path) -> Path:
        """Save the label vectors and settings to a folder (no pickle), atomically."""
        labels = self.labels if isinstance(self.labels, dict) else list(self.labels)
        extra = {
            "labels": {str(json_label(k)): v for k, v in parse_labels(labels).items()},
            "templates": self.templates,
        }
        return _save_model(path, "zeroshot", self.encoder_, self._head(), extra)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> ZeroShotClassifier:
        manifest, encoder, head = _load_model(path, "zeroshot", encoder)
        self = cls(manifest["labels"], encoder=encoder, templates=manifest["templates"], temperature=head.temperature)
        self._encoder, self.head_ = encoder, head
        return self
