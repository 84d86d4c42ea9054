"""ConSE: zero-shot image classification with an ImageNet classifier and a text encoder, no CLIP needed.

Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014. Two ways to
put images and label text into one space are offered:

``space="text"`` (the paper's): an image is the probability-weighted mean of the text embeddings of its
top-T ImageNet classes, compared with the label's text embedding.

``space="classes"`` (the default): the same convex combination taken the other way. A label is mapped to
a distribution over the 1000 ImageNet classes, ``q = softmax(cos(label, class prompt) / tau)``, and an image
is its predicted distribution ``p``; the score is ``p . q``, the chance that the image's class and the
label's class are the same ImageNet class. To make that inner product a cosine, as every head expects, the
text side gets one extra coordinate ``sqrt(1 - |q|^2)`` (every label vector then has unit norm) and the image
side a zero there (Bachrach et al., RecSys 2014, the inner-product-to-cosine reduction): for each image the
ranking of labels is exactly that of ``p . q``. On 1,000 CIFAR-10 *training* images (MobileNetV2 at 224 px,
MiniLM, "a photo of a {}."), the paper's form reached 29-31% (T from 5 to 1000) and this one 44% (tau 0.02,
all 1000 classes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.backbone import ImageEncoder
from fewshot.encoders.base import ImageEncoderBase
from fewshot.encoders.text import TextEncoder
from fewshot.errors import InputError
from fewshot.maths import l2_normalize
from fewshot.prompts import resolve_templates


class ConSEEncoder(ImageEncoderBase):
    """Images embedded into a text space through an ImageNet classifier's top-T predictions.

    Parameters
    ----------
    image : an :class:`ImageEncoder` whose final layer scores the 1000 ImageNet classes (default: the bundled
        MobileNetV2).
    text : the :class:`TextEncoder` that embeds the ImageNet class names and, later, the user's labels
        (default: the bundled MiniLM).
    space : ``"classes"`` (default: the 1001-dimensional ImageNet class space described above) or
        ``"text"`` (the paper's: the text encoder's space).
    top_t : how many of an image's most probable ImageNet classes it keeps (T in the paper); None keeps all
        (the default for ``space="classes"``; 10 for ``space="text"``, as in the paper).
    tau : temperature of the label-to-class softmax in the class space.
    templates : prompt templates the ImageNet class names are filled into (an image template set name or a
        list); the pooled prompts make one vector per class.
    center : in the text space, subtract the mean ImageNet class vector from images and text alike (every
        mixture of class vectors shares that direction).
    normalize, batch_size, cache_dir : as for the other encoders.
    """

    _loaded_attrs = ("_classes", "_mean")

    def __init__(
        self,
        image: ImageEncoder | None = None,
        text: TextEncoder | None = None,
        *,
        space: str = "classes",
        top_t: int | None = None,
        tau: float = 0.02,
        templates: str | list[str] | None = None,
        center: bool = False,
        normalize: bool = True,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(normalize=normalize, batch_size=batch_size, cache_dir=cache_dir)
        if space not in ("classes", "text"):
            raise InputError(f"space must be 'classes' or 'text', got {space!r}")
        if top_t is None and space == "text":
            top_t = 10
        if top_t is not None and (not isinstance(top_t, int) or top_t < 1):
            raise InputError(f"top_t must be a positive integer or None, got {top_t!r}")
        if not tau > 0:
            raise InputError(f"tau must be positive, got {tau!r}")
        self.image = image if image is not None else ImageEncoder()
        self.text = text if text is not None else TextEncoder()
        if self.image.modality != "image" or not hasattr(self.image, "features_and_logits"):
            raise InputError("ConSEEncoder needs an ImageEncoder (a backbone with ImageNet class scores) as image=")
        if self.text.modality != "text":
            raise InputError("ConSEEncoder needs a TextEncoder as text=")
        self.space = space
        self.top_t = top_t
        self.tau = float(tau)
        self.templates = templates
        self.center = center
        self._classes: np.ndarray | None = None
        self._mean: np.ndarray | None = None

    def _class_vectors(self) -> np.ndarray:
        """One unit vector per ImageNet class (pooled over the templates), shape (1000, text dim)."""
        if self._classes is None:
            names = self.image.categories
            if names is None:
                raise InputError(
                    "ConSE needs an image model whose final layer scores the 1000 ImageNet classes; "
                    f"{self.image.describe_source()!r} does not"
                )
            templates = resolve_templates(self.templates, "image")
            # names repeat in ImageNet ("crane" the bird and the machine), so classes are kept by position
            texts = [t.replace("{}", name) for name in names for t in templates]
            E = self.text.encode(texts).reshape(len(names), len(templates), -1)
            W = E.mean(axis=1)
            W = l2_normalize(W.astype(np.float32))
            self._mean = W.mean(axis=0) if self.center else np.zeros(W.shape[1], dtype=np.float32)
            self._classes = W
        return self._classes

    @property
    def dim(self) -> int:
        return self.text.dim if self.space == "text" else len(self._class_vectors()) + 1

    @property
    def supports_text(self) -> bool:
        return True

    @property
    def identity(self) -> dict[str, Any]:
        img, txt = self.image.identity, self.text.identity
        h = hashlib.sha256(f"{img['weights_sha256']}:{txt['weights_sha256']}".encode()).hexdigest()
        templates = resolve_templates(self.templates, "image")
        return {
            "family": "conse",
            "model": f"{img['model']} + {txt['model']}",
            "image": img,
            "text": txt,
            "weights_sha256": h,
            "dim": self.dim,
            "normalize": self.normalize,
            "preprocess": (
                f"{img['preprocess']};space={self.space};top{self.top_t};tau={self.tau};"
                f"center={self.center};templates={templates}"
            ),
            "space": self.space,
            "top_t": self.top_t,
            "tau": self.tau,
            "templates": self.templates,
            "center": self.center,
        }

    def describe_source(self) -> str:
        return f"ConSE({self.image.describe_source()} + {self.text.describe_source()})"

    def _encode(self, items: list[Any], batch_size: int, show_progress: bool) -> np.ndarray:
        W = self._class_vectors()
        _, logits = self.image.features_and_logits(items, batch_size, show_progress)
        P = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float64)
        P /= P.sum(axis=1, keepdims=True)
        if self.top_t is not None and self.top_t < P.shape[1]:
            drop = np.argpartition(-P, self.top_t - 1, axis=1)[:, self.top_t :]
            np.put_along_axis(P, drop, 0.0, axis=1)
            P /= P.sum(axis=1, keepdims=True)
        if self.space == "classes":
            return np.hstack([P, np.zeros((len(P), 1))]).astype(np.float32)
        mixed = l2_normalize((P @ W.astype(np.float64)).astype(np.float32))
        return mixed - self._mean if self.center else mixed

    def encode_text(self, texts: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed text into the same space as the images, shape (n, dim)."""
        W = self._class_vectors()
        E = self.text.encode(texts, batch_size=batch_size, show_progress=show_progress)
        if self.space == "text":
            E = E - self._mean if self.center else E
            return l2_normalize(E) if self.normalize else E
        S = (E @ W.T).astype(np.float64) / self.tau
        Q = np.exp(S - S.max(axis=1, keepdims=True))
        Q /= Q.sum(axis=1, keepdims=True)
        pad = np.sqrt(np.clip(1.0 - (Q**2).sum(axis=1, keepdims=True), 0.0, None))
        return np.ascontiguousarray(np.hstack([Q, pad]), dtype=np.float32)
