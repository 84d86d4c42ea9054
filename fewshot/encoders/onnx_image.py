"""A torchvision image backbone on ONNX Runtime: the same features and class scores, a faster forward pass.

The network is exported once (both outputs: the pooled features that feed the final linear layer, and the
final layer's class scores), checked against torch on probe images (a cosine of at least 0.9999 for the
features, else the export is refused), and cached under ``$FEWSHOT_HOME/onnx`` keyed by the weights hash.
Decoding and preprocessing stay those of :class:`~fewshot.encoders.ImageEncoder` (torchvision transforms),
so an ONNX image encoder is interchangeable with the torch one it was exported from (the same fp32 rule as
for text: :func:`fewshot.encoders.identity.same_encoder`). Measured with the bundled MobileNetV2 on two cores
(``python -m eval.bench_encoders --part images``): see eval/results/bench_encoders.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.backbone import BUNDLED_IMAGE, ImageEncoder, _last_linear, bundled_mobilenet_file
from fewshot.encoders.base import shared_model, weights_sha256
from fewshot.encoders.derived import UseMark, cached_build, fewshot_home, write_manifest
from fewshot.encoders.onnx import OPSET, default_threads, make_session, onnxruntime_module
from fewshot.errors import InputError, ModelLoadError

IMAGE_EXPORT_VERSION = 1
FEATURES_MIN_COSINE = 0.9999


def image_export_folder(weights_sha: str, image_size: int) -> Path:
    """The cached export of the weights ``weights_sha`` at ``image_size``: the graph is traced at one size (a
    backbone with a fixed-size adaptive pooling exports at a fixed size only), so each size has its own."""
    return fewshot_home() / "onnx" / f"{weights_sha}-image{int(image_size)}-v{IMAGE_EXPORT_VERSION}"


class OnnxImageEncoder(ImageEncoder):
    """:class:`~fewshot.encoders.ImageEncoder` with its forward pass on ONNX Runtime (CPU).

    Parameters
    ----------
    model, weights, image_size, normalize, batch_size, cache_dir : as for
        :class:`~fewshot.encoders.ImageEncoder` (None is the bundled MobileNetV2).
    threads : intra-op threads of the session; None takes ``$FEWSHOT_ONNX_THREADS``, else the cores this
        process may use (at most 8).

    The torch model is loaded only to export it (once; then never while the export is cached and the weights
    file is unchanged).
    """

    _loaded_attrs = ("_model", "_sha", "_last", "_session", "_in_use")

    def __init__(
        self,
        model: Any = None,
        *,
        weights: str | Path | None = None,
        image_size: int = 224,
        normalize: bool = True,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(
            model,
            weights=weights,
            image_size=image_size,
            normalize=normalize,
            batch_size=batch_size,
            cache_dir=cache_dir,
        )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self._session: Any = None
        self._in_use: UseMark | None = None
        self._manifest: dict[str, Any] | None = None

    # -- the export ---------------------------------------------------------------------------------
    def _weights_file(self) -> Path | None:
        if self.source == BUNDLED_IMAGE:
            return bundled_mobilenet_file()
        if self.weights is not None and Path(self.weights).is_file():
            return Path(self.weights)
        return None

    def _weights_sha(self) -> str:
        if self._sha is None:
            from fewshot.encoders.derived import known_weights_sha, remember_weights_sha

            file = self._weights_file() if self._model is None else None
            sha = known_weights_sha(file) if file is not None else None
            if sha is None:
                sha = weights_sha256(self.model)
                if file is not None:
                    remember_weights_sha(file, sha)
            self._sha = sha
        return self._sha

    @property
    def session(self) -> Any:
        """The onnxruntime session (the export is made first if it is not cached)."""
        if self._session is None:
            onnxruntime_module()
            sha = self._weights_sha()
            folder = image_export_folder(sha, self.image_size)
            manifest = cached_build(folder, lambda tmp: self._export(tmp, sha))
            threads = self.threads or default_threads()
            self._manifest = manifest
            self._session = shared_model(
                ("onnx-image", str(folder), manifest["files"]["model.onnx"]["sha256"], threads),
                lambda: make_session(folder / "model.onnx", threads),
            )
            self._in_use = UseMark(folder)
        return self._session

    def _export(self, folder: Path, sha: str) -> None:
        import torch

        ort = onnxruntime_module()
        net, head = self.model, _last_linear(self.model)

        class Both(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, pixels: Any) -> Any:
                seen: dict[str, Any] = {}
                hook = head.register_forward_hook(lambda m, inp, out: seen.__setitem__("x", inp[0]))
                try:
                    logits = self.net(pixels)
                finally:
                    hook.remove()
                return seen["x"].reshape(pixels.shape[0], -1), logits

        rng = np.random.default_rng(0)
        probe = torch.from_numpy(rng.standard_normal((4, 3, self.image_size, self.image_size)).astype(np.float32))
        with torch.inference_mode():
            ref_features, ref_logits = Both().eval()(probe)
        path = folder / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    Both().eval(),
                    (probe,),
                    str(path),
                    dynamo=False,
                    input_names=["pixels"],
                    output_names=["features", "logits"],
                    dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=OPSET,
                    do_constant_folding=True,
                )
            except Exception as exc:
                raise ModelLoadError(f"cannot export the image model to ONNX ({type(exc).__name__}: {exc})") from exc
        session = make_session(path, threads=1)
        features, logits = session.run(None, {"pixels": probe.numpy()})
        ref = ref_features.numpy()
        cos = (features * ref).sum(1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(ref, axis=1))
        if cos.min() < FEATURES_MIN_COSINE:
            raise ModelLoadError(
                f"the ONNX export does not reproduce the image model (cosine {cos.min():.6f} on a probe); use "
                "ImageEncoder (torch) for this model"
            )
        write_manifest(
            folder,
            {
                "format": "fewshot-onnx-image",
                "export_version": IMAGE_EXPORT_VERSION,
                "weights_sha256": sha,
                "dim": int(ref.shape[1]),
                "outputs": int(ref_logits.shape[1]),
                "opset": OPSET,
                "probe_min_cosine_to_torch": round(float(cos.min()), 7),
                "probe_max_abs_logit_error": float(np.abs(logits - ref_logits.numpy()).max()),
                "onnxruntime": ort.__version__,
            },
            ["model.onnx"],
        )

    # -- the encoder interface ----------------------------------------------------------------------
    def _reloadable(self) -> bool:
        return self.source != "custom"

    @property
    def dim(self) -> int:
        self.session  # noqa: B018  (loads the manifest)
        return int(self._manifest["dim"])

    @property
    def categories(self) -> list[str] | None:
        self.session  # noqa: B018
        if int(self._manifest["outputs"]) != 1000:
            return None
        import torchvision

        return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "family": "torchvision",
            "model": self.source,
            "weights": self.weights,
            "weights_sha256": self._weights_sha(),
            "dim": self.dim,
            "normalize": self.normalize,
            "image_size": self.image_size,
            "preprocess": f"resize{round(self.image_size * 256 / 224)}-crop{self.image_size}-imagenet-norm",
            "backend": "onnx",
        }

    def describe_source(self) -> str:
        return f"{self.source} on onnx"

    def _forward(self, items: list[Any], batch_size: int | None, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        session = self.session
        if self._in_use is not None:
            self._in_use()
        feats = np.empty((len(items), self.dim), dtype=np.float32)
        logits = np.empty((len(items), int(self._manifest["outputs"])), dtype=np.float32)
        for start, batch in self._batches(items, batch_size or self.batch_size, show_progress, self.transform()):
            f, z = session.run(None, {"pixels": batch.numpy()})
            feats[start : start + len(batch)] = f
            logits[start : start + len(batch)] = z
        return feats, logits
