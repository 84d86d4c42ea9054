"""The encoder interface: inputs in, one C-contiguous float32 array of shape (n, dim) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import l2_normalize
from fewshot.encoders.cache import EmbeddingCache
from fewshot.errors import InputError

# keys of an identity that decide whether two encoders produce the same vectors
# (``preprocess`` is absent for text encoders, so it only tells image pipelines apart)
IDENTITY_KEYS = ("kind", "weights_sha256", "dim", "normalize", "preprocess")


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities produce interchangeable embeddings."""
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


def describe(identity: dict[str, Any]) -> str:
    sha = str(identity.get("weights_sha256", ""))[:12]
    return f"{identity.get('kind')} '{identity.get('model')}' (dim {identity.get('dim')}, weights {sha})"


class Encoder(ABC):
    """Base class of every encoder.

    Subclasses implement :meth:`validate` (check and convert the inputs), :meth:`_encode` (the model call,
    returning raw float vectors), :meth:`_cache_bytes` (the bytes that identify one input), :meth:`_load`
    and the ``identity`` fields. The base class adds batching, the optional on-disk cache and L2
    normalisation, so every encoder returns the same kind of array.
    """

    modality: str = "text"

    def __init__(self, *, normalize: bool = True, batch_size: int = 64, cache_dir: str | Path | None = None):
        self.normalize = normalize
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._cache: EmbeddingCache | None = None

    # -- to implement -------------------------------------------------------------------------------
    @abstractmethod
    def validate(self, inputs: Any) -> list[Any]:
        """Validate ``inputs`` and return them as a list."""

    @abstractmethod
    def _encode(self, items: list[Any], batch_size: int, show_progress: bool) -> np.ndarray:
        """Embed ``items``; return an array of shape (len(items), dim), not necessarily normalised."""

    @abstractmethod
    def _cache_bytes(self, item: Any) -> bytes:
        """Bytes that identify ``item`` for the cache."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What produced the vectors: kind, model, weights hash, dim, normalize, and how to load it."""

    # -- shared -------------------------------------------------------------------------------------
    def encode(
        self,
        inputs: Any,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``inputs``.

        Parameters
        ----------
        inputs : a list (or pandas Series) of inputs of this encoder's modality.
        batch_size : items per model call; the encoder's default when None.
        show_progress : a progress bar on stderr (off by default; the CLI turns it on).

        Returns
        -------
        ndarray of shape (n, dim), float32, C-contiguous; rows have unit L2 norm unless the encoder was
        made with ``normalize=False``.
        """
        items = self.validate(inputs)
        batch_size = batch_size or self.batch_size
        cache = self._get_cache()
        if cache is None:
            out = self._encode(items, batch_size, show_progress)
        else:
            keys = [cache.key(self._cache_bytes(x)) for x in items]
            found = cache.get_many(keys)
            missing = [i for i, k in enumerate(keys) if k not in found]
            out = np.empty((len(items), self.dim), dtype=np.float32)
            if missing:
                new = np.asarray(self._encode([items[i] for i in missing], batch_size, show_progress), np.float32)
                cache.put_many([keys[i] for i in missing], new)
                out[missing] = new
            for i, k in enumerate(keys):
                if k in found:
                    out[i] = found[k]
        out = np.asarray(out, dtype=np.float32)
        return l2_normalize(out) if self.normalize else np.ascontiguousarray(out)

    @property
    def supports_text(self) -> bool:
        """Whether :meth:`encode_text` puts text in this encoder's space (text encoders, CLIP, ConSE)."""
        return self.modality == "text"

    def encode_text(self, texts: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed text into the same space as :meth:`encode` (label prompts, text queries).

        Text encoders embed text with :meth:`encode`; image encoders with a text tower (CLIP) or a text
        model beside them (ConSE) override this. Others cannot compare text with their inputs.
        """
        if self.modality == "text":
            return self.encode(texts, batch_size=batch_size, show_progress=show_progress)
        raise InputError(
            f"{type(self).__name__} embeds {self.modality} only and cannot compare text with it; use "
            "ClipEncoder (text and images in one space) or ConSEEncoder (label text for an ImageNet backbone)"
        )

    def encode_queries(self, queries: list[Any]) -> np.ndarray:
        """Embed search queries; image encoders with a text side also take text queries (see subclasses)."""
        return self.encode(queries)

    def _get_cache(self) -> EmbeddingCache | None:
        if self.cache_dir is None:
            return None
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir, self.identity, self.dim)
        return self._cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe_source()!r})"

    def describe_source(self) -> str:
        return type(self).__name__
