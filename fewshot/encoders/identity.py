"""Encoder identities: what produced a set of vectors, recorded by every save and checked by every load.

An identity is a JSON dict: ``family`` (sentence-transformers, torchvision, open_clip, conse, ...),
``model`` (where it came from), ``weights_sha256`` (a hash of the loaded weights), ``dim``, ``normalize``,
and for image pipelines ``preprocess``; family-specific fields say how to load it again. Text encoders that
do not run on torch in fp32 also record ``backend`` (``"onnx"``, ``"static"``) and ``quantization``
(``"int8"``, with the version of its recipe in ``quantization_recipe``). Two identities are
interchangeable when the fields in :data:`IDENTITY_KEYS` agree, with one rule for the numerics
(:func:`numerics`): torch fp32 and ONNX fp32 runs of the same weights count as the same encoder, because
every ONNX fp32 export is checked against torch when it is made (cosine at least 0.999 on probe sentences,
else it is refused) and the tests check it on real texts; anything quantised or static matches only the
same backend, quantisation and recipe, so int8 or static vectors are never mixed with fp32, nor int8
vectors of two recipes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fewshot.errors import EncoderMismatchError

# keys of an identity that decide whether two encoders produce the same vectors (``preprocess`` is absent
# for text encoders, so it only tells image pipelines apart; ``backend``, ``quantization`` and
# ``quantization_recipe`` are absent for torch fp32 models)
IDENTITY_KEYS = (
    "family",
    "weights_sha256",
    "dim",
    "normalize",
    "preprocess",
    "backend",
    "quantization",
    "quantization_recipe",
)


# backends whose fp32 vectors are interchangeable (an ONNX fp32 export is verified against torch when made)
FP32_EQUIVALENT_BACKENDS = (None, "torch", "onnx")


def numerics(identity: dict[str, Any]) -> str:
    """How an identity's vectors are computed, as far as interchangeability goes: ``"fp32"`` for torch or ONNX
    fp32, else ``"<backend>/<quantization>"`` (``"onnx/int8"``, ``"static/none"``)."""
    backend, quantization = identity.get("backend"), identity.get("quantization")
    if quantization is None and backend in FP32_EQUIVALENT_BACKENDS:
        return "fp32"
    return f"{backend or 'torch'}/{quantization or 'none'}"


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities produce interchangeable embeddings.

    The fields of :data:`IDENTITY_KEYS` must agree, except that ``backend`` and ``quantization`` are compared
    through :func:`numerics`: torch fp32 and ONNX fp32 of the same weights match; int8 matches only int8 and
    static only static.
    """
    if numerics(a) != numerics(b):
        return False
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS if k not in ("backend", "quantization"))


def describe(identity: dict[str, Any]) -> str:
    """A one-line description of an identity for error messages."""
    sha = str(identity.get("weights_sha256", ""))[:12]
    extra = "".join(f", {k} {identity[k]}" for k in ("backend", "quantization") if identity.get(k))
    if identity.get("quantization"):
        extra += f" (recipe {identity.get('quantization_recipe', 1)})"
    return f"{identity.get('family')} '{identity.get('model')}' (dim {identity.get('dim')}, weights {sha}{extra})"


def identity_fingerprint(identity: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict such as an encoder identity (names cache files)."""
    blob = json.dumps(identity, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def check_same_encoder(saved: dict[str, Any], encoder: Any, what: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` is the one ``saved`` describes."""
    current = encoder.identity
    if not same_encoder(saved, current):
        hint = ""
        if numerics(saved) != numerics(current) and all(
            saved.get(k) == current.get(k) for k in ("family", "weights_sha256")
        ):
            hint = (
                f" (same weights, but {numerics(saved)} vectors and {numerics(current)} ones differ: quantised "
                "vectors are never mixed with others)"
            )
        elif saved.get("quantization_recipe") != current.get("quantization_recipe") and all(
            saved.get(k) == current.get(k) for k in ("family", "weights_sha256")
        ):
            hint = " (same weights, but another int8 recipe: its vectors differ slightly and are not mixed)"
        elif describe(saved) == describe(current):  # the difference is in a setting the description leaves out
            keys = [k for k in IDENTITY_KEYS if k not in ("backend", "quantization") and saved.get(k) != current.get(k)]
            hint = " (they differ in " + ", ".join(f"{k}: {saved.get(k)!r} against {current.get(k)!r}" for k in keys)
            hint += ")"
        raise EncoderMismatchError(
            f"{what} was built with {describe(saved)}, but the encoder given is {describe(current)}{hint}; "
            "embeddings from different encoders are not comparable: use the original encoder or rebuild"
        )


def encoder_from_identity(identity: dict[str, Any]) -> Any:
    """Recreate the encoder a save was built with, from the identity recorded in its manifest.

    Only the settings are read here; the weights load on first use and are then checked against the
    recorded hash by the caller (:func:`check_same_encoder`).
    """
    from fewshot.encoders.backbone import BUNDLED_IMAGE, ImageEncoder
    from fewshot.encoders.clip import ClipEncoder
    from fewshot.encoders.conse import ConSEEncoder
    from fewshot.encoders.text import TextEncoder

    family = identity.get("family")
    normalize = bool(identity.get("normalize", True))
    if family == "sentence-transformers":
        return TextEncoder(
            identity.get("model"),
            normalize=normalize,
            backend=identity.get("backend") or "torch",
            quantize=identity.get("quantization"),
        )
    if family == "model2vec":
        from fewshot.encoders.static import StaticEncoder

        return StaticEncoder.from_identity(identity)
    if family == "torchvision" and identity.get("model") != "custom":
        model = identity.get("model")
        if identity.get("backend") == "onnx":
            from fewshot.encoders.onnx_image import OnnxImageEncoder

            return OnnxImageEncoder(
                None if model == BUNDLED_IMAGE else model,
                weights=identity.get("weights"),
                image_size=int(identity.get("image_size", 224)),
                normalize=normalize,
            )
        return ImageEncoder(
            None if model == BUNDLED_IMAGE else model,
            weights=identity.get("weights"),
            image_size=int(identity.get("image_size", 224)),
            normalize=normalize,
        )
    if family == "open_clip":
        return ClipEncoder(identity.get("model"), identity.get("pretrained"), normalize=normalize)
    if family == "conse":
        image, text = encoder_from_identity(identity["image"]), encoder_from_identity(identity["text"])
        return ConSEEncoder(
            image,
            text,
            space=identity.get("space", "classes"),
            top_t=identity.get("top_t"),
            tau=float(identity.get("tau", 0.02)),
            templates=identity.get("templates"),
            center=bool(identity.get("center", False)),
            normalize=normalize,
        )
    raise EncoderMismatchError(
        f"cannot recreate an encoder of family {family!r} from a save; pass encoder=... when loading"
    )
