"""Encoder identities: what produced a set of vectors, recorded by every save and checked by every load.

An identity is a JSON dict: ``family`` (sentence-transformers, torchvision, open_clip, conse, ...),
``model`` (where it came from), ``weights_sha256`` (a hash of the loaded weights), ``dim``, ``normalize``,
and for image pipelines ``preprocess``; family-specific fields say how to load it again. Two identities
are interchangeable when the fields in :data:`IDENTITY_KEYS` agree.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fewshot.errors import EncoderMismatchError

# keys of an identity that decide whether two encoders produce the same vectors (``preprocess`` is absent
# for text encoders, so it only tells image pipelines apart; ``backend`` and ``quantization`` are absent
# for torch fp32 models)
IDENTITY_KEYS = ("family", "weights_sha256", "dim", "normalize", "preprocess", "backend", "quantization")


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities produce interchangeable embeddings."""
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


def describe(identity: dict[str, Any]) -> str:
    """A one-line description of an identity for error messages."""
    sha = str(identity.get("weights_sha256", ""))[:12]
    extra = "".join(f", {k} {identity[k]}" for k in ("backend", "quantization") if identity.get(k))
    return f"{identity.get('family')} '{identity.get('model')}' (dim {identity.get('dim')}, weights {sha}{extra})"


def identity_fingerprint(identity: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict such as an encoder identity (names cache files)."""
    blob = json.dumps(identity, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def check_same_encoder(saved: dict[str, Any], encoder: Any, what: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` is the one ``saved`` describes."""
    current = encoder.identity
    if not same_encoder(saved, current):
        raise EncoderMismatchError(
            f"{what} was built with {describe(saved)}, but the encoder given is {describe(current)}; "
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
        return TextEncoder(identity.get("model"), normalize=normalize)
    if family == "torchvision" and identity.get("model") != "custom":
        model = identity.get("model")
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
