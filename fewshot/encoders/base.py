"""The encoder interface: inputs in, one C-contiguous float32 array of shape (n, dim) out.

Encoders load their model on first use, from one process-wide store (:func:`shared_model`), so every
``TextEncoder()`` of a process shares one loaded MiniLM. They cross process boundaries (pickle, joblib,
Ray) without their weights where the weights can be loaded again from where they came from, and
``copy.deepcopy`` (hence ``sklearn.clone``) shares the loaded model instead of copying it.
"""

from __future__ import annotations

import copy
import numbers
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.embedding_cache import EmbeddingCache
from fewshot.errors import InputError
from fewshot.maths import l2_normalize

_SHARED: dict[tuple, Any] = {}
_SHARED_LOCKS: dict[tuple, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()
_SHA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_model(key: tuple, load: Callable[[], Any]) -> Any:
    """The model stored under ``key``, loaded by ``load()`` the first time any thread asks for it.

    Frozen models are read-only, so one copy serves every encoder (and thread) of the process; tuning
    works on its own deep copy.
    """
    with _REGISTRY_LOCK:
        if key in _SHARED:
            return _SHARED[key]
        lock = _SHARED_LOCKS.setdefault(key, threading.Lock())
    with lock:  # one loader per key; other keys load in parallel
        if key not in _SHARED:
            model = load()
            with _REGISTRY_LOCK:
                _SHARED[key] = model
        return _SHARED[key]


def weights_sha256(module: Any) -> str:
    """SHA-256 over a torch module's parameters and buffers, in name order (computed once per module).

    Hashing the loaded tensors rather than a file covers every file format and also tells a tuned model
    from the one it started from.
    """
    import hashlib

    try:
        return _SHA[module]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    sha = h.hexdigest()
    try:
        _SHA[module] = sha
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced
        pass
    return sha


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"batch_size must be a positive integer, got {value!r}")
    return int(value)


class Encoder(ABC):
    """Base class of every encoder.

    Subclasses implement :meth:`validate` (check and convert the inputs), :meth:`_encode` (the model call,
    returning raw float vectors), :meth:`_cache_bytes` (the bytes that identify one input), ``dim`` and
    ``identity``. The base class adds batching, the optional on-disk cache and L2 normalisation, so every
    encoder returns the same kind of array.

    Subclasses list the attributes that hold loaded weights in ``_loaded_attrs``; :meth:`_reloadable` says
    whether they can be loaded again from the encoder's settings, in which case pickles leave them out.
    """

    modality: str = "text"
    # whether the model reads each word in its context (a transformer), so that words around an input change
    # how the input itself is read; a bag of word vectors (a static model) would only add the same words
    contextual: bool = False
    _loaded_attrs: tuple[str, ...] = ("_model",)

    def __init__(self, *, normalize: bool = True, batch_size: int = 64, cache_dir: str | Path | None = None):
        if not isinstance(normalize, bool):
            raise InputError(f"normalize must be True or False, got {normalize!r}")
        batch_size = _batch_size(batch_size)
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
        """What produced the vectors: family, model, weights hash, dim, normalize, and how to load it."""

    def _reloadable(self) -> bool:
        """Whether the loaded weights can be loaded again from this encoder's settings alone."""
        return True

    # -- shared -------------------------------------------------------------------------------------
    def encode(self, inputs: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
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
        batch_size = self.batch_size if batch_size is None else _batch_size(batch_size)
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

    def vocabulary(self) -> dict[str, int] | None:
        """The tokenizer's vocabulary (token -> id) of a text encoder that has one, else None."""
        return None

    def _get_cache(self) -> EmbeddingCache | None:
        if self.cache_dir is None:
            return None
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir, self.identity, self.dim)
        return self._cache

    # -- copies and pickles -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # an open SQLite file: reopened on first use
        if self._reloadable():
            for name in self._loaded_attrs:
                if name in state:
                    state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __deepcopy__(self, memo: dict[int, Any]) -> Encoder:
        """A copy that shares the loaded (read-only) model: cloning an estimator never copies weights."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k in self._loaded_attrs or k == "_cache":
                new.__dict__[k] = v if k != "_cache" else None
            else:
                new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe_source()!r})"

    def describe_source(self) -> str:
        return type(self).__name__


class ImageEncoderBase(Encoder):
    """What every image encoder shares: input checks, decoding in batches and content-hash caching."""

    modality = "image"

    def validate(self, inputs: Any) -> list[Any]:
        from fewshot.encoders.image_inputs import as_image_list

        return as_image_list(inputs)

    def _cache_bytes(self, item: Any) -> bytes:
        from fewshot.encoders.image_inputs import image_cache_bytes

        return image_cache_bytes(item)

    def _batches(self, items: list[Any], batch_size: int, show_progress: bool, transform: Any):
        """Yield (start, tensor of shape (b, 3, H, W)) over ``items``, decoding each batch as it is needed."""
        import torch
        from tqdm.auto import tqdm

        from fewshot.encoders.image_inputs import to_rgb

        bar = tqdm(total=len(items), desc="encoding images", unit="img", disable=not show_progress)
        try:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                tensors = [transform(to_rgb(x, f"images[{start + i}]")) for i, x in enumerate(chunk)]
                yield start, torch.stack(tensors)
                bar.update(len(chunk))
        finally:
            bar.close()
