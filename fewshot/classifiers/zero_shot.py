"""``ZeroShotClassifier``: classify and tag inputs from label text alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fewshot import calibration as cal
from fewshot._validate import finite_number, json_label
from fewshot.classifiers import expansion
from fewshot.classifiers.adaptation import ADAPT_METHODS, adapt_label_vectors, centre
from fewshot.classifiers.background import background_embeddings, nearest_background
from fewshot.classifiers.base import CalibratedClassifier, default_encoder
from fewshot.classifiers.persistence import load_model, prefixed, save_model
from fewshot.encoders import ConSEEncoder, Encoder
from fewshot.errors import CorruptFileError, InputError, collected_warnings, warn_user, warns_once
from fewshot.heads import ZeroShotHead, head_from_state
from fewshot.params import POSITIVE, Check, Options, validate_params
from fewshot.prompts import FRAME_RULE, POOLS, encode_framed, is_frame, label_prompts, parse_labels, resolve_templates

LABELS = "labels__"  # prefix of a corpus-adapted zero-shot classifier's label-text head arrays
SHIFT = "shift__"  # the corpus mean a corpus-adapted zero-shot classifier centres on
BACKGROUND = "background__"  # each label's mean and spread of scores on the background sentences

# zero-shot defaults, each measured with MiniLM. The temperature: the lowest log-loss with the defaults (their
# templates, pooling and frame) on the labelled train splits of six datasets (not the ones the accuracy is
# reported on): 0.0506 (``python -m eval.run_zeroshot --part calibration``)
ZEROSHOT_TEMPERATURE = 0.05
# text zero-shot with no corpus: chosen on the development group of ``eval.zeroshot_templates`` (SST-5, CR, MR,
# SUBJ, CLINC150, Amazon CF) among five frames, alone or beside the input, and five pooling temperatures
INPUT_FRAME = "Sentence: {}"  # each input is also read in this frame, and the two embeddings summed
TEMPLATE_POOL = 0.05  # a label's prompts pooled by a soft maximum at this temperature (ZeroShotHead's pool)
# tagging (``tag``): chosen on four development label sets (AG News with and without out-of-scope movie
# reviews and with two-article items, 20 Newsgroups, Banking77) by micro-F1, and reported on others
# (GoEmotions, its Ekman labels with neutral as none, CLINC150 with its out-of-scope queries)
TAG_MARGIN = 0.0  # a second tag within this cosine of the best one: on those sets a second tag never paid
TAG_NONE_NEIGHBOURS = 5  # "none of these" compares the best label with the 5 nearest background sentences
TAG_NONE_DELTA = -0.15  # ... and abstains when the best label is not above their mean cosine plus this
TAG_NONE_Z = 1.5  # ... and the best label's score is not unusual for ordinary text (z below this)


def best_label_z(S: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each input's best label score (shape (n,)) and its z-score against that label's scores on the
    background sentences (``stats``: per-label ``mean`` and ``std``)."""
    best = S.argmax(axis=1)
    top = S[np.arange(len(S)), best]
    return top, (top - stats["mean"][best]) / stats["std"][best]


def looks_ordinary(
    top: np.ndarray, z: np.ndarray, near: np.ndarray, delta: float = TAG_NONE_DELTA, z_max: float = TAG_NONE_Z
) -> np.ndarray:
    """``tag()``'s "none of these": the best label is not unusual for ordinary text (z under ``z_max``) and no
    closer than ``near`` (the mean cosine of the input's nearest background sentences) plus ``delta``."""
    return (z < z_max) & (top <= near + delta)


def _refuse_identical_labels(head: ZeroShotHead) -> None:
    """Refuse two labels whose label vectors are the same: their prompts read the same to the encoder (an
    uncased one, for labels that differ only in case or spacing), so each would take half of one label's
    probability and tag() would give both."""
    V = np.asarray(head.centroids_, dtype=np.float64)
    sq = (V * V).sum(axis=1)
    D = sq[:, None] + sq[None, :] - 2 * V @ V.T
    D[np.diag_indices_from(D)] = np.inf
    same = np.argwhere(D < 1e-10)
    if len(same):
        i, j = sorted(same[0].tolist())
        a, b = head.classes_.tolist()[i], head.classes_.tolist()[j]
        raise InputError(
            f"labels {a!r} and {b!r} get the same label vector from this encoder (their prompts read the same to "
            "it: an uncased encoder does not see case or spacing, a static one does not see the order of words, "
            "and characters it has no token for, such as emoji, all read as one unknown token); give each label "
            "once, in words, or a description that tells them apart"
        )


def _cosine(v: Any) -> bool:
    """Whether ``v`` is a number a cosine can be compared with: finite, from -1 to 1 (outside, a threshold
    passes everything or nothing)."""
    return finite_number(v) and -1.0 <= float(v) <= 1.0


class ZeroShotClassifier(CalibratedClassifier):
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
        six datasets outside the headline table; with a labelled validation split, :meth:`fit_calibration`
        fits one for your data.
    adapt : what ``fit(X)`` does with unlabelled inputs ``X`` of the task (your corpus): ``"auto"``
        (default) self-trains when ``X`` has at least ten distinct items per label, ``"selftrain"`` always,
        ``"center"`` only centres, ``"none"`` ignores ``X`` (see :mod:`fewshot.classifiers.adaptation`).
    expand : ``"auto"`` (default) widens each label name with the encoder's vocabulary words nearest it,
        which needs no corpus (see :mod:`fewshot.classifiers.expansion`; left out for images, for labels
        with descriptions and where one label's name holds another's); ``"none"`` uses the label text
        alone. What was done is in ``expansion_``.
    abstain : "none of these". None (default): always answer. A number: abstain when the best label's
        score (a cosine) is below it. ``"auto"``: the 5% quantile of the best scores of the corpus given
        to ``fit(X)`` (the corpus is taken to be mostly in scope); without a corpus there is no data to
        set it from, so "auto" asks for one. :meth:`fit_calibration` sets it from a labelled validation
        split whose out-of-scope rows carry ``abstain_label``.
    abstain_label : what ``predict`` returns for an abstention (default None; the CLI writes "").
    calibrate : whether :meth:`fit_calibration` refits the temperature (default True).
    frame : how text inputs are read. ``"auto"`` (default): each input is embedded on its own and in
        :data:`INPUT_FRAME` (``"Sentence: {}"``), and the two embeddings are summed, which brings inputs
        closer in form to the label prompts (two encodings of each input; images, and the inputs of an
        encoder that is not ``contextual``, are read as they are). ``"none"``: as they are (half the
        encoding time). A template with one ``{}``: that frame. The frame used is in ``frame_``.
    pool : how a label's prompts (templates, descriptions, attributes) are pooled. ``"soft"`` (default):
        the input is compared with each prompt and the cosines are pooled by a soft maximum at
        :data:`TEMPLATE_POOL` (see :class:`~fewshot.heads.ZeroShotHead`), so a label is close when some of
        its phrasings are. ``"mean"``: the cosine to the mean of the prompts (one vector a label).
        With the bundled MiniLM, both defaults together add 1.5 points of accuracy over ``"none"`` and
        ``"mean"`` on eleven datasets with no corpus (``python -m eval.zeroshot_templates``). Adapting to a
        corpus (``fit(X)``) moves each label to one vector, from the mean of its prompts, so ``predict`` and
        an abstention then score that vector; ``tag()`` always scores the label text as pooled here.

    Calling ``predict`` (or any scoring method) before ``fit`` fits on the label text alone; such an
    implicit fit follows later ``set_params`` changes, while an explicit ``fit`` (or :meth:`fit_calibration`)
    is kept until the next one (scoring after a parameter change asks for it).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "labels": [
            Check(
                lambda v: v is not None and not isinstance(v, (str, bytes, Iterator)),
                "a list or dict of labels (not a one-pass iterator)",
            )
        ],
        "encoder": [None, Encoder],
        "templates": [None, str, list],
        "temperature": [None, POSITIVE],
        "adapt": [Options(ADAPT_METHODS)],
        "expand": [Options(expansion.EXPAND_METHODS)],
        "frame": [Check(is_frame, FRAME_RULE)],
        "pool": [Options(POOLS)],
        "abstain": [None, Options(("auto",)), Check(_cosine, "a cosine threshold, from -1 to 1")],
        "calibrate": [bool],
    }

    def __init__(
        self,
        labels: Any,
        encoder: Encoder | None = None,
        templates: str | list[str] | None = None,
        temperature: float | None = None,
        adapt: str = "auto",
        expand: str = "auto",
        abstain: float | str | None = None,
        abstain_label: Any = None,
        calibrate: bool = True,
        frame: str = "auto",
        pool: str = "soft",
    ):
        self.labels = labels
        self.encoder = encoder
        self.templates = templates
        self.temperature = temperature
        self.adapt = adapt
        self.expand = expand
        self.abstain = abstain
        self.abstain_label = abstain_label
        self.calibrate = calibrate
        self.frame = frame
        self.pool = pool

    @property
    def encoder_(self) -> Encoder:
        enc = self.__dict__.get("_encoder")
        if enc is None:
            enc = default_encoder(self.encoder)
            if enc.modality == "image" and not enc.supports_text:
                enc = ConSEEncoder(image=enc)
            enc = self.__dict__.setdefault("_encoder", enc)
        return enc

    # -- fitting ------------------------------------------------------------------------------------
    @warns_once
    def fit(
        self, X: Any = None, y: Any = None, sample_weight: Any = None, show_progress: bool = False
    ) -> ZeroShotClassifier:
        """Build the label vectors from the label text; with ``X`` (unlabelled inputs of the task, never
        test data you score against), adapt them to it as ``adapt`` says. ``y`` is not used (the labels
        are the label text); ``sample_weight`` is refused, as nothing here could honour it."""
        if sample_weight is not None:
            raise InputError("ZeroShotClassifier.fit takes no sample_weight: the corpus only adapts the label vectors")
        with self._rw.write():
            self._fit(X, show_progress)
            self._mark_fitted()
        return self

    def _fit(self, X: Any, show_progress: bool) -> None:
        validate_params(self)
        abstain = cal.as_threshold(self.abstain)
        if abstain == "auto" and X is None:
            raise InputError(
                "abstain='auto' sets the threshold from your unlabelled inputs: pass them to fit(X), give a "
                "number, or call fit_calibration(X_val, y_val) with a validation split"
            )
        parsed = parse_labels(self.labels)
        self._check_abstain_label(parsed)
        self.__dict__.pop("_encoder", None)  # the encoder parameter may have changed since a previous fit
        encoder = self.encoder_
        texts, owners, weights = label_prompts(parsed, resolve_templates(self.templates, encoder.modality))
        temperature = ZEROSHOT_TEMPERATURE if self.temperature is None else float(self.temperature)
        frame = self._input_frame(encoder)
        pool = TEMPLATE_POOL if self.pool == "soft" else None
        # the label text and the corpus (once, for the adaptation and the "auto" threshold alike) are encoded
        # before anything fitted changes, so that bad inputs leave a fitted classifier as it was
        L = encoder.encode_text(texts)
        uses_corpus = X is not None and (self.adapt != "none" or abstain == "auto")
        C = encode_framed(encoder, X, frame, show_progress) if uses_corpus else None
        # the head keeps the order the user gave the labels in (classes_ sorts them). It would warn of names
        # alike but for case: here their vectors decide, refused below when the encoder reads them as one, and
        # otherwise told apart (a cased encoder, or their descriptions)
        with collected_warnings(issue=False):
            head = ZeroShotHead(temperature=temperature, pool=pool).fit(
                L, owners, sample_weight=weights, classes=list(parsed)
            )
        if not self.__dict__.get("_same_label_vectors_ok"):
            _refuse_identical_labels(head)
        head, widened = self._expanded(head, parsed, encoder, temperature)
        scoring, shift, adaptation = head, None, {"method": "none"}
        if C is not None and self.adapt != "none":
            V, shift, adaptation = adapt_label_vectors(head.centroids_, C, self.adapt)
            if V is not None:
                with collected_warnings(issue=False):  # the same names again
                    scoring = ZeroShotHead(temperature=temperature).fit(V, head.classes_, classes=head.classes_)
        threshold = None
        if abstain == "auto":
            readable = C[C.any(axis=1)]  # a text the encoder cannot read scores 0 and says nothing of the task
            if not len(readable):
                raise InputError("abstain='auto' sets the threshold from the unlabelled inputs; the encoder reads none")
            threshold = float(
                np.quantile(scoring.class_scores(centre(readable, shift)).max(axis=1), cal.ABSTAIN_QUANTILE)
            )
        elif abstain is not None:
            threshold = float(abstain)
        # a few-shot classifier's label prior only scores labels: it leaves out the statistics tag() uses, as a
        # loaded prior does (and a tuned fit's bodies are spared embedding the background sentences each)
        background = None
        if not self.__dict__.get("_scores_only") and encoder.modality == "text":
            B = head.class_scores(background_embeddings(encoder, frame))
            background = {"mean": B.mean(axis=0), "std": np.maximum(B.std(axis=0), 1e-6)}
        # nothing failed: the fitted state changes at once
        self.label_head_, self.head_, self.shift_, self.background_ = head, scoring, shift, background
        self.adaptation_: dict[str, Any] = adaptation
        self.expansion_: dict[str, Any] = widened
        self.frame_: str | None = frame
        self.temperature_, self.threshold_, self.calibration_ = 1.0, threshold, {"method": "default temperature"}

    def _expanded(
        self, head: ZeroShotHead, parsed: dict[Any, list[str]], encoder: Encoder, temperature: float
    ) -> tuple[ZeroShotHead, dict[str, Any]]:
        """``head`` with its label vectors widened by the encoder's vocabulary where ``expand`` and the labels
        allow it, and a record of what was done."""
        if self.expand == "none":
            return head, {"method": "none", "reason": "expand='none'"}
        reason = expansion.skip_reason(parsed, encoder)
        vocab = expansion.word_vectors(encoder) if reason is None else None
        if reason is None and vocab is None:
            reason = "the encoder has no word vocabulary"
        if reason is None:
            reason = expansion.unknown_name(parsed, set(vocab[0]))
        if reason is not None:
            return head, {"method": "none", "reason": reason}
        words, W = vocab
        top = expansion.nearest_words(encoder.encode_text([str(c) for c in head.classes_]), W)
        V = expansion.expand(head.centroids_, W, top)
        with collected_warnings(issue=False):  # the head would warn of label names alike but for case again
            wide = ZeroShotHead(temperature=temperature, pool=head.pool).fit(V, head.classes_, classes=head.classes_)
        if head.prompts_ is not None:  # each prompt widened as its label's mean is
            wide.set_prompts(expansion.expand(head.prompts_, W, top[head.codes_]), head.codes_, head.prompt_weights_)
        took = {str(c): [words[i] for i in row] for c, row in zip(head.classes_, top, strict=True)}
        return wide, {"method": "vocabulary", "vocabulary": len(words), "words": took}

    def _input_frame(self, encoder: Encoder) -> str | None:
        """The frame the inputs are read in (``frame``): "auto" gives :data:`INPUT_FRAME` to text encoders that
        read words in context (a transformer; a static model would only add the same words to every bag)."""
        if self.frame == "none":
            return None
        if encoder.modality != "text":
            if self.frame == "auto":
                return None
            raise InputError(f"frame={self.frame!r} sets text inputs in a template; this encoder reads images")
        if self.frame == "auto":
            return INPUT_FRAME if encoder.contextual else None
        return self.frame

    def embed(self, X: Any, show_progress: bool = False) -> np.ndarray:
        """The inputs ``X`` embedded as this classifier reads them (set in ``frame_`` beside themselves, for
        text), before any corpus centring; :meth:`label_scores` takes these."""
        self._fitted_head()
        return encode_framed(self.encoder_, X, self.frame_, show_progress)

    def _labels(self, S: np.ndarray) -> np.ndarray:
        if S.shape[1] == 1 and getattr(self, "threshold_", None) is None:
            label = self.classes_.tolist()[0]
            if self.encoder_.modality == "image":  # tag() gives images their best label: a lone label always
                advice = "give abstain= (a score threshold) for 'none of these', or labels for what else they show"
            else:
                advice = (
                    "use tag() (or fewshot zeroshot --multi-label) to ask whether it applies, or abstain= for "
                    "'none of these'"
                )
            warn_user(f"one label ({label!r}) and no abstention: every input gets it; {advice}")
        return super()._labels(S)

    def _fitted_head(self) -> ZeroShotHead:
        """The fitted head, fitting on the label text first when the classifier was never fitted (or was
        fitted that way and its parameters changed since)."""
        fitted = self.__dict__.get("_fitted_with")
        if fitted is not None and not self._params_changed():
            return self.head_
        if fitted is not None and not fitted[1]:
            raise self._params_changed_error()
        with self._rw.write():
            if "_fitted_with" not in self.__dict__ or self._params_changed():
                self._fit(None, False)
                self._mark_fitted(lazy=True)
        return self.head_

    def label_scores(self, E: np.ndarray) -> np.ndarray:
        """Class scores of precomputed embeddings ``E`` (n, dim) of this classifier's encoder (as :meth:`embed`
        makes them), shape (n, n_classes), columns in the order the labels were given (``classes_`` sorts
        them)."""
        return self._fitted_head().class_scores(centre(E, self.shift_))

    def _head_inputs(self, X: Any, show_progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
        self._fitted_head()
        return centre(self.embed(X, show_progress), self.shift_), {}

    @classmethod
    def from_label_head(
        cls, head: ZeroShotHead, *, encoder: Encoder, templates: Any = None, temperature: float | None = None
    ) -> ZeroShotClassifier:
        """A classifier around an already fitted label head (a saved model's zero-shot prior)."""
        zs = cls(
            head.classes_.tolist(),
            encoder=encoder,
            templates=templates,
            temperature=temperature,
            expand="none",
            frame="none",
            pool="soft" if head.pool is not None else "mean",
        )
        zs._encoder, zs.head_, zs.label_head_, zs.shift_, zs.frame_ = encoder, head, head, None, None
        zs.adaptation_, zs.expansion_, zs.background_ = {"method": "none"}, {"method": "none"}, None
        zs.temperature_, zs.threshold_, zs.calibration_ = 1.0, None, {"method": "default temperature"}
        zs._mark_fitted()
        return zs

    # -- tagging ------------------------------------------------------------------------------------
    def tag(
        self,
        X: Any,
        threshold: float | None = None,
        top_k: int | None = None,
        margin: float | None = None,
        show_progress: bool = False,
    ) -> list[list[tuple[Any, float]]]:
        """Tags for each input: its best label and any label almost as good, or none of them.

        Each label is scored on its own against its text (the label vectors before any corpus adaptation,
        which is a single-label technique). By default the decision is relative, so it carries over to a
        label set nobody tuned it on: the best label is a tag, and so is any label within ``margin`` of it;
        for text the input gets no tag ("none of these") when its best label is both no closer to it than
        the ordinary sentences it most resembles (:data:`TAG_NONE_DELTA` below their mean cosine) and not
        unusually high for that label on ordinary text (z-score under :data:`TAG_NONE_Z`; see
        :mod:`fewshot.classifiers.background`).

        Parameters
        ----------
        threshold : a fixed score instead: every label scoring at least this is a tag (the relative rule
            is then off). Use it when you have labelled data to choose one.
        top_k : keep at most this many tags per input (None: no limit).
        margin : how close to the best score another label must be to be a tag too; None means
            :data:`TAG_MARGIN` (0: one tag, or none). Raise it (say 0.03) for more tags per input.

        Returns
        -------
        One list per input of ``(label, score)`` pairs, best first; the score is the label's cosine to the
        input (with ``pool="soft"``, the soft maximum of its prompts' cosines, from -1 to 1 as well).
        """
        if top_k is not None and (not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1):
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        if threshold is not None and not _cosine(threshold):
            raise InputError(f"threshold must be a cosine, from -1 to 1, got {threshold!r}")
        if threshold is not None and margin is not None:
            raise InputError("give threshold (a fixed cosine) or margin (relative to the best label), not both")
        if margin is None:
            margin = TAG_MARGIN
        elif not finite_number(margin) or margin < 0:
            raise InputError(f"margin must be a non-negative number, got {margin!r}")
        self._fitted_head()
        with self._rw.read():
            E = self.embed(X, show_progress)
            S = self.label_head_.class_scores(E)
            classes = self.label_head_.classes_.tolist()  # S has the head's columns
            if threshold is not None:
                keep = S >= threshold
            else:
                top = S.max(axis=1, keepdims=True)
                keep = S >= top - margin
                none = self._looks_ordinary(E, S)
                if none is not None:
                    keep &= ~none[:, None]
            keep &= E.any(axis=1)[:, None]  # a zero vector (no token a static model knows) is similar to nothing
        out = []
        for row, ok in zip(S, keep):
            order = [j for j in np.argsort(-row, kind="stable") if ok[j]]
            out.append([(classes[j], float(row[j])) for j in order[:top_k]])
        return out

    def _looks_ordinary(self, E: np.ndarray, S: np.ndarray) -> np.ndarray | None:
        """For each input, whether its best label is no better than ordinary text would do (text only)."""
        stats = getattr(self, "background_", None)
        if stats is None:
            return None
        top, z = best_label_z(S, stats)
        near = nearest_background(E, background_embeddings(self.encoder_, self.frame_), TAG_NONE_NEIGHBOURS)
        return looks_ordinary(top, z, near)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save the label vectors, any corpus adaptation and the settings to a folder (no pickle), atomically.

        As :meth:`FewShotClassifier.save <fewshot.FewShotClassifier.save>`: another model saved there is
        replaced only with ``overwrite=True``."""
        from fewshot.classifiers.few_shot import _expected

        head = self._fitted_head()
        with self._rw.read():
            labels = self.labels if isinstance(self.labels, dict) else list(self.labels)
            extra: dict[str, Any] = {
                "labels": [[json_label(k), v] for k, v in parse_labels(labels).items()],
                # the parameters as given, so that a loaded copy has the same ones (a list stays a list)
                "given_labels": {"dict": [[json_label(k), v] for k, v in labels.items()]}
                if isinstance(labels, dict)
                else {"list": [json_label(v) for v in labels]},
                "given_temperature": self.temperature,
                "given_encoder": "default" if self.encoder is None else "given",
                "fitted_implicitly": bool(self.__dict__.get("_fitted_with", ("", False))[1]),
                "templates": self.templates,
                "adapt": self.adapt,
                "expand": self.expand,
                "expansion": self.expansion_,
                "frame": self.frame,
                "input_frame": self.frame_,
                "pool": self.pool,
                "abstain": cal.as_threshold(self.abstain),
                "abstain_label": json_label(self.abstain_label) if self.abstain_label is not None else None,
                "calibrate": self.calibrate,
                "adaptation": self.adaptation_,
                "calibration": self._calibration_state(),
            }
            more: dict[str, np.ndarray] = {}
            if self.background_ is not None:
                more[BACKGROUND + "mean"], more[BACKGROUND + "std"] = self.background_["mean"], self.background_["std"]
            if head is not self.label_head_:
                config, arrays = self.label_head_.get_state()
                extra["label_head"] = config
                more.update({LABELS + k: v for k, v in arrays.items()})
                if self.shift_ is not None:
                    more[SHIFT] = self.shift_
            manifest = save_model(
                path,
                "zeroshot",
                self.encoder_,
                head,
                extra,
                more,
                expect_save_id=_expected(self, path),
                overwrite=overwrite,
            )
        self._saved_at = (str(Path(path).resolve()), manifest["save_id"])
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> ZeroShotClassifier:
        """Load a saved zero-shot classifier. ``encoder`` defaults to the recorded one and must match it."""
        reserved = (LABELS, SHIFT, BACKGROUND)
        given_encoder = encoder
        manifest, arrays, encoder, head = load_model(path, "zeroshot", encoder, reserved_prefixes=reserved)
        try:
            given = manifest.get("given_labels") or {"dict": manifest["labels"]}
            labels = given["list"] if "list" in given else {k: v for k, v in given["dict"]}
            default = given_encoder is None and manifest.get("given_encoder") == "default"
            self = cls(
                labels,
                encoder=None if default else encoder,  # the parameter as given; the loaded encoder is used
                templates=manifest["templates"],
                temperature=manifest["given_temperature"] if "given_temperature" in manifest else head.temperature,
                adapt=manifest.get("adapt", "auto"),
                expand=manifest.get("expand", "none"),
                frame=manifest.get("frame", "none"),  # a save without them read inputs as they are, one vector a label
                pool=manifest.get("pool", "mean"),
                abstain=manifest.get("abstain"),
                abstain_label=manifest.get("abstain_label"),
                calibrate=manifest.get("calibrate", True),
            )
            validate_params(self)  # a value the constructor would refuse (a manifest edited by hand)
            self._encoder, self.head_, self.label_head_, self.shift_ = encoder, head, head, None
            if "label_head" in manifest:
                self.label_head_ = head_from_state(manifest["label_head"], prefixed(arrays, LABELS))
                if SHIFT in arrays:
                    self.shift_ = np.asarray(arrays[SHIFT], dtype=np.float64)
                    if self.shift_.shape != (head.n_features_in_,):
                        raise ValueError(f"corpus mean of shape {self.shift_.shape}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path}: the saved zero-shot classifier cannot be read ({exc})") from exc
        self.adaptation_ = manifest.get("adaptation") or {"method": "none"}
        self.expansion_ = manifest.get("expansion") or {"method": "none"}
        self.frame_ = manifest.get("input_frame")
        if self.frame_ is not None and (not isinstance(self.frame_, str) or self.frame_.count("{}") != 1):
            raise CorruptFileError(f"{path}: the saved zero-shot classifier's input frame is {self.frame_!r}")
        stats = prefixed(arrays, BACKGROUND)
        self.background_ = {"mean": stats["mean"], "std": stats["std"]} if stats else None
        self._set_calibration_state(manifest.get("calibration"), path)
        self._mark_fitted(lazy=bool(manifest.get("fitted_implicitly", False)))
        self._saved_at = (str(Path(path).resolve()), manifest["save_id"])
        return self
