"""CLIP through open_clip: images and text embedded into one space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import as_text_list
from fewshot.encoders.base import ImageEncoderBase, shared_model, weights_sha256
from fewshot.errors import InputError, MissingDependencyError, ModelLoadError
from fewshot.maths import l2_normalize

SCHEMAS = ("local-dir:", "hf-hub:")


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise MissingDependencyError("ClipEncoder needs open_clip: pip install 'fewshot[images]'") from exc
    return open_clip


class ClipEncoder(ImageEncoderBase):
    """Images (``encode``) and text (``encode_text``) in CLIP's shared embedding space.

    Parameters
    ----------
    model : an open_clip architecture name (``"ViT-B-32"``), or ``"local-dir:/path"`` for a folder holding
        ``open_clip_config.json`` and the weights, or ``"hf-hub:org/repo"`` (downloads).
    pretrained : with an architecture name: a local checkpoint file, or an open_clip pretrained tag such as
        ``"laion2b_s34b_b79k"`` (downloaded by open_clip: for users who are online). Required: a CLIP
        without trained weights embeds nothing useful, so it is never made silently.
    device, normalize, batch_size, cache_dir : as for :class:`fewshot.TextEncoder`.

    The preprocessing is the one open_clip gives for the weights. The model loads on first use.
    """

    _loaded_attrs = ("_model", "_preprocess", "_tokenizer", "_sha")

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | Path | None = None,
        *,
        device: str = "cpu",
        normalize: bool = True,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(normalize=normalize, batch_size=batch_size, cache_dir=cache_dir)
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"model must be an open_clip model name, got {model!r}")
        if model.startswith("local-dir:"):
            folder = Path(model[len("local-dir:") :]).expanduser()
            model = "local-dir:" + str(folder.resolve())
            pretrained = None
        elif model.startswith("hf-hub:"):
            pretrained = None
        elif pretrained is None:
            raise InputError(
                f"ClipEncoder({model!r}) needs pretrained=: a local checkpoint file, or an open_clip tag such as "
                "'laion2b_s34b_b79k' (downloads); or model='local-dir:/path/to/folder'"
            )
        else:
            p = Path(pretrained).expanduser()
            pretrained = str(p.resolve()) if p.exists() else str(pretrained)
        self.source = model
        self.pretrained = pretrained
        self.device = device
        self._model = None
        self._preprocess = None
        self._tokenizer = None
        self._sha: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            key = ("open_clip", self.source, self.pretrained, self.device)
            self._model, self._preprocess, self._tokenizer = shared_model(key, self._load)
        return self._model

    def _load(self) -> tuple[Any, Any, Any]:
        oc = _open_clip()
        try:
            model, _, preprocess = oc.create_model_and_transforms(
                self.source, pretrained=self.pretrained, device=self.device
            )
            tokenizer = oc.get_tokenizer(self.source)
        except Exception as exc:  # unknown name, missing or corrupt checkpoint, no network
            raise ModelLoadError(
                f"cannot load the open_clip model {self.source!r} with pretrained={self.pretrained!r} "
                f"({type(exc).__name__}: {exc}); CLIP weights are not bundled: give a local checkpoint file"
            ) from exc
        return model.eval(), preprocess, tokenizer

    @property
    def dim(self) -> int:
        visual = self.model.visual
        out = getattr(visual, "output_dim", None)
        if out is None:
            out = int(self.encode_text(["a"]).shape[1])
        return int(out)

    @property
    def identity(self) -> dict[str, Any]:
        if self._sha is None:
            self._sha = weights_sha256(self.model)
        return {
            "family": "open_clip",
            "model": self.source,
            "pretrained": self.pretrained,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": self.normalize,
            "preprocess": " ".join(repr(self._preprocess).split()),
        }

    @property
    def supports_text(self) -> bool:
        return True

    def describe_source(self) -> str:
        return f"{self.source} ({self.pretrained})" if self.pretrained else self.source

    def _encode(self, items: list[Any], batch_size: int, show_progress: bool) -> np.ndarray:
        import torch

        model = self.model
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start, batch in self._batches(items, batch_size, show_progress, self._preprocess):
                out[start : start + len(batch)] = model.encode_image(batch.to(self.device)).float().cpu().numpy()
        return out

    def encode_text(self, texts: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed texts with CLIP's text tower, shape (n, dim), in the same space as the images."""
        import torch

        texts = as_text_list(texts, what="texts")
        model = self.model
        size = batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                tokens = self._tokenizer(texts[start : start + size]).to(self.device)
                out[start : start + size] = model.encode_text(tokens).float().cpu().numpy()
        return l2_normalize(out) if self.normalize else out
