"""Static text embeddings (model2vec): one stored vector per token, averaged. No network runs at inference.

A static model is distilled from a sentence-transformers model (Tulkens and van Dongen, "Model2Vec: fast
state-of-the-art static embeddings", 2024): every token of the vocabulary goes through the transformer
once, the vectors are reduced by PCA and weighted by a Zipf-based estimate of token frequency (SIF). The
default here is the bundled all-MiniLM-L6-v2 distilled on this machine (a few seconds to a minute, once)
and cached under ``$FEWSHOT_HOME/static``; a local model2vec folder (``StaticModel.save_pretrained``) loads
as it is. Running one needs only ``model2vec``, ``tokenizers`` and numpy; distilling also needs torch,
transformers and ``skeletoken`` (``pip install 'fewshot[fast]'`` and ``pip install --no-deps
'skeletoken>=0.6,<0.7'``; see the README).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import as_text_list
from fewshot.encoders.base import Encoder, shared_model
from fewshot.encoders.derived import UseMark, cached_build, fewshot_home, write_manifest
from fewshot.errors import InputError, MissingDependencyError, ModelLoadError, warn_user

DISTILL_VERSION = 1  # part of every distilled folder's name: a change of recipe makes new folders
DISTILLED = "distilled:"


def _static_model_class() -> Any:
    try:
        from model2vec import StaticModel
    except ImportError as exc:
        raise MissingDependencyError("StaticEncoder needs model2vec: pip install 'fewshot[fast]'") from exc
    return StaticModel


def static_weights_sha256(model: Any) -> str:
    """SHA-256 over a static model's vectors, token weights, token mapping and tokenizer."""
    h = hashlib.sha256()
    for name in ("embedding", "weights", "token_mapping"):
        value = getattr(model, name, None)
        h.update(name.encode("ascii"))
        if value is not None:
            arr = np.ascontiguousarray(value)
            h.update(f"{arr.dtype.str}{arr.shape}".encode("ascii"))
            h.update(arr.tobytes())
    h.update(model.tokenizer.to_str().encode("utf-8"))
    return h.hexdigest()


def distilled_folder(source_sha: str, pca_dims: int | None) -> Path:
    """The cache folder of the static model distilled from the weights with hash ``source_sha``."""
    variant = f"pca{pca_dims}" if pca_dims else "nopca"
    return fewshot_home() / "static" / f"{source_sha}-{variant}-v{DISTILL_VERSION}"


class StaticEncoder(Encoder):
    """Static (model2vec) text embeddings: a table lookup and a mean, orders of magnitude faster than a
    transformer, and a few points less accurate.

    Parameters
    ----------
    model : None to distil ``distill_from`` (cached); a local model2vec folder; or a loaded
        ``model2vec.StaticModel``.
    distill_from : the sentence-transformers model to distil when ``model`` is None: None for the bundled
        all-MiniLM-L6-v2, or anything :class:`fewshot.TextEncoder` takes as ``model``.
    pca_dims : dimensions the distilled vectors are reduced to by PCA (None keeps the model's).
    normalize, batch_size, cache_dir : as for :class:`fewshot.TextEncoder`.

    A text none of whose tokens the static model knows (only out-of-vocabulary pieces, such as emoji or one
    3,000-letter "word") gets the zero vector, with a warning: a similarity of 0 to everything (zero rows stay
    zero when normalised), so the prototype head gives every class the same probability (the lexical
    channel, which finds no words in it either, is left out for it), other heads what they learned of the
    classes alone, and a cosine abstention threshold abstains. An index refuses to store it or search by it,
    naming the item. That is kept rather than the unknown token's vector, which gave such texts a confident
    arbitrary class. The service answers each request with the warning about its own texts.

    The identity records ``family="model2vec"``, ``backend="static"``, the hash of the static vectors and,
    for a distilled model, the model and weights hash it was distilled from, so vectors from a static model
    are never mixed with a transformer's.
    """

    modality = "text"
    _loaded_attrs = ("_model", "_sha", "_in_use")

    def __init__(
        self,
        model: Any = None,
        *,
        distill_from: Any = None,
        pca_dims: int | None = 256,
        normalize: bool = True,
        batch_size: int = 1024,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(normalize=normalize, batch_size=batch_size, cache_dir=cache_dir)
        if pca_dims is not None and (isinstance(pca_dims, bool) or not isinstance(pca_dims, int) or pca_dims < 2):
            raise InputError(f"pca_dims must be an integer of at least 2 or None, got {pca_dims!r}")
        self.pca_dims = pca_dims
        self.distill_from = None
        self._model = None
        self._sha: str | None = None
        self._source_sha: str | None = None
        self._in_use: UseMark | None = None
        if model is None:
            from fewshot.encoders.text import TextEncoder

            if isinstance(distill_from, TextEncoder):
                self._teacher = distill_from
            elif distill_from is None or isinstance(distill_from, (str, Path)):
                self._teacher = TextEncoder(distill_from)
            else:
                raise TypeError(
                    f"distill_from must be None, a model name or folder, or a TextEncoder, not {type(distill_from)}"
                )
            self.distill_from = self._teacher.source
            self.source = DISTILLED + self._teacher.source
        elif isinstance(model, (str, Path)):
            if distill_from is not None:
                raise InputError("give a model2vec folder as model, or distill_from to distil one, not both")
            p = Path(model).expanduser()
            if not p.is_dir():
                from fewshot.encoders.derived import CACHE_NAME

                if CACHE_NAME.fullmatch(p.name) and p.parent.name == "static":
                    raise ModelLoadError(
                        f"{model}: this folder of fewshot's model cache is gone (removed by 'fewshot cache prune'); "
                        "the cache is no place to keep a model by path: use StaticEncoder() (--encoder static), "
                        "which builds it again when needed, or copy a model2vec folder elsewhere. A model saved "
                        "with it loads with FewShotClassifier.load(path, encoder=StaticEncoder()) if the distilled "
                        "model is the same"
                    )
                raise ModelLoadError(f"{model}: no such model2vec folder (one with config.json and model.safetensors)")
            self.source = str(p.resolve())
            self._teacher = None
        else:
            if not hasattr(model, "embedding") or not hasattr(model, "tokenizer"):
                raise TypeError(f"model must be None, a model2vec folder or a model2vec StaticModel, not {type(model)}")
            self._model = model
            self.source = "custom"
            self._teacher = None

    # -- loading ------------------------------------------------------------------------------------
    def _reloadable(self) -> bool:
        return self.source not in ("custom", DISTILLED + "custom") and (
            self._teacher is None or self._teacher._reloadable()
        )

    @property
    def model(self) -> Any:
        """The ``model2vec.StaticModel`` (distilled or loaded on first access, once per process)."""
        if self._model is None:
            static_model = _static_model_class()
            folder = self._folder()
            self._model = shared_model(("model2vec", str(folder)), lambda: static_model.from_pretrained(str(folder)))
            # a distilled model lives in the cache: a process that keeps using it keeps it from being pruned
            self._in_use = UseMark(folder) if self._teacher is not None else None
        return self._model

    def _folder(self) -> Path:
        """The folder the static model loads from: the given one, or the distilled one (distilled first)."""
        if self._teacher is None:
            return Path(self.source)
        source_sha = self._teacher._weights_sha()
        self._source_sha = source_sha
        folder = distilled_folder(source_sha, self.pca_dims)
        teacher, pca_dims = self._teacher, self.pca_dims

        def build(tmp: Path) -> None:
            distil(teacher, tmp, pca_dims)
            write_manifest(
                tmp,
                {
                    "format": "fewshot-static",
                    "distill_version": DISTILL_VERSION,
                    "distilled_from": {"model": teacher.source, "weights_sha256": source_sha},
                    "pca_dims": pca_dims,
                },
                sorted(p.name for p in tmp.iterdir() if p.is_file()),
            )

        cached_build(folder, build)
        return folder

    @property
    def dim(self) -> int:
        return int(self.model.embedding.shape[1])

    @property
    def identity(self) -> dict[str, Any]:
        model = self.model
        if self._sha is None:
            self._sha = static_weights_sha256(model)
        identity: dict[str, Any] = {
            "family": "model2vec",
            "model": self.source,
            "weights_sha256": self._sha,
            "dim": self.dim,
            "normalize": self.normalize,
            "backend": "static",
        }
        if self._teacher is not None:
            identity["distilled_from"] = {"model": self._teacher.source, "weights_sha256": self._source_sha}
            identity["pca_dims"] = self.pca_dims
        return identity

    @classmethod
    def from_identity(cls, identity: dict[str, Any]) -> StaticEncoder:
        """The encoder an identity describes (the weights are checked by the caller)."""
        normalize = bool(identity.get("normalize", True))
        distilled = identity.get("distilled_from")
        if isinstance(distilled, dict):
            return cls(distill_from=distilled.get("model"), pca_dims=identity.get("pca_dims"), normalize=normalize)
        return cls(identity.get("model"), normalize=normalize)

    def describe_source(self) -> str:
        return self.source

    # -- the encoder interface ----------------------------------------------------------------------
    def vocabulary(self) -> dict[str, int] | None:
        tokenizer = getattr(self.model, "tokenizer", None)
        return tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None

    def validate(self, inputs: Any) -> list[str]:
        return as_text_list(inputs, what="texts")

    def _cache_bytes(self, item: str) -> bytes:
        return item.encode("utf-8")

    def _encode(self, items: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        model = self.model
        if self._in_use is not None:
            self._in_use()
        out = np.asarray(
            model.encode(items, batch_size=batch_size, show_progress_bar=show_progress, use_multiprocessing=False),
            dtype=np.float32,
        )
        message = self.unreadable(items, out)
        if message is not None:
            warn_user(message)
        return out

    @staticmethod
    def unreadable(items: list[str], vectors: np.ndarray) -> str | None:
        """The warning for ``items`` whose ``vectors`` are zero (no token the model knows), or None. The service
        asks it of each request's own rows, since one model call serves several requests."""
        empty = ~np.any(vectors, axis=1)
        if not empty.any():
            return None
        return (
            f"{int(empty.sum())} of {len(items)} texts have no token the static model knows (e.g. "
            f"{items[int(np.argmax(empty))][:40]!r}): they get the zero vector, similar to nothing, so their "
            "predictions say nothing of the text and a cosine abstention threshold abstains on them"
        )


def distil(teacher: Any, folder: Path, pca_dims: int | None) -> None:
    """Distil the sentence-transformers model of the :class:`~fewshot.TextEncoder` ``teacher`` into a model2vec
    folder (its weights are read, never changed)."""
    _static_model_class()
    try:
        from model2vec.distill import distill_from_model
    except ImportError as exc:
        raise MissingDependencyError(
            "distilling a static model needs model2vec's distillation, torch and skeletoken: "
            "pip install 'fewshot[fast]' && pip install --no-deps 'skeletoken>=0.6,<0.7'"
        ) from exc
    import logging

    st = teacher.model
    transformer = getattr(st[0], "auto_model", None)
    if transformer is None or getattr(st, "tokenizer", None) is None:
        raise ModelLoadError(f"cannot distil {teacher.source}: it is not a transformer with a tokenizer")
    quiet = logging.getLogger("model2vec")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        static = distill_from_model(model=transformer, tokenizer=st.tokenizer, pca_dims=pca_dims, device="cpu")
    except Exception as exc:
        raise ModelLoadError(f"distilling {teacher.source} failed ({type(exc).__name__}: {exc})") from exc
    finally:
        quiet.setLevel(level)
    static.save_pretrained(str(folder))
